"""Importing wg-easy: v14's `wg0.json` and v15's SQLite database (`wg-easy.db`).

v14 keeps the server key and address and each client (name, address, keys, enabled) in `wg0.json`; its port, host,
DNS, AllowedIPs and keepalive live in its environment (WG_PORT, WG_HOST, WG_DEFAULT_DNS, WG_ALLOWED_IPS,
WG_PERSISTENT_KEEPALIVE, WG_MTU), read here from the importing process's environment when set, else wg-easy's
defaults. v15 keeps everything in its database: `interfaces_table`, `user_configs_table`, `clients_table` and
`hooks_table`; its hooks (PreUp...PostDown, per server and per client) are reported and dropped.

Every value comes through the strict parsers; the database is opened read-only and never written.
"""

from __future__ import annotations

import ipaddress
import json
import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bulwark_vpn.errors import InputError, show_value
from bulwark_vpn.importers.plan import Plan, SourcePeer, SourceServer, make_plan, safe_name
from bulwark_vpn.importers.wgquick import MAX_TEXT, decode
from bulwark_vpn.keys import PresharedKey, PrivateKey, PublicKey
from bulwark_vpn.values import (
    parse_dns_servers,
    parse_host,
    parse_int,
    parse_ip_address,
    parse_keepalive,
    parse_network,
    parse_networks,
    parse_port,
)

SQLITE_MAGIC = b"SQLite format 3\x00"
V14_DEFAULTS = {"WG_PORT": "51820", "WG_DEFAULT_DNS": "1.1.1.1", "WG_ALLOWED_IPS": "0.0.0.0/0, ::/0",
                "WG_PERSISTENT_KEEPALIVE": "0"}


