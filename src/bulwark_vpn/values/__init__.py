"""The strict parsers: text from anywhere (flags, environment, TOML, files, HTTP bodies, discovery
answers) becomes a typed value here, once, through the one parser of its kind, or is refused with an
InputError naming the value and the fix.

Every parser matches the whole value (`re.fullmatch`), refuses control characters and line or
paragraph separators, and never relies on `ipaddress` alone for untrusted text (it accepts any zone id
after `%`, newlines included).
"""

from bulwark_vpn.values.names import (
    config_filename,
    is_numbered_peer,
    parse_egress_interface,
    parse_interface_name,
    parse_peer_name,
    parse_token_name,
    parse_user_name,
    peer_folder,
)
from bulwark_vpn.values.net import (
    Endpoint,
    IPAddress,
    IPNetwork,
    format_endpoint,
    parse_base_url,
    parse_dns_name,
    parse_dns_servers,
    parse_endpoint,
    parse_host,
    parse_https_url,
    parse_ip_address,
    parse_network,
    parse_networks,
    parse_server_url,
    parse_subnet4,
    parse_subnet6,
)
from bulwark_vpn.values.numbers import parse_bool, parse_int, parse_keepalive, parse_mtu, parse_port
from bulwark_vpn.values.paths import parse_absolute_path, parse_relative_path
from bulwark_vpn.values.text import has_unsafe_char, parse_choice, require_ascii_token, require_text
from bulwark_vpn.values.times import format_moment, parse_duration, parse_expiry

__all__ = [
    "Endpoint",
    "IPAddress",
    "IPNetwork",
    "config_filename",
    "format_endpoint",
    "format_moment",
    "has_unsafe_char",
    "is_numbered_peer",
    "parse_base_url",
    "parse_absolute_path",
    "parse_bool",
    "parse_choice",
    "parse_dns_name",
    "parse_dns_servers",
    "parse_duration",
    "parse_egress_interface",
    "parse_endpoint",
    "parse_expiry",
    "parse_host",
    "parse_https_url",
    "parse_int",
    "parse_interface_name",
    "parse_ip_address",
    "parse_keepalive",
    "parse_mtu",
    "parse_network",
    "parse_networks",
    "parse_peer_name",
    "parse_port",
    "parse_relative_path",
    "parse_server_url",
    "parse_subnet4",
    "parse_subnet6",
    "parse_token_name",
    "parse_user_name",
    "peer_folder",
    "require_ascii_token",
    "require_text",
]
