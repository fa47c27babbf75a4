"""The SQLite side of the control plane: users, recovery codes, setup links, sessions, API tokens, login failures,
share links, the audit log and traffic history (schema 3). Mixed into `SQLiteStore`; every query is constant SQL
with parameters. Secrets arrive here already hashed (see `service.secrets`)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

from bulwark_vpn.errors import ConflictError, NotFoundError
from bulwark_vpn.store.records import AuditRecord, SessionRecord, ShareRecord, TokenRecord, UserRecord

_USER_COLUMNS = ("name, role, password_hash, totp_secret, totp_enabled, totp_last_step, peer_limit, require_2fa, "
                 "created_at, password_changed_at")
_TOKEN_COLUMNS = ("id, name, owner, scopes, prefix, created_at, expires_at, last_used_at, last_used_from, "  # noqa: S105
                  "revoked_at")
_SHARE_COLUMNS = "id, peer, created_by, created_at, expires_at, used_at, revoked_at"
_AUDIT_COLUMNS = "id, at, actor, via, address, operation, target, result, detail"


def _user(row: tuple) -> UserRecord:
    (name, role, password_hash, totp_secret, totp_enabled, totp_last_step, peer_limit, require_2fa, created,
     changed) = row
    return UserRecord(name, role, password_hash, totp_secret, bool(totp_enabled), int(totp_last_step), peer_limit,
                      bool(require_2fa), float(created), changed)


def _token(row: tuple) -> TokenRecord:
    token_id, name, owner, scopes, prefix, created, expires, used, used_from, revoked = row
    return TokenRecord(token_id, name, owner, tuple(s for s in scopes.split(",") if s), prefix, created, expires,
                       used, used_from, revoked)


class ControlPlane:
    """Methods of SQLiteStore for the control plane (it provides `_conn`, `transaction` and `_bump`)."""

    _conn: sqlite3.Connection
    path: Path
    transaction: Callable[[], AbstractContextManager[None]]  # provided by SQLiteStore

    # -- users ----------------------------------------------------------------------------------------

    def users(self) -> list[UserRecord]:
        rows = self._conn.execute(f"SELECT {_USER_COLUMNS} FROM users ORDER BY name").fetchall()  # noqa: S608
        return [_user(r) for r in rows]

    def user(self, name: str) -> UserRecord:
        row = self._conn.execute(f"SELECT {_USER_COLUMNS} FROM users WHERE name=?", (name,)).fetchone()  # noqa: S608
        if row is None:
            raise NotFoundError("no user with this name", name, "see 'bulwark user list'")
        return _user(row)

    def find_user(self, name: str) -> UserRecord | None:
        row = self._conn.execute(f"SELECT {_USER_COLUMNS} FROM users WHERE name=?", (name,)).fetchone()  # noqa: S608
        return _user(row) if row is not None else None

    def user_count(self, role: str | None = None) -> int:
        if role is None:
            return int(self._conn.execute("SELECT COUNT(*) FROM users").fetchone()[0])
        return int(self._conn.execute("SELECT COUNT(*) FROM users WHERE role=?", (role,)).fetchone()[0])

    def insert_user(self, user: UserRecord) -> None:
        try:
            with self.transaction():
                self._conn.execute(
                    f"INSERT INTO users({_USER_COLUMNS}) VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",  # noqa: S608
                    (user.name, user.role, user.password_hash, user.totp_secret, int(user.totp_enabled),
                     user.totp_last_step, user.peer_limit, int(user.require_2fa), user.created_at,
                     user.password_changed_at))
        except sqlite3.IntegrityError:
            raise ConflictError("a user with this name already exists", user.name, "choose another name") from None

    def update_user(self, user: UserRecord) -> None:
        with self.transaction():
            cursor = self._conn.execute(
                "UPDATE users SET role=?, password_hash=?, totp_secret=?, totp_enabled=?, totp_last_step=?, "
                "peer_limit=?, require_2fa=?, password_changed_at=? WHERE name=?",
                (user.role, user.password_hash, user.totp_secret, int(user.totp_enabled), user.totp_last_step,
                 user.peer_limit, int(user.require_2fa), user.password_changed_at, user.name))
            if cursor.rowcount == 0:
                raise NotFoundError("no user with this name", user.name, "see 'bulwark user list'")

    def delete_user(self, name: str) -> None:
        with self.transaction():
            self._conn.execute("DELETE FROM users WHERE name=?", (name,))
            for table, column in (("recovery_codes", "user"), ("setup_links", "user"), ("sessions", "user")):
                self._conn.execute(f"DELETE FROM {table} WHERE {column}=?", (name,))  # noqa: S608
            self._conn.execute("UPDATE tokens SET revoked_at=COALESCE(revoked_at, strftime('%s','now')) "
                               "WHERE owner=?", (name,))

    def set_recovery_codes(self, user: str, hashes: Iterable[str]) -> None:
        with self.transaction():
            self._conn.execute("DELETE FROM recovery_codes WHERE user=?", (user,))
            self._conn.executemany("INSERT INTO recovery_codes(user, code_hash) VALUES(?, ?)",
                                   [(user, h) for h in hashes])

    def use_recovery_code(self, user: str, code_hash: str, now: float) -> bool:
        with self.transaction():
            cursor = self._conn.execute(
                "UPDATE recovery_codes SET used_at=? WHERE user=? AND code_hash=? AND used_at IS NULL",
                (now, user, code_hash))
            return cursor.rowcount == 1

    def recovery_codes_left(self, user: str) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM recovery_codes WHERE user=? AND used_at IS NULL",
                                      (user,)).fetchone()[0])

    # -- setup links ----------------------------------------------------------------------------------

    def add_setup_link(self, token_hash: str, user: str, now: float, expires_at: float) -> None:
        with self.transaction():
            self._conn.execute("DELETE FROM setup_links WHERE user=? AND used_at IS NULL", (user,))
            self._conn.execute("INSERT INTO setup_links(token_hash, user, created_at, expires_at) VALUES(?, ?, ?, ?)",
                               (token_hash, user, now, expires_at))

    def take_setup_link(self, token_hash: str, now: float) -> str | None:
        """The user of a valid, unused setup link, marking it used (single use)."""
        with self.transaction():
            row = self._conn.execute("SELECT user FROM setup_links WHERE token_hash=? AND used_at IS NULL "
                                     "AND expires_at > ?", (token_hash, now)).fetchone()
            if row is None:
                return None
            self._conn.execute("UPDATE setup_links SET used_at=? WHERE token_hash=?", (now, token_hash))
            return str(row[0])

    # -- sessions -------------------------------------------------------------------------------------

    def add_session(self, id_hash: str, session: SessionRecord) -> None:
        with self.transaction():
            self._conn.execute(
                "INSERT INTO sessions(id_hash, user, csrf, created_at, last_seen, mfa_passed, address) "
                "VALUES(?, ?, ?, ?, ?, ?, ?)",
                (id_hash, session.user, session.csrf, session.created_at, session.last_seen,
                 int(session.mfa_passed), session.address))

    def session(self, id_hash: str) -> SessionRecord | None:
        row = self._conn.execute("SELECT user, csrf, created_at, last_seen, mfa_passed, address FROM sessions "
                                 "WHERE id_hash=?", (id_hash,)).fetchone()
        if row is None:
            return None
        return SessionRecord(row[0], row[1], row[2], row[3], bool(row[4]), row[5])

    def touch_session(self, id_hash: str, now: float) -> None:
        with self.transaction():
            self._conn.execute("UPDATE sessions SET last_seen=? WHERE id_hash=?", (now, id_hash))

    def delete_session(self, id_hash: str) -> None:
        with self.transaction():
            self._conn.execute("DELETE FROM sessions WHERE id_hash=?", (id_hash,))

    def delete_user_sessions(self, user: str) -> None:
        with self.transaction():
            self._conn.execute("DELETE FROM sessions WHERE user=?", (user,))

    def prune_sessions(self, idle_before: float, created_before: float) -> None:
        with self.transaction():
            self._conn.execute("DELETE FROM sessions WHERE last_seen < ? OR created_at < ?",
                               (idle_before, created_before))

    # -- tokens ---------------------------------------------------------------------------------------

    def add_token(self, token_hash: str, prefix: str, name: str, owner: str, scopes: tuple[str, ...], now: float,
                  expires_at: float | None) -> TokenRecord:
        with self.transaction():
            cursor = self._conn.execute(
                "INSERT INTO tokens(token_hash, prefix, name, owner, scopes, created_at, expires_at) "
                "VALUES(?, ?, ?, ?, ?, ?, ?)", (token_hash, prefix, name, owner, ",".join(scopes), now, expires_at))
            token_id = int(cursor.lastrowid or 0)
        return self.token(token_id)

    def token(self, token_id: int) -> TokenRecord:
        row = self._conn.execute(f"SELECT {_TOKEN_COLUMNS} FROM tokens WHERE id=?", (token_id,)).fetchone()  # noqa: S608
        if row is None:
            raise NotFoundError("no API token with this id", token_id, "see 'bulwark token list'")
        return _token(row)

    def token_by_hash(self, token_hash: str) -> TokenRecord | None:
        row = self._conn.execute(f"SELECT {_TOKEN_COLUMNS} FROM tokens WHERE token_hash=?",  # noqa: S608
                                 (token_hash,)).fetchone()
        return _token(row) if row is not None else None

    def tokens(self, owner: str | None = None) -> list[TokenRecord]:
        if owner is None:
            rows = self._conn.execute(f"SELECT {_TOKEN_COLUMNS} FROM tokens ORDER BY id").fetchall()  # noqa: S608
        else:
            rows = self._conn.execute(f"SELECT {_TOKEN_COLUMNS} FROM tokens WHERE owner=? ORDER BY id",  # noqa: S608
                                      (owner,)).fetchall()
        return [_token(r) for r in rows]

    def token_used(self, token_id: int, now: float, address: str | None) -> None:
        with self.transaction():
            self._conn.execute("UPDATE tokens SET last_used_at=?, last_used_from=? WHERE id=?",
                               (now, address, token_id))

    def revoke_token(self, token_id: int, now: float) -> None:
        with self.transaction():
            self._conn.execute("UPDATE tokens SET revoked_at=COALESCE(revoked_at, ?) WHERE id=?", (now, token_id))

    # -- login throttling -----------------------------------------------------------------------------

    def add_auth_failure(self, scope: str, key: str, now: float) -> None:
        with self.transaction():
            self._conn.execute("INSERT INTO auth_failures(scope, key, at) VALUES(?, ?, ?)", (scope, key, now))
            # Bounded: failures older than a day no longer count for anything.
            self._conn.execute("DELETE FROM auth_failures WHERE at < ?", (now - 86400,))

    def auth_failures(self, scope: str, key: str, since: float) -> list[float]:
        rows = self._conn.execute("SELECT at FROM auth_failures WHERE scope=? AND key=? AND at >= ? ORDER BY at",
                                  (scope, key, since)).fetchall()
        return [float(r[0]) for r in rows]

    def clear_auth_failures(self, scope: str, key: str) -> None:
        with self.transaction():
            self._conn.execute("DELETE FROM auth_failures WHERE scope=? AND key=?", (scope, key))

    def forget_auth_failure(self, scope: str, key: str, at: float) -> None:
        """Remove one failure (an attempt counted before its check, which then succeeded)."""
        with self.transaction():
            self._conn.execute("DELETE FROM auth_failures WHERE rowid IN (SELECT rowid FROM auth_failures "
                               "WHERE scope=? AND key=? AND at=? LIMIT 1)", (scope, key, at))

    # -- share links ----------------------------------------------------------------------------------

    def add_share(self, token_hash: str, peer: str, created_by: str, now: float, expires_at: float) -> ShareRecord:
        with self.transaction():
            cursor = self._conn.execute(
                "INSERT INTO share_links(token_hash, peer, created_by, created_at, expires_at) VALUES(?, ?, ?, ?, ?)",
                (token_hash, peer, created_by, now, expires_at))
            share_id = int(cursor.lastrowid or 0)
        return self.share(share_id)

    def share(self, share_id: int) -> ShareRecord:
        row = self._conn.execute(f"SELECT {_SHARE_COLUMNS} FROM share_links WHERE id=?",  # noqa: S608
                                 (share_id,)).fetchone()
        if row is None:
            raise NotFoundError("no share link with this id", share_id, "see the peer's share links")
        return ShareRecord(*row)

    def shares(self, peer: str | None = None) -> list[ShareRecord]:
        if peer is None:
            rows = self._conn.execute(f"SELECT {_SHARE_COLUMNS} FROM share_links ORDER BY id").fetchall()  # noqa: S608
        else:
            rows = self._conn.execute(f"SELECT {_SHARE_COLUMNS} FROM share_links WHERE peer=? ORDER BY id",  # noqa: S608
                                      (peer,)).fetchall()
        return [ShareRecord(*r) for r in rows]

    def take_share(self, token_hash: str, now: float) -> ShareRecord | None:
        """The share link for this token if it is valid, marking it used (single use)."""
        with self.transaction():
            row = self._conn.execute(
                f"SELECT {_SHARE_COLUMNS} FROM share_links WHERE token_hash=? AND used_at IS NULL "  # noqa: S608
                "AND revoked_at IS NULL AND expires_at > ?", (token_hash, now)).fetchone()
            if row is None:
                return None
            self._conn.execute("UPDATE share_links SET used_at=? WHERE id=?", (now, row[0]))
            return ShareRecord(*row)

    def revoke_share(self, share_id: int, now: float) -> None:
        with self.transaction():
            self._conn.execute("UPDATE share_links SET revoked_at=COALESCE(revoked_at, ?) WHERE id=?",
                               (now, share_id))

    def revoke_peer_shares(self, peer: str, now: float) -> None:
        with self.transaction():
            self._conn.execute("UPDATE share_links SET revoked_at=COALESCE(revoked_at, ?) WHERE peer=?",
                               (now, peer))

    # -- audit ----------------------------------------------------------------------------------------

    def add_audit(self, record: AuditRecord, retention_days: int) -> None:
        with self.transaction():
            self._conn.execute(
                "INSERT INTO audit(at, actor, via, address, operation, target, result, detail) "
                "VALUES(?, ?, ?, ?, ?, ?, ?, ?)",
                (record.at, record.actor, record.via, record.address, record.operation, record.target,
                 record.result, record.detail))
            self._conn.execute("DELETE FROM audit WHERE at < ?", (record.at - retention_days * 86400,))

    def audit(self, *, user: str | None = None, target: str | None = None, offset: int = 0,
              limit: int = 100) -> tuple[list[AuditRecord], int]:
        """Newest first; `user` matches their sessions, their tokens and a CLI login of that name."""
        where: list[str] = []
        params: list[object] = []
        if user:
            where.append("(actor = ? OR actor = ? OR (actor LIKE 'token:%' AND substr(actor, -length(?) - 3) = ?))")
            params += [f"user:{user}", f"cli:{user}", user, f" ({user})"]
        if target:
            where.append("target = ?")
            params.append(target)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        total = int(self._conn.execute(f"SELECT COUNT(*) FROM audit{clause}", params).fetchone()[0])  # noqa: S608
        sql = f"SELECT {_AUDIT_COLUMNS} FROM audit{clause} ORDER BY id DESC LIMIT ? OFFSET ?"  # noqa: S608
        rows = self._conn.execute(sql, [*params, limit, offset]).fetchall()
        return [AuditRecord(*r) for r in rows], total

    # -- traffic history ------------------------------------------------------------------------------

    def add_traffic(self, resolution: int, bucket: int, deltas: Iterable[tuple[str, int, int]]) -> None:
        """Add byte counts to a bucket (per peer, and "*" for the whole gateway)."""
        with self.transaction():
            self._conn.executemany(
                "INSERT INTO traffic(peer, resolution, bucket, rx, tx) VALUES(?, ?, ?, ?, ?) "
                "ON CONFLICT(peer, resolution, bucket) DO UPDATE SET rx = rx + excluded.rx, tx = tx + excluded.tx",
                [(peer, resolution, bucket, rx, tx) for peer, rx, tx in deltas])

    def traffic(self, peer: str, resolution: int, since: int) -> list[tuple[int, int, int]]:
        rows = self._conn.execute("SELECT bucket, rx, tx FROM traffic WHERE peer=? AND resolution=? AND bucket >= ? "
                                  "ORDER BY bucket", (peer, resolution, since)).fetchall()
        return [(int(b), int(rx), int(tx)) for b, rx, tx in rows]

    def compact_traffic(self, fine: int, coarse: int, fine_before: int, coarse_before: int) -> None:
        """Fold fine buckets older than `fine_before` into coarse ones; drop coarse ones older than `coarse_before`."""
        with self.transaction():
            self._conn.execute(
                "INSERT INTO traffic(peer, resolution, bucket, rx, tx) "
                "SELECT peer, ?, (bucket / ?) * ?, SUM(rx), SUM(tx) FROM traffic "
                "WHERE resolution=? AND bucket < ? GROUP BY peer, (bucket / ?) * ? "
                "ON CONFLICT(peer, resolution, bucket) DO UPDATE SET rx = rx + excluded.rx, tx = tx + excluded.tx",
                (coarse, coarse, coarse, fine, fine_before, coarse, coarse))
            self._conn.execute("DELETE FROM traffic WHERE resolution=? AND bucket < ?", (fine, fine_before))
            self._conn.execute("DELETE FROM traffic WHERE resolution=? AND bucket < ?", (coarse, coarse_before))

    def drop_peer_traffic(self, peer: str) -> None:
        with self.transaction():
            self._conn.execute("DELETE FROM traffic WHERE peer=?", (peer,))

    def iter_owned(self, owner: str) -> Iterator[str]:
        for row in self._conn.execute("SELECT name FROM peers WHERE owner=? ORDER BY id", (owner,)):
            yield str(row[0])

    def owned_count(self, owner: str) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM peers WHERE owner=?", (owner,)).fetchone()[0])
