"""The password policy, and the request that changes one's own password.

A password is accepted when it is 12 to 256 characters long and, compared
without case, differs from the username, the email address and the address's
local part, and is not in ``common_passwords.txt``. Hashes are Argon2id, the
default type of argon2-cffi's ``PasswordHasher``.
"""

from __future__ import annotations

import asyncio
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import VerificationError
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


class PasswordHashing:
    """Argon2id hashing and verification on a few low-priority threads.

    With argon2-cffi 25.1's defaults (3 passes over 64 MiB in 4 lanes, which
    libargon2 runs on 4 threads of its own), one hash took about 0.2 s of CPU
    time on a 2-core machine. ``threads`` bounds how many hashes run at once,
    so a burst of sign-ins waits in a queue instead of taking every core and
    64 MiB per hash. The threads run with ``niceness`` added to their Linux
    nice value, which the lane threads inherit, so that the event loop of
    this process, which checks sessions for every other service, runs first.
    The hash parameters stay as they are.

    NOTE: Linux compares nice values only among the threads of one autogroup
    (one per session when autogroups are on). The services run in sessions
    of their own, so other processes still share the CPU with hashing as
    equals.
    """

    def __init__(self, threads: int, niceness: int) -> None:
        self.hasher = PasswordHasher()
        self._executor = ThreadPoolExecutor(
            threads,
            thread_name_prefix="password-hashing",
            initializer=_lower_priority,
            initargs=(niceness,),
        )

    async def hash(self, password: str) -> str:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.hasher.hash, password)

    async def verify(self, stored_hash: str, password: str) -> bool:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(
                self._executor, self.hasher.verify, stored_hash, password
            )
        except VerificationError:
            return False


def _lower_priority(niceness: int) -> None:
    # On Linux the nice value belongs to the thread, not to the process.
    thread = threading.get_native_id()
    os.setpriority(
        os.PRIO_PROCESS, thread, os.getpriority(os.PRIO_PROCESS, thread) + niceness
    )
