from __future__ import annotations

import math

import pytest

from services.tokens import secret


def test_generated_token_is_well_formed() -> None:
    token = secret.generate()

    assert token.startswith("ecpat_")
    assert len(token) == secret.TOKEN_LENGTH
    assert secret.is_well_formed(token)


def test_random_part_carries_160_bits() -> None:
    bits = secret.RANDOM_LENGTH * math.log2(len(secret.ALPHABET))

    assert bits >= 160


def test_tokens_differ() -> None:
    assert len({secret.generate() for _ in range(1000)}) == 1000


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),  # checksum changed
        lambda t: t[:10] + ("A" if t[10] != "A" else "B") + t[11:],  # body changed
        lambda t: t[:-1],  # too short
        lambda t: "ghp_" + t[4:],  # wrong prefix
        lambda t: t[:-2] + "!!",  # outside the alphabet
        lambda t: "",
    ],
)
def test_malformed_token_rejected_without_lookup(mangle: object) -> None:
    token = secret.generate()

    assert callable(mangle)
    assert not secret.is_well_formed(mangle(token))


def test_keyed_hash_depends_on_key() -> None:
    token = secret.generate()

    assert secret.keyed_hash(b"one", token) != secret.keyed_hash(b"two", token)
    assert secret.keyed_hash(b"one", token) == secret.keyed_hash(b"one", token)
    assert token.encode() not in secret.keyed_hash(b"one", token)
