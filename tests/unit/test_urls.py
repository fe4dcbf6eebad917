"""The URL checks of delegations and publication settings (campus/rules/urls.py): each rule, and the
forms an address can hide in, generated with hypothesis."""

from __future__ import annotations

import ipaddress
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from campus.errors import Invalid
from campus.rules.urls import check_url, url_refusals


def rules(url: object) -> set[str]:
    return {r.rule.value for r in url_refusals(url)}


# -- accepted --------------------------------------------------------------------------------------
@pytest.mark.parametrize("url", [
    "https://cas.monent.fr/cas",
    "https://ent.example.com:8443/cas/login?service=x#top",
    "https://sso.education.gouv.fr/idp/metadata.xml",
    "HTTPS://ENT.Region.FR/",
    "https://école.fr/cas",
    "https://xn--cole-9oa.fr/",
    "https://ent.example.fr./",  # a trailing dot is the same public name
    "https://1e100.net/",
    "https://a.fr:/",  # an empty port is the default one
])
def test_public_https_urls_are_accepted(url: str) -> None:
    assert url_refusals(url) == []
    assert check_url("server_url", f"  {url} ") == url


# -- each rule, with the forms browsers and resolvers accept ----------------------------------------
@pytest.mark.parametrize(("url", "expected"), [
    ("http://ent.example.fr/cas", {"https_only"}),
    ("ftp://ent.example.fr/", {"https_only"}),
    ("javascript://ent.example.fr/%0aalert(1)", {"https_only"}),
    ("https://user:secret@ent.example.fr/", {"no_credentials"}),
    ("https://user@ent.example.fr/", {"no_credentials"}),
    ("https://@ent.example.fr/", {"no_credentials"}),
    ("http://u:p@localhost/", {"https_only", "no_credentials", "public_host"}),
    ("https://8.8.8.8/", {"host_name"}),
    ("https://[2001:4860:4860::8888]/", {"host_name"}),
    ("https://127.0.0.1/", {"host_name", "public_host"}),
    ("http://2130706433", {"https_only", "host_name", "public_host"}),
    ("https://0x7f000001/", {"host_name", "public_host"}),
    ("https://0x7f.0.0.1/", {"host_name", "public_host"}),
    ("https://0177.0.0.1/", {"host_name", "public_host"}),
    ("https://127.1/", {"host_name", "public_host"}),
    ("https://0/", {"host_name", "public_host"}),
    ("https://１２７.０.０.１/", {"host_name", "public_host"}),
    ("https://%31%32%37.0.0.1/", {"host_name", "public_host"}),
    ("https://[::1]/", {"host_name", "public_host"}),
    ("https://[::ffff:127.0.0.1]/", {"host_name", "public_host"}),
    ("https://[::ffff:a9fe:a9fe]/", {"host_name", "public_host"}),
    ("https://[64:ff9b::a00:1]/", {"host_name", "public_host"}),
    ("https://[fe80::1%25eth0]/", {"host_name", "public_host"}),
    ("https://[fd00:ec2::254]/", {"host_name", "public_host"}),
    ("https://169.254.169.254/latest/meta-data/", {"host_name", "public_host"}),
    ("https://10.1.2.3/", {"host_name", "public_host"}),
    ("https://192.168.0.10/", {"host_name", "public_host"}),
    ("https://172.16.0.1/", {"host_name", "public_host"}),
    ("https://100.100.100.200/", {"host_name", "public_host"}),
    ("https://example.123/", {"host_name", "public_host"}),
    ("https://localhost/", {"public_host"}),
    ("https://LOCALHOST./", {"public_host"}),
    ("https://ｌｏｃａｌｈｏｓｔ/", {"public_host"}),
    ("https://%6c%6fcalhost/", {"public_host"}),
    ("https://cas.localhost/", {"public_host"}),
    ("https://metadata.google.internal/computeMetadata/v1/", {"public_host"}),
    ("https://metadata.goog/", {"public_host"}),
    ("https://printer.local/", {"public_host"}),
    ("https://nas.home.arpa/", {"public_host"}),
    ("https://127.0.0.1.nip.io/", {"public_host"}),
    ("https://intranet/", {"public_host"}),
    ("https://ent/cas", {"public_host"}),
    ("https://a_b.example.fr/", {"syntax"}),
    ("https://ent.example.fr\\@localhost/", {"syntax"}),
    ("https://ent.example .fr/", {"syntax"}),
    ("https://ent.example.fr/\ncas", {"syntax"}),
    ("https://ent.example.fr:0/", {"syntax"}),
    ("https://ent.example.fr:99999/", {"syntax"}),
    ("https://[not-an-address]/", {"syntax"}),
    ("https:ent.example.fr", {"syntax"}),
    ("//ent.example.fr/cas", {"syntax"}),
    ("ent.example.fr/cas", {"syntax"}),
    ("", {"syntax"}),
    ("https://" + "a" * 2100 + ".fr/", {"syntax"}),
])
def test_each_refusal_names_the_rules_broken(url: str, expected: set[str]) -> None:
    assert rules(url) == expected


