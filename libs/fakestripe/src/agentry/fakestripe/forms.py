"""Stripe's request encoding: form fields with bracketed keys (`line_items[0][price]=price_1`).

The stripe library sends POST bodies as application/x-www-form-urlencoded and GET parameters as
a query string, both in this encoding; lists are always indexed (`expand[0]=data.product`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")


class FormError(ValueError):
    """A field name that is not Stripe's bracket encoding."""


def decode(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Nested dicts and lists from `(key, value)` pairs; values stay strings."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        match = _KEY.match(key)
        if match is None:
            raise FormError(f"Invalid parameter name: {key}")
        path = [match.group(1), *re.findall(r"\[([^\[\]]*)\]", match.group(2))]
        node = root
        for i, part in enumerate(path):
            if part == "":  # `a[]=x` (old style): append
                part = str(sum(1 for k in node if k.isdigit()))
            if i == len(path) - 1:
                node[part] = value
            else:
                child = node.setdefault(part, {})
                if not isinstance(child, dict):
                    raise FormError(f"Invalid parameter name: {key}")
                node = child
    return _listify(root)


def _listify(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    converted = {k: _listify(v) for k, v in node.items()}
    if converted and all(k.isdigit() for k in converted):
        return [converted[k] for k in sorted(converted, key=int)]
    return converted


def as_bool(value: Any) -> bool:
    return str(value).lower() == "true"


def as_int(value: Any, name: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise FormError(f"Invalid integer: {name}") from None


def as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, list):
        return value
    return [value]
