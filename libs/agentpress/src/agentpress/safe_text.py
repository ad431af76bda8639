"""Text from a model or a tool, made storable, streamable and sendable whatever it holds.

Only what cannot be represented is replaced, by U+FFFD REPLACEMENT CHARACTER, the mark that
something was replaced:
- an unpaired surrogate can be represented nowhere (it is not UTF-8: orjson, PostgreSQL and every
  provider refuse it): replaced everywhere, when an event or message is serialised;
- NUL is valid JSON (escaped as \\u0000, which is how events and messages are stored and streamed)
  but not PostgreSQL text nor, safely, a provider's input: replaced in plain-text columns and in
  what is sent to a model (`clean`).
Other control characters and escape sequences are valid text: JSON escapes them on the way out.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

REPLACEMENT = "\ufffd"
_SURROGATE = re.compile("[\ud800-\udfff]")
_UNSAFE = re.compile("[\x00\ud800-\udfff]")


def is_safe(text: str) -> bool:
    """No unpaired surrogate and no NUL (the fast path: an ASCII check and one search)."""
    if text.isascii():
        return "\x00" not in text
    return _UNSAFE.search(text) is None


def _join_pairs(text: str) -> str:
    """A valid surrogate pair held as two code points (surrogatepass decoding) becomes its character."""
    try:
        return text.encode("utf-16", "surrogatepass").decode("utf-16")
    except UnicodeDecodeError:
        return text


def clean(text: str) -> str:
    """`text` (the same object when nothing is replaced) with each unpaired surrogate and NUL
    replaced by U+FFFD: for plain-text columns and for what is sent to a model."""
    if is_safe(text):
        return text
    return _UNSAFE.sub(REPLACEMENT, _join_pairs(text))


def encodable(text: str) -> str:
    """`text` with each unpaired surrogate replaced by U+FFFD: what JSON and UTF-8 can hold."""
    if text.isascii() or _SURROGATE.search(text) is None:
        return text
    return _SURROGATE.sub(REPLACEMENT, _join_pairs(text))


def _map(value: Any, fn: Any) -> Any:
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, dict):
        return {fn(k) if isinstance(k, str) else k: _map(v, fn) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_map(v, fn) for v in value]
    return value


def clean_value(value: Any) -> Any:
    """Every string inside a JSON-like value (dict keys too), cleaned (`clean`)."""
    return _map(value, clean)


def dumps(value: Any) -> bytes:
    """orjson.dumps, except that text with an unpaired surrogate is written with U+FFFD instead of
    failing. Nothing is added on the common path: the work happens only when orjson refuses."""
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        return orjson.dumps(_map(value, encodable))
