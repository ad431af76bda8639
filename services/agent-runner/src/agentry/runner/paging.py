"""Opaque page cursors: the sort key of the last item of a page, so the next page starts after it."""

from __future__ import annotations

import base64
import math

import orjson

from .errors import InvalidInput

_MAX_CURSOR_CHARS = 512


def encode_cursor(*key: float | int | str) -> str:
    """A URL-safe token for a sort key (floats round-trip exactly through JSON)."""
    return base64.urlsafe_b64encode(orjson.dumps(list(key))).decode().rstrip("=")


def decode_cursor(value: str, *types: type) -> tuple | None:
    """The sort key in `value` (None for ""), checked against `types`; InvalidInput("cursor: ...")
    for anything that is not a cursor this service issued with that shape."""
    if not value:
        return None
    try:
        if len(value) > _MAX_CURSOR_CHARS:
            raise ValueError
        key = orjson.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
        if not isinstance(key, list) or len(key) != len(types):
            raise ValueError
        parts = []
        for part, kind in zip(key, types, strict=True):
            if kind is float and isinstance(part, int) and not isinstance(part, bool):
                part = float(part)
            if type(part) is not kind or (kind is float and not math.isfinite(part)):
                raise ValueError
            parts.append(part)
    except ValueError:  # binascii.Error and orjson.JSONDecodeError are ValueErrors
        raise InvalidInput("cursor: not a cursor from this listing (pass next_cursor as it was given)") from None
    return tuple(parts)


def page_size(limit: int, *, default: int, maximum: int) -> int:
    """`limit` checked: 0 means `default`; negative or above `maximum` is InvalidInput."""
    if limit == 0:
        return default
    if limit < 0 or limit > maximum:
        raise InvalidInput(f"limit: must be between 1 and {maximum}")
    return limit
