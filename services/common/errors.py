"""HTTP errors in the shape FastAPI uses for request validation."""

from __future__ import annotations

from fastapi import HTTPException, status


def invalid_field(location: tuple[str, ...], message: str, kind: str) -> HTTPException:
    """Return a 422 that names the field, like FastAPI's own validation errors."""
    detail = [{"loc": list(location), "msg": message, "type": kind}]
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=detail)


def not_found(what: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"{what} not found")