def test_a_refusal_is_a_422_naming_the_field_and_each_rule() -> None:
    with pytest.raises(Invalid) as caught:
        check_url("validation_url", "http://169.254.169.254/")
    error = caught.value
    assert error.status == 422 and error.code == "url_refused"
    assert {e["field"] for e in error.errors} == {"validation_url"}
    assert {e["rule"] for e in error.errors} == {"https_only", "host_name", "public_host"}
    assert "validation_url" in error.detail and "https" in error.detail
    assert any("metadata" in e["message"] for e in error.errors)


def test_not_a_string_is_refused_not_crashed_on() -> None:
    for value in (None, 42, ["https://a.fr/"]):
        with pytest.raises(Invalid):
            check_url("server_url", value)


# -- generated ----------------------------------------------------------------------------------------
ipv4 = st.integers(min_value=0, max_value=2**32 - 1).map(ipaddress.IPv4Address)


def _forms(address: ipaddress.IPv4Address, draw: st.DrawFn) -> str:
    """One of the spellings inet_aton and browsers read as `address`."""
    octets = list(address.packed)
    n = int(address)
    style = draw(st.sampled_from(["dotted", "decimal", "hex", "octal-dotted", "hex-dotted", "short", "trailing-dot"]))
    if style == "dotted":
        return str(address)
    if style == "decimal":
        return str(n)
    if style == "hex":
        return draw(st.sampled_from(["0x", "0X"])) + format(n, draw(st.sampled_from(["x", "X"])))
    if style == "octal-dotted":
        return ".".join("0" + format(o, "o") for o in octets)
    if style == "hex-dotted":
        return ".".join(hex(o) for o in octets)
    if style == "short":  # a.b.c: the last part fills the low 16 bits
        return f"{octets[0]}.{octets[1]}.{(octets[2] << 8) | octets[3]}"
    return f"{address}."


@st.composite
def ipv4_spellings(draw: st.DrawFn) -> tuple[ipaddress.IPv4Address, str]:
    address = draw(ipv4)
    return address, _forms(address, draw)


@given(ipv4_spellings())
@settings(max_examples=400)
def test_every_spelling_of_an_ipv4_address_is_refused_as_an_ip_literal(spelled: tuple) -> None:
    address, host = spelled
    found = url_refusals(f"https://{host}/cas")
    assert "host_name" in {r.rule.value for r in found}, host
    # And when the address is loopback, private, link-local or unspecified, the refusal says so too.
    if address.is_private or address.is_loopback or address.is_link_local or address.is_unspecified:
        assert "public_host" in {r.rule.value for r in found}, (host, found)


@given(st.integers(min_value=0, max_value=2**128 - 1).map(ipaddress.IPv6Address))
@settings(max_examples=300)
def test_every_bracketed_ipv6_address_is_refused(address: ipaddress.IPv6Address) -> None:
    assert "host_name" in rules(f"https://[{address}]:443/")
    assert "host_name" in rules(f"https://[{address.exploded}]/")


@given(st.sampled_from(["127.0.0.1", "10.0.0.8", "169.254.169.254", "192.168.1.1", "172.31.255.255"]))
def test_private_ipv4_addresses_inside_ipv6_are_not_public(v4: str) -> None:
    assert rules(f"https://[::ffff:{v4}]/") == {"host_name", "public_host"}


LABEL = st.text(alphabet=string.ascii_lowercase + string.digits, min_size=1, max_size=20).filter(
    lambda s: not s.isdigit())
TLD = st.sampled_from(["fr", "com", "org", "net", "eu", "education", "gouv.fr", "ac-lyon.fr"])


@given(st.lists(LABEL, min_size=1, max_size=3), TLD, st.sampled_from(["", "/cas", "/idp/metadata.xml?x=1"]))
def test_public_host_names_over_https_are_accepted(labels: list[str], tld: str, path: str) -> None:
    host = ".".join([*labels, tld])
    assert url_refusals(f"https://{host}{path}") == [], host


@given(st.lists(LABEL, min_size=0, max_size=3), st.sampled_from(["localhost", "local", "internal", "home.arpa"]),
       st.booleans(), st.booleans())
def test_names_under_local_suffixes_are_refused_however_written(labels: list[str], suffix: str, upper: bool,
                                                                  dot: bool) -> None:
    host = ".".join([*labels, suffix])
    host = host.upper() if upper else host
    assert rules(f"https://{host}{'.' if dot else ''}/") == {"public_host"}, host


USERINFO = st.text(alphabet=string.ascii_letters + string.digits + "-._~%!$&'()*+,;=", max_size=20)


@given(USERINFO, st.one_of(st.none(), USERINFO))
def test_userinfo_is_always_refused(user: str, password: str | None) -> None:
    userinfo = user if password is None else f"{user}:{password}"
    assert rules(f"https://{userinfo}@ent.example.fr/") == {"no_credentials"}


@given(st.from_regex(r"\A[a-z][a-z0-9+.-]{0,10}\Z").filter(lambda s: s != "https"))
def test_any_other_scheme_is_refused(scheme: str) -> None:
    assert "https_only" in rules(f"{scheme}://ent.example.fr/")


@given(st.text(max_size=300))
@settings(max_examples=500)
def test_any_text_gets_an_answer_never_a_crash(text: str) -> None:
    found = url_refusals(text)
    assert all(r.message for r in found)
    try:
        assert check_url("server_url", text) == text.strip()
    except Invalid as exc:
        assert exc.errors and all(e["field"] == "server_url" and e["rule"] for e in exc.errors)
