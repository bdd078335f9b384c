"""Access rules for reading and changing a user's profile resources."""

from __future__ import annotations

import uuid

from services.common.auth import Identity
from services.common.errors import not_found


def require_self_or_admin(caller: Identity, user_id: uuid.UUID) -> None:
    """Raise 404 unless the caller is the user or an administrator.

    A 404 rather than a 403, so that users cannot probe which ids exist.
    """
    if not caller.is_admin and caller.user_id != user_id:
        raise not_found("user")
