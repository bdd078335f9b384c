"""The password policy, and the request that changes one's own password.

A password is accepted when it is 12 to 256 characters long and, compared
without case, differs from the username, the email address and the address's
local part, and is not in ``common_passwords.txt``. Hashes are Argon2id, the
default type of argon2-cffi's ``PasswordHasher``.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from pydantic import BaseModel, Field

from services.common.errors import invalid_field
from services.profile.fields import Password

COMMON_PASSWORDS = Path(__file__).parent / "common_passwords.txt"


class PasswordChange(BaseModel):
    current_password: str = Field(max_length=1024)
    new_password: Password


@cache
def common_passwords() -> frozenset[str]:
    lines = COMMON_PASSWORDS.read_text(encoding="utf-8").splitlines()
    return frozenset(
        line.strip().casefold()
        for line in lines
        if line.strip() and not line.startswith("#")
    )


def policy_violation(password: str, username: str, email: str) -> str | None:
    """Return why ``password`` breaks the policy, or None if it does not.

    The length limits are enforced by the ``Password`` field type.
    """
    folded = password.casefold()
    if folded == username.casefold():
        return "must not be the username"
    if folded in (email.casefold(), email.partition("@")[0].casefold()):
        return "must not be the email address or its local part"
    if folded in common_passwords():
        return "is one of the most common passwords; choose a less guessable one"
    return None


def check_policy(field: str, password: str, username: str, email: str) -> None:
    """Raise a 422 naming ``field`` if ``password`` breaks the policy."""
    reason = policy_violation(password, username, email)
    if reason is not None:
        raise invalid_field(("body", field), reason, "value_error.password_policy")
