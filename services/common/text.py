"""Checks of free text that clients send."""

from __future__ import annotations

import unicodedata


def check_printable(text: str) -> str:
    """Reject control, format and line-separator characters (NUL, bidi overrides).

    Postgres cannot store NUL in text, and invisible characters in names let
    one entry pass for another.
    """
    if any(
        unicodedata.category(char)[0] == "C" or char in "\u2028\u2029" for char in text
    ):
        raise ValueError("must not contain control or format characters")
    return text
