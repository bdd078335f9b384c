"""Parsing of the client address that gateways forward."""

from __future__ import annotations

from services.tokens import usage


def test_addresses_are_normalised() -> None:
    assert usage.parse_address(" 10.0.0.1 ") == "10.0.0.1"
    assert usage.parse_address("2001:DB8::0001") == "2001:db8::1"
    assert usage.parse_address("not an address") is None
    assert usage.parse_address("") is None


def test_longest_ipv6_form_is_accepted() -> None:
    longest = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255"
    assert len(longest) == 45
    assert usage.parse_address(longest) == "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"


def test_long_values_are_not_cached() -> None:
    # A client that reaches forward auth directly chooses X-Forwarded-For;
    # distinct long values must not pile up in the parse cache.
    before = usage._parse_address.cache_info().currsize
    for number in range(50):
        assert usage.parse_address(f"{number}." + "x" * 100_000) is None
    assert usage._parse_address.cache_info().currsize == before
