"""Who is asking: the `Actor` of an operation, and the permission rules every operation checks.

The CLI runs as root on the gateway: its actor is an admin. The HTTP API builds the actor from a session (a user,
admin or not) or an API token (its owner's role, narrowed by the token's scopes). Rules live here, in the service
layer, so the CLI, the API and the web pages cannot differ: a user sees and changes only the peers they own, and
another user's peer is "not found", never "forbidden" (its existence is not revealed).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bulwark_vpn.errors import AuthError, ErrorCode, NotFoundError

ADMIN = "admin"
USER = "user"


@dataclass(frozen=True)
class Actor:
    kind: str  # cli | user (a browser session) | token | supervisor
    name: str  # the user name (for a token: its owner), or the CLI's user
    role: str = ADMIN
    scopes: frozenset[str] = field(default_factory=lambda: frozenset({"read", "peers:write", "admin", "metrics"}))
    via: str = "cli"  # cli | api
    address: str | None = None
    token_name: str | None = None

    @property
    def label(self) -> str:
        """How the audit log names it."""
        if self.kind == "token":
            return f"token:{self.token_name} ({self.name})"
        return f"{self.kind}:{self.name}"

    @property
    def is_admin(self) -> bool:
        """May administer (users, settings, audit): an admin, through a session or a token with the admin scope."""
        return self.role == ADMIN and "admin" in self.scopes

    @property
    def sees_all(self) -> bool:
        """Sees and (with peers:write) changes every peer, not only their own: any admin, whatever the token's
        scopes (a read-only admin token reads everything)."""
        return self.role == ADMIN

    def can(self, scope: str) -> bool:
        """True when the actor's scopes allow `scope` (admin allows everything)."""
        return "admin" in self.scopes or scope in self.scopes or (scope == "read" and "peers:write" in self.scopes)

    def require(self, scope: str) -> None:
        if not self.can(scope):
            raise AuthError("this token is not allowed to do that", scope,
                            f"create a token with the '{scope}' scope", code=ErrorCode.FORBIDDEN)

    def require_admin(self) -> None:
        if not self.is_admin:
            raise AuthError("only an admin may do that", None, "ask an admin", code=ErrorCode.FORBIDDEN)

    def owner_filter(self) -> str | None:
        """The owner a listing is limited to: None for admins (everything), the user's name otherwise."""
        return None if self.sees_all else self.name

    def check_owns(self, peer_name: str, owner: str | None) -> None:
        """Another user's peer does not exist for this actor."""
        if not self.sees_all and owner != self.name:
            # Word for word what a missing peer gives (store.peer): nothing tells the two apart.
            raise NotFoundError(f"no peer named '{peer_name}': see 'bulwark peer list'")


ROOT = Actor("cli", "root")


def cli_actor(environ: dict[str, str] | None = None) -> Actor:
    """The CLI's actor, named after the login that ran it (sudo's user when there is one)."""
    env = environ or {}
    who = env.get("SUDO_USER") or env.get("USER") or "root"
    safe = "".join(c for c in who if c.isalnum() or c in "_.-")[:32] or "root"
    return Actor("cli", safe)
