"""The personal access token format, and the keyed hash that is stored.

A token reads ``ecpat_`` + 30 random base62 characters (about 178 bits from
``secrets``) + 6 base62 characters of the CRC32 of the random part. The
prefix lets secret scanners find leaked tokens, and the checksum lets a
gateway reject a mistyped or made-up token without a database lookup.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
import zlib

from services.common.auth import PAT_PREFIX

ALPHABET = string.digits + string.ascii_uppercase + string.ascii_lowercase
_ALPHABET_CHARACTERS = frozenset(ALPHABET)
RANDOM_LENGTH = 30
CHECKSUM_LENGTH = 6
TOKEN_LENGTH = len(PAT_PREFIX) + RANDOM_LENGTH + CHECKSUM_LENGTH


def _base62(number: int, width: int) -> str:
    digits = []
    for _ in range(width):
        number, remainder = divmod(number, 62)
        digits.append(ALPHABET[remainder])
    return "".join(reversed(digits))


def _checksum(random_part: str) -> str:
    return _base62(zlib.crc32(random_part.encode()), CHECKSUM_LENGTH)


def generate() -> str:
    """Return a new token value."""
    random_part = "".join(secrets.choice(ALPHABET) for _ in range(RANDOM_LENGTH))
    return PAT_PREFIX + random_part + _checksum(random_part)


def is_well_formed(token: str) -> bool:
    """Check the prefix, length, alphabet and checksum; no lookup needed."""
    if len(token) != TOKEN_LENGTH or not token.startswith(PAT_PREFIX):
        return False
    body = token[len(PAT_PREFIX) :]
    if not _ALPHABET_CHARACTERS.issuperset(body):
        return False
    random_part, checksum = body[:RANDOM_LENGTH], body[RANDOM_LENGTH:]
    return hmac.compare_digest(_checksum(random_part), checksum)


def keyed_hash(key: bytes, token: str) -> bytes:
    """Return the HMAC-SHA256 of the token, the only form that is stored."""
    return hmac.new(key, token.encode(), hashlib.sha256).digest()
