"""Text from a model or a tool, made storable, streamable and sendable whatever it holds.

Only what cannot be represented everywhere is replaced: an unpaired surrogate (not UTF-8: orjson,
PostgreSQL and every provider refuse it) and NUL (PostgreSQL text refuses it, providers choke on
it). Each becomes U+FFFD REPLACEMENT CHARACTER, the mark that something was replaced. Other
control characters and escape sequences are valid text: JSON escapes them on the way out.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

REPLACEMENT = "\ufffd"
_UNSAFE = re.compile("[\x00\ud800-\udfff]")


def is_safe(text: str) -> bool:
    if text.isascii():
        return "\x00" not in text
    return _UNSAFE.search(text) is None


def clean(text: str) -> str:
    """`text` with each unpaired surrogate and NUL replaced by U+FFFD.

    Python strings never hold a valid surrogate pair as two code points except when decoded with
    `surrogatepass`/`surrogateescape`; a pair that is there is joined first, so nothing valid is lost.
    """
    if is_safe(text):
        return text
    try:
        text = text.encode("utf-16", "surrogatepass").decode("utf-16")
    except UnicodeDecodeError:
        pass
    return _UNSAFE.sub(REPLACEMENT, text)


def clean_value(value: Any) -> Any:
    """Every string inside a JSON-like value (dict keys too), cleaned."""
    if isinstance(value, str):
        return clean(value)
    if isinstance(value, dict):
        return {clean(k) if isinstance(k, str) else k: clean_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_value(v) for v in value]
    return value


def dumps(value: Any) -> bytes:
    """orjson.dumps, except that unsafe text is replaced instead of failing (surrogates) or being
    stored as NUL: the fast path costs one search of the encoded bytes."""
    try:
        data = orjson.dumps(value)
    except orjson.JSONEncodeError:
        return orjson.dumps(clean_value(value))
    if b"\\u0000" in data:
        return orjson.dumps(clean_value(value))
    return data