def import_wg_easy(path: Path, environ: Mapping[str, str]) -> Plan:
    """`bulwark import wg-easy FILE`: a v15 database or a v14 wg0.json, told apart by their first bytes."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
    except OSError as exc:
        raise InputError(f"cannot read the wg-easy file: {exc.strerror}", str(path), "check the path") from None
    if head == SQLITE_MAGIC:
        return _import_v15(path)
    from bulwark_vpn.importers.wgquick import read_text

    return _import_v14(path, read_text(path, "wg-easy file"), environ)


def _text(value: object, what: str, source: str) -> str:
    if not isinstance(value, str):
        raise InputError(f"{source}: invalid {what}", value, "expected text")
    return value


def _keepalive(value: object) -> int | None:
    number = parse_keepalive(value if isinstance(value, int) else str(value))
    return number or None


# -- v14 -------------------------------------------------------------------------------------------------------


def _import_v14(path: Path, text: str, environ: Mapping[str, str]) -> Plan:
    source = str(path)
    plan = Plan(source)
    try:
        data = json.loads(text)
    except ValueError:
        raise InputError("not a wg-easy file (neither a v15 database nor v14 JSON)", source,
                         "give wg-easy's wg0.json (v14) or wg-easy.db (v15)") from None
    if not isinstance(data, dict) or not isinstance(data.get("server"), dict) or \
            not isinstance(data.get("clients"), dict):
        raise InputError("not a wg-easy v14 wg0.json (no server and clients)", source,
                         "give wg-easy's wg0.json (v14) or wg-easy.db (v15)")
    server = data["server"]
    env = {**V14_DEFAULTS, **{k: v for k, v in environ.items() if k in V14_DEFAULTS or k in ("WG_HOST", "WG_MTU")}}
    key = PrivateKey.from_base64(_text(server.get("privateKey"), "server privateKey", source))
    address = parse_ip_address(_text(server.get("address"), "server address", source), f"server address in {source}")
    if address.version != 4:
        raise InputError(f"{source}: the server address is not IPv4", str(address), "wg-easy v14 uses IPv4")
    keepalive = _keepalive(env["WG_PERSISTENT_KEEPALIVE"])
    host = parse_host(env["WG_HOST"], "WG_HOST") if env.get("WG_HOST") else None
    port = parse_port(env["WG_PORT"], "WG_PORT")
    if host is None:
        plan.warnings.append(f"{source}: WG_HOST is not set here: the server's Endpoint is unknown; set it after the "
                             f"import ('bulwark init --server-url HOST')")
    dns = tuple(str(a) for a in parse_dns_servers(env["WG_DEFAULT_DNS"], "WG_DEFAULT_DNS"))
    allowed = parse_networks(env["WG_ALLOWED_IPS"], "WG_ALLOWED_IPS")
    mtu = parse_int(env["WG_MTU"], 1280, 9000, "WG_MTU", "") if env.get("WG_MTU") else None
    peers: list[SourcePeer] = []
    for index, (client_id, client) in enumerate(data["clients"].items(), start=1):
        where = f"{source}: client {show_value(client_id)[:40]}"
        if not isinstance(client, dict):
            raise InputError(f"{where}: not an object", None, "is the file damaged?")
        raw_name = client.get("name") if isinstance(client.get("name"), str) else None
        name = _name(plan, source, raw_name, index)
        private = client.get("privateKey")
        address4 = parse_ip_address(_text(client.get("address"), "client address", where), f"address of {where}")
        psk = client.get("preSharedKey")
        peers.append(SourcePeer(
            name=name, public_key=PublicKey.parse(_text(client.get("publicKey"), "publicKey", where)),
            networks=(ipaddress.ip_network((address4, address4.max_prefixlen)),), source=source,
            private_key=PrivateKey.from_base64(private) if isinstance(private, str) and private else None,
            preshared_key=PresharedKey.from_base64(psk) if isinstance(psk, str) and psk else None,
            allowed_ips=allowed, keepalive=keepalive, enabled=client.get("enabled") is not False, dns=dns,
        ))
    plan.dropped.append(f"{source}: wg-easy's PreUp/PostUp/PreDown/PostDown (WG_PRE_UP...) are never imported: "
                        f"Bulwark does NAT and forwarding itself")
    server_spec = SourceServer(private_key=key, addresses=(ipaddress.ip_interface(f"{address}/24"),),
                               listen_port=port, mtu=mtu, endpoint_host=host, endpoint_port=port, dns=dns,
                               allowed_ips=allowed)
    return make_plan(plan, server_spec, peers)


def _name(plan: Plan, source: str, raw: str | None, index: int) -> str:
    name, changed = safe_name(raw, f"client{index}")
    if changed:
        plan.warnings.append(f"{source}: client '{show_value(raw or '')[:60]}' is named '{name}' (letters, digits "
                             f"and _=+.- only)")
    return name


# -- v15 -------------------------------------------------------------------------------------------------------


def _rows(conn: sqlite3.Connection, sql: str) -> list[dict[str, Any]]:
    cursor = conn.execute(sql)
    columns = [c[0] for c in cursor.description]
    return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]


def _json_list(value: object, what: str, where: str) -> list[str] | None:
    if value is None:
        return None
    try:
        items = json.loads(_text(value, what, where))
    except ValueError:
        raise InputError(f"{where}: invalid {what}", value, "expected a JSON list") from None
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise InputError(f"{where}: invalid {what}", value, "expected a JSON list of text")
    return items


def _hooks(plan: Plan, where: str, row: Mapping[str, Any]) -> None:
    for column, key in (("pre_up", "PreUp"), ("post_up", "PostUp"), ("pre_down", "PreDown"),
                        ("post_down", "PostDown")):
        if row.get(column):
            plan.dropped.append(f"{where}: {key} dropped: a command, never imported (Bulwark does NAT and "
                                f"forwarding itself)")


def _open_read_only(path: Path) -> sqlite3.Connection:
    """The database read-only (never written: wg-easy may still use it); `immutable` when its folder cannot hold
    the WAL index a read-only reader of a WAL database needs."""
    uri = path.absolute().as_uri()
    last: sqlite3.Error | None = None
    for target in (f"{uri}?mode=ro", f"{uri}?mode=ro&immutable=1"):
        try:
            conn = sqlite3.connect(target, uri=True)
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return conn
        except sqlite3.Error as exc:
            last = exc
    raise InputError(f"cannot open the wg-easy database ({last})", str(path), "check the path and the file")


def _import_v15(path: Path) -> Plan:
    source = str(path)
    plan = Plan(source)
    conn = _open_read_only(path)
    try:
        try:
            if conn.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise InputError("the wg-easy database is damaged", source, "copy it again from wg-easy's volume")
            interfaces = _rows(conn, "SELECT * FROM interfaces_table ORDER BY name")
            configs = {r["id"]: r for r in _rows(conn, "SELECT * FROM user_configs_table")}
            hooks = {r["id"]: r for r in _rows(conn, "SELECT * FROM hooks_table")}
            clients = _rows(conn, "SELECT * FROM clients_table ORDER BY id")
        except sqlite3.Error as exc:
            raise InputError(f"not a wg-easy v15 database ({exc})", source,
                             "give wg-easy's wg-easy.db (v15) or wg0.json (v14)") from None
    finally:
        conn.close()
    if not interfaces:
        raise InputError("the wg-easy database has no interface", source, "is wg-easy set up?")
    iface = interfaces[0]
    name = _text(iface["name"], "interface name", source)
    if len(interfaces) > 1:
        plan.warnings.append(f"{source}: only the interface '{show_value(name)}' is imported")
    where = f"{source}: interface {show_value(name)}"
    config = configs.get(name)
    if config is None:
        raise InputError(f"{where}: no user config row", None, "is wg-easy set up?")
    if name in hooks:
        _hooks(plan, where, hooks[name])
    if iface.get("routing_table") not in (None, "auto"):
        plan.dropped.append(f"{where}: Table = {show_value(iface['routing_table'])} dropped: not a setting Bulwark "
                            f"keeps")
    key = PrivateKey.from_base64(_text(iface["private_key"], "private_key", where))
    cidr4 = parse_network(_text(iface["ipv4_cidr"], "ipv4_cidr", where), f"ipv4_cidr of {where}")
    cidr6 = parse_network(_text(iface["ipv6_cidr"], "ipv6_cidr", where), f"ipv6_cidr of {where}")
    addresses = (ipaddress.ip_interface((cidr4.network_address + 1, cidr4.prefixlen)),
                 ipaddress.ip_interface((cidr6.network_address + 1, cidr6.prefixlen)))
    host_text = _text(config["host"], "host", where)
    host = parse_host(host_text, f"host of {where}") if host_text else None
    dns = tuple(str(a) for a in parse_dns_servers(_json_list(config["default_dns"], "default_dns", where) or [],
                                                   f"default_dns of {where}"))
    allowed = parse_networks(_json_list(config["default_allowed_ips"], "default_allowed_ips", where) or [],
                             f"default_allowed_ips of {where}")
    peers: list[SourcePeer] = []
    for index, row in enumerate((r for r in clients if r.get("interface_id") == name), start=1):
        cwhere = f"{source}: client {row.get('id')}"
        _hooks(plan, cwhere, row)
        peer_name = _name(plan, source, row.get("name") if isinstance(row.get("name"), str) else None, index)
        networks = [ipaddress.ip_network((parse_ip_address(_text(row["ipv4_address"], "ipv4_address", cwhere)), 32))]
        networks.append(ipaddress.ip_network((parse_ip_address(_text(row["ipv6_address"], "ipv6_address", cwhere)),
                                              128)))
        networks += parse_networks(_json_list(row.get("server_allowed_ips"), "server_allowed_ips", cwhere) or [],
                                   f"server_allowed_ips of {cwhere}") if row.get("server_allowed_ips") not in (
            None, "[]") else ()
        client_allowed = _json_list(row.get("allowed_ips"), "allowed_ips", cwhere)
        client_dns = _json_list(row.get("dns"), "dns", cwhere)
        if row.get("expires_at"):
            plan.warnings.append(f"{cwhere}: its expiry date ({show_value(row['expires_at'])[:30]}) is not kept")
        if row.get("firewall_ips"):
            plan.warnings.append(f"{cwhere}: its firewall IPs are not kept")
        peers.append(SourcePeer(
            name=peer_name, public_key=PublicKey.parse(_text(row["public_key"], "public_key", cwhere)),
            networks=tuple(networks), source=source,
            private_key=PrivateKey.from_base64(row["private_key"]) if row.get("private_key") else None,
            preshared_key=PresharedKey.from_base64(row["pre_shared_key"]) if row.get("pre_shared_key") else None,
            allowed_ips=parse_networks(client_allowed, f"allowed_ips of {cwhere}") if client_allowed else allowed,
            keepalive=_keepalive(row.get("persistent_keepalive") or 0), enabled=bool(row.get("enabled")),
            dns=tuple(str(a) for a in parse_dns_servers(client_dns, f"dns of {cwhere}")) if client_dns else dns,
        ))
    server = SourceServer(private_key=key, addresses=addresses,  # type: ignore[arg-type]
                          listen_port=parse_port(iface["port"], f"port of {where}"),
                          mtu=parse_int(iface["mtu"], 576, 65535, f"mtu of {where}", ""),
                          interface="wg0", endpoint_host=host,
                          endpoint_port=parse_port(config["port"], f"port of {where}"), dns=dns, allowed_ips=allowed)
    return make_plan(plan, server, peers)


__all__ = ["MAX_TEXT", "decode", "import_wg_easy"]
