"""What agentpress needs to know about a direct-lane model without importing LiteLLM.

Importing LiteLLM costs about 200 MB of RSS and seconds of CPU per process. A host whose models
all take the direct lane (agentpress.openai_stream: `openai/...` models) needs only three things
from it: the provider (is it "openai"?), the price per token and the context window. The last two
come from the table LiteLLM ships and reads itself (`model_prices_and_context_window_backup.json`
in the installed package; agentpress sets `LITELLM_LOCAL_MODEL_COST_MAP=True`, so LiteLLM reads
that same file), found with `importlib.util.find_spec`, which does not import the package.

Every answer here is the one LiteLLM gives, or None ("ask LiteLLM"): anything this module does
not answer exactly (aliases, tiered or special prices, other providers, a model LiteLLM registered
at run time, `USE_LITELLM_PROXY`) falls back to LiteLLM itself, imported then
(`tests/test_catalog.py` checks the answers against LiteLLM's over the whole table). Once LiteLLM
is imported, agentpress asks it directly, as before.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import os
from dataclasses import dataclass
from pathlib import Path

import orjson

__all__ = ["Entry", "Lookup", "answers", "lookup", "openai_provider", "table_available"]

_TABLE = "model_prices_and_context_window_backup.json"
# Price keys that change what LiteLLM charges for plain prompt/completion tokens (tiers by prompt
# size, per-region or per-service multipliers, ...): an entry with one of them is left to LiteLLM.
_SPECIAL_PRICE_MARKERS = ("above", "tier", "_per_second", "per_character", "per_request")
_PLAIN_PRICE_KEYS = frozenset({"input_cost_per_token", "output_cost_per_token"})


@dataclass(frozen=True, slots=True)
class Entry:
    """One OpenAI model of LiteLLM's table, reduced to what agentpress reads."""

    input_cost: float | None
    output_cost: float | None
    plain_price: bool  # input/output per token say it all (no tiers, multipliers, ...)
    window: int | None  # max_input_tokens, else max_tokens


def _falsy(value: str | None) -> bool:
    return value is not None and value.strip().lower() in ("0", "false", "no", "off")


def _truthy(value: str | None) -> bool:
    return value is not None and value.strip().lower() in ("1", "true", "yes", "on")


def _table_path() -> Path | None:
    spec = importlib.util.find_spec("litellm")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        path = Path(location) / _TABLE
        if path.is_file():
            return path
    return None


@functools.cache
def _table() -> tuple[dict[str, Entry], frozenset[str], frozenset[str]] | None:
    """(OpenAI entries by key, every key of the table, every name in an alias group), or None
    when the table cannot be read as LiteLLM reads it."""
    if _falsy(os.environ.get("LITELLM_LOCAL_MODEL_COST_MAP", "True")):
        return None  # LiteLLM fetches its table from the network then: only it knows the prices
    path = _table_path()
    if path is None:
        return None
    try:
        raw = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    if not isinstance(raw, dict):
        return None
    entries: dict[str, Entry] = {}
    aliased: set[str] = set()
    for key, row in raw.items():
        if not isinstance(row, dict):
            continue
        alias_of = row.get("alias_of")
        aliases = row.get("aliases")
        if alias_of or aliases:
            aliased.add(key)
            if isinstance(alias_of, str):
                aliased.add(alias_of)
            if isinstance(aliases, list):
                aliased.update(a for a in aliases if isinstance(a, str))
            continue
        if row.get("litellm_provider") != "openai":
            continue
        price_keys = {k for k in row if "cost" in k or any(m in k for m in _SPECIAL_PRICE_MARKERS)}
        plain = not any(
            any(m in k for m in _SPECIAL_PRICE_MARKERS) for k in price_keys - _PLAIN_PRICE_KEYS
        ) and isinstance(row.get("input_cost_per_token"), int | float)
        plain = plain and row.get("mode") == "chat"  # images, audio, ... are priced by their own rules
        window = row.get("max_input_tokens") or row.get("max_tokens")
        entries[key] = Entry(
            input_cost=_number(row.get("input_cost_per_token")),
            output_cost=_number(row.get("output_cost_per_token")),
            plain_price=plain,
            window=window if isinstance(window, int) else None,
        )
    return entries, frozenset(raw), frozenset(aliased)


def _near_known(name: str, keys: frozenset[str]) -> bool:
    """Whether some row's name starts `name` (as `gpt-4o-mini` starts `gpt-4o-mini-2099-01-01`)."""
    for key in keys:
        bare = key.removeprefix("openai/")
        if bare and name.startswith(bare) and (len(name) == len(bare) or not name[len(bare)].isalnum()):
            return True
    return False


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def table_available() -> bool:
    return _table() is not None


def openai_provider(model: str) -> str | None:
    """The model name sent to the server when LiteLLM would assign `model` to the provider
    "openai" with nothing resolved beyond stripping the prefix (`openai/<name>`), else None (ask
    LiteLLM: a bare name, an alias, another provider, the LiteLLM proxy switch)."""
    if _truthy(os.environ.get("USE_LITELLM_PROXY")):
        return None
    prefix, sep, name = model.partition("/")
    if prefix != "openai" or not sep or not name:
        return None
    table = _table()
    if table is None:
        return None
    _, _, aliased = table
    if model in aliased or name in aliased:
        return None  # LiteLLM resolves "-latest" style aliases to their target
    return name


@dataclass(frozen=True, slots=True)
class Lookup:
    """The outcome of looking `model` up: `known` False means LiteLLM knows no such model (its
    price is unknown, its window too); `entry` None with `known` True means ask LiteLLM."""

    known: bool
    entry: Entry | None


@functools.lru_cache(maxsize=1024)
def lookup(model: str) -> Lookup | None:
    """LiteLLM's table row for an `openai/<name>` model (it tries `openai/<name>`, then `<name>`),
    or None when only LiteLLM can answer."""
    name = openai_provider(model)
    table = _table()
    if name is None or table is None:
        return None
    entries, keys, _ = table
    candidates = [k for k in (model, name) if k in keys]
    if not candidates:
        if _near_known(name, keys):
            return None  # LiteLLM strips date and version suffixes to find a row: let it
        return Lookup(known=False, entry=None)
    entry = entries.get(candidates[0])
    if entry is None:
        return None  # a row of another provider under that name: LiteLLM's rules decide
    return Lookup(known=True, entry=entry)


def answers(model: str) -> bool:
    """Whether this module answers `model`'s provider, price and window without LiteLLM."""
    found = lookup(model)
    return found is not None and (not found.known or (found.entry is not None and found.entry.plain_price))
