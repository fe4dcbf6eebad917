"""Addresses a school gives the console (delegations, public URL, logo): checked, never fetched.

Publication settings and delegated authentication (hosting guide fiches 8 and 9)
take URLs that a browser, or later the server itself, will follow. Each one is
checked when it is configured, against these rules, all reported at once:

* ``syntax``       — an absolute URL ``https://host[:port]/…`` without spaces,
                     control characters or backslashes, at most 2,048 characters;
* ``https_only``   — the scheme is ``https``;
* ``no_credentials`` — no ``user:password@`` part;
* ``host_name``    — a host name, not an IP literal in any of the forms browsers
                     and resolvers accept (``127.0.0.1``, ``[::1]``, ``2130706433``,
                     ``0x7f000001``, ``0177.0.0.1``, ``127.1``, full-width digits…);
* ``public_host``  — never a loopback, private, link-local or cloud-metadata host:
                     ``localhost`` and ``*.localhost``, ``metadata.google.internal``,
                     special-use suffixes (``.internal``, ``.local``, ``.home.arpa``…),
                     single-label names (``intranet``), and for an IP literal any
                     address that is not globally routable (``169.254.169.254``).

Nothing here resolves a name or opens a connection: a name that passes can still
resolve to a private address (or start to, later). Code that one day connects to
one of these URLs must resolve the name itself, check every address it gets
against the same rules at connect time, connect to that checked address, and
follow no redirect.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import unquote, urlsplit

import idna

from campus.errors import Invalid

MAX_URL_LENGTH = 2048
MAX_HOST_LENGTH = 253

# Characters refused anywhere in a URL: controls, spaces (any Unicode space), backslash
# (browsers read "\" as "/" in https URLs, so "https://a.fr\@localhost/" is ambiguous).
_FORBIDDEN_CHARACTER = re.compile(r"[\x00-\x20\x7f-\x9f\\\s]")
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_HEX = re.compile(r"^0[xX][0-9a-fA-F]*$")

# Names that reach the machine itself or a cloud provider's instance metadata.
BLOCKED_NAMES = frozenset({
    "localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback",
    "metadata", "metadata.google.internal", "metadata.goog", "instance-data", "instance-data.ec2.internal",
})
# Special-use and private-use suffixes (RFC 6761, RFC 6762, RFC 8375, ICANN's .internal, common LAN
# suffixes) and public services whose names resolve to the address written in them (127.0.0.1.nip.io).
BLOCKED_SUFFIXES = (
    "localhost", "local", "internal", "localdomain", "home.arpa", "in-addr.arpa", "ip6.arpa", "lan", "intranet",
    "corp", "private", "test", "invalid", "example", "onion", "nip.io", "sslip.io", "xip.io", "localtest.me",
    "lvh.me",
)


class UrlRule(StrEnum):
    SYNTAX = "syntax"
    HTTPS_ONLY = "https_only"
    NO_CREDENTIALS = "no_credentials"
    HOST_NAME = "host_name"
    PUBLIC_HOST = "public_host"


@dataclass(frozen=True)
class UrlRefusal:
    rule: UrlRule
    message: str


def url_refusals(url: object) -> list[UrlRefusal]:
    """Every rule `url` breaks (empty when it may be configured). Never resolves or connects."""
    if not isinstance(url, str) or not url:
        return [UrlRefusal(UrlRule.SYNTAX, "must be an https URL such as https://ent.example.fr/cas")]
    if len(url) > MAX_URL_LENGTH:
        return [UrlRefusal(UrlRule.SYNTAX, f"must be at most {MAX_URL_LENGTH} characters")]
    if _FORBIDDEN_CHARACTER.search(url):
        return [UrlRefusal(UrlRule.SYNTAX, "must not contain spaces, control characters or backslashes")]
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return [UrlRefusal(UrlRule.SYNTAX, f"is not a valid URL ({exc})")]
    if not parts.scheme or not parts.netloc or not url.lower().startswith(f"{parts.scheme}://"):
        return [UrlRefusal(UrlRule.SYNTAX, "must be an absolute URL: https://host/path")]
    refusals: list[UrlRefusal] = []
    if parts.scheme != "https":
        refusals.append(UrlRefusal(UrlRule.HTTPS_ONLY, f"must use https, not {parts.scheme}"))
    _, at, hostport = parts.netloc.rpartition("@")
    if at:
        refusals.append(UrlRefusal(UrlRule.NO_CREDENTIALS, "must not carry credentials (user:password@)"))
    if port == 0:
        refusals.append(UrlRefusal(UrlRule.SYNTAX, "the port must be between 1 and 65535"))
    if hostport.startswith("["):
        refusals += _ip_literal_refusals(parts.hostname or "", _bracketed(parts.hostname or ""))
        return refusals
    return refusals + host_refusals(parts.hostname or "")


def host_refusals(host: str) -> list[UrlRefusal]:
    """The rules a host (as written in a URL, without brackets or port) breaks."""
    if not host:
        return [UrlRefusal(UrlRule.SYNTAX, "must name a host: https://host/path")]
    # Browsers percent-decode the host, then map it (UTS #46: case, full-width forms, "。").
    decoded = unquote(host)
    try:
        mapped = idna.uts46_remap(decoded, std3_rules=False, transitional=False)
    except idna.IDNAError:
        mapped = decoded
    name = mapped[:-1] if mapped.endswith(".") else mapped
    address = _ipv4_number(name)
    if address is not None or _ends_in_number(name):
        return _ip_literal_refusals(host, address)
    try:
        ascii_name = idna.encode(name, uts46=True, std3_rules=True).decode("ascii")
    except (idna.IDNAError, UnicodeError, ValueError):
        ascii_name = ""
    if not ascii_name or len(ascii_name) > MAX_HOST_LENGTH or not all(map(_LABEL.match, ascii_name.split("."))):
        blocked = _blocked_name(name.lower())
        return [blocked] if blocked else [UrlRefusal(
            UrlRule.SYNTAX, f"{host!r} is not a valid host name (letters, digits and hyphens, dot-separated)")]
    blocked = _blocked_name(ascii_name)
    if blocked:
        return [blocked]
    if "." not in ascii_name:
        return [UrlRefusal(UrlRule.PUBLIC_HOST, f"{host!r} is a single-label (local network) name; "
                                                "use the fully qualified public name, e.g. ent.example.fr")]
    return []


def check_url(field: str, value: object) -> str:
    """`value` stripped of surrounding spaces if it may be configured; otherwise 422 naming `field`
    and, for each broken rule, the rule and why."""
    url = value.strip() if isinstance(value, str) else value
    refusals = url_refusals(url)
    if refusals:
        raise Invalid(
            "; ".join(f"{field}: {r.message} (rule {r.rule})" for r in refusals),
            errors=[{"field": field, "rule": r.rule.value, "message": r.message} for r in refusals],
            code="url_refused",
        )
    assert isinstance(url, str)
    return url


# -- helpers ---------------------------------------------------------------------------------------
def _blocked_name(name: str) -> UrlRefusal | None:
    if name in BLOCKED_NAMES or any(name.endswith("." + suffix) or name == suffix for suffix in BLOCKED_SUFFIXES):
        kind = "a cloud metadata host" if "metadata" in name or "instance-data" in name else (
            "a loopback host" if "localhost" in name or name.startswith("ip6-") or name in ("lvh.me", "localtest.me")
            else "a local, private or special-use name")
        return UrlRefusal(UrlRule.PUBLIC_HOST, f"{name!r} is {kind}; use the public host name of the service")
    return None


def _bracketed(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None


def _ip_literal_refusals(host: str, address: ipaddress.IPv4Address | ipaddress.IPv6Address | None
                         ) -> list[UrlRefusal]:
    shown = f"{host!r}" + (f" ({address})" if address is not None and str(address) != host else "")
    refusals = [UrlRefusal(UrlRule.HOST_NAME, f"{shown} is an IP address; use the service's host name")]
    if address is None or not _is_public(address):
        refusals.append(UrlRefusal(UrlRule.PUBLIC_HOST, f"{shown} is {_address_kind(address)}"))
    return refusals


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, 6to4, NAT64, IPv4-compatible), if any."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in ipaddress.IPv6Network("64:ff9b::/96") or address in ipaddress.IPv6Network("::/96"):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _is_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and not (address.is_loopback or address.is_unspecified):
        embedded = _embedded_ipv4(address)
        if embedded is not None and not _is_public(embedded):
            return False
    return address.is_global and not address.is_multicast and not address.is_reserved


def _address_kind(address: ipaddress.IPv4Address | ipaddress.IPv6Address | None) -> str:
    if address is None:
        return "not a routable address"
    if isinstance(address, ipaddress.IPv6Address) and not (address.is_loopback or address.is_unspecified):
        embedded = _embedded_ipv4(address)
        if embedded is not None and not _is_public(embedded):
            return _address_kind(embedded)
    if str(address) in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200"):
        return "a cloud metadata address"
    for test, kind in (("is_loopback", "a loopback address"), ("is_link_local", "a link-local address"),
                       ("is_unspecified", "the unspecified address"), ("is_multicast", "a multicast address"),
                       ("is_private", "a private address")):
        if getattr(address, test):
            return kind
    return "a reserved or shared (non-public) address"


def _ends_in_number(name: str) -> bool:
    """WHATWG URL: a host whose last label is a number is read as an IPv4 address, whatever the rest."""
    last = name.rsplit(".", 1)[-1]
    return bool(last) and (last.isascii() and last.isdigit() or bool(_HEX.match(last)))


def _ipv4_number(name: str) -> ipaddress.IPv4Address | None:
    """The IPv4 address a browser or inet_aton reads in `name` (1 to 4 parts, each decimal, 0x-hex or
    0-octal: 127.1, 2130706433, 0x7f.0.0.1, 0177.0.0.1), or None."""
    parts = name.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    numbers = []
    for part in parts:
        if not part or not part.isascii():
            return None
        try:
            if _HEX.match(part):
                numbers.append(int(part[2:] or "0", 16))
            elif len(part) > 1 and part.startswith("0"):
                numbers.append(int(part[1:], 8))
            elif part.isdigit():
                numbers.append(int(part))
            else:
                return None
        except ValueError:
            return None
    if any(n > 255 for n in numbers[:-1]) or numbers[-1] >= 256 ** (5 - len(numbers)):
        return None
    value = numbers[-1]
    for index, n in enumerate(numbers[:-1]):
        value += n << (8 * (3 - index))
    return ipaddress.IPv4Address(value)
