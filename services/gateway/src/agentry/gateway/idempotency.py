"""Idempotency-Key on the POST routes that create things: a retry gets the first answer, not a
second run or a second message.

Like Stripe's: the key is scoped to the caller's account and the route. The first request with a
key holds it while it runs; its answer (status and JSON body) is then kept for
`idempotency_ttl_seconds` and replayed, with `Idempotent-Replayed: true`, to any retry of the same
request (same route, path parameters and body, compared by a SHA-256 fingerprint). The same key on a
different request is 422 `idempotency_key_reused`; a retry while the first is still running is 409
`idempotency_key_in_use` with `Retry-After: 1`. A first request that failed in a way a retry may
fix (5xx, 429, 499, or an exception) releases the key; other 4xx answers are kept and replayed.

Storage is the `IdempotencyStore` port: `MemoryIdempotencyStore` in one process (`agentry dev`),
`RedisIdempotencyStore` shared by every gateway replica. Storage keys are a SHA-256 of
(account, route, key), so user input never forms a key name.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from .errors import ApiError, UpstreamUnavailable, error_headers, error_response

logger = logging.getLogger(__name__)

KEY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_KEY_LENGTH = 255
KEY_DESCRIPTION = (
    "Makes the request safe to retry: 1 to 255 printable ASCII characters, unique per operation "
    "(a UUID, say). The first request with a key runs; its answer (status and body) is kept for 24 "
    "hours and replayed, with `Idempotent-Replayed: true`, to a retry with the same key and the same "
    "path and body. Keys are scoped to the account and the route. The same key on a different request "
    "is 422 `idempotency_key_reused`; a retry while the first request is still running is 409 "
    "`idempotency_key_in_use` (with `Retry-After`). A first request that failed with a 5xx or 429 "
    "releases the key, so the retry runs again."
)
IDEMPOTENCY_RESPONSES: dict[int | str, dict[str, Any]] = {
    409: {
        "description": "A conflict, or `idempotency_key_in_use`: the first request with this key is "
        "still running (retry after `Retry-After` seconds)."
    },
    422: {
        "description": "An invalid body, a malformed `Idempotency-Key` (`invalid_idempotency_key`), or "
        "`idempotency_key_reused`: the key was used with a different request."
    },
}

_VALID_KEY = re.compile(rf"[\x20-\x7e]{{1,{MAX_KEY_LENGTH}}}")
# How often a retry is told to come back while the first request is running.
IN_USE_RETRY_AFTER_SECONDS = 1


# --- the port ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoredAnswer:
    status: int
    body: bytes  # JSON


@dataclass(frozen=True, slots=True)
class Reserved:
    """The key was free: this request holds it and must complete or release it."""

    token: str


@dataclass(frozen=True, slots=True)
class InFlight:
    """Another request holds the key and has not answered yet."""

    fingerprint: str


@dataclass(frozen=True, slots=True)
class Completed:
    """The key's first request answered; this is its answer."""

    fingerprint: str
    answer: StoredAnswer


Reservation = Reserved | InFlight | Completed


class IdempotencyUnavailable(UpstreamUnavailable):
    """The idempotency store could not be reached (a 503: the request did not run)."""


class IdempotencyStore(Protocol):
    async def reserve(self, key: str, fingerprint: str) -> Reservation:
        """Hold `key` for a first request (held at most `lock_seconds`), or say what holds it."""
        ...

    async def complete(self, key: str, token: str, fingerprint: str, answer: StoredAnswer) -> bool:
        """Replace our hold by the answer, kept for `ttl_seconds`. False if another request holds the key."""
        ...

    async def release(self, key: str, token: str) -> bool:
        """Drop our hold so a retry runs again. False if the key is not held by `token`."""
        ...

    async def close(self) -> None: ...


def new_token() -> str:
    return secrets.token_hex(16)


# --- in-process adapter -------------------------------------------------------------------------


@dataclass(slots=True)
class _Record:
    token: str
    fingerprint: str
    answer: StoredAnswer | None
    expires_at: float


class MemoryIdempotencyStore:
    """One process's keys (`agentry dev`), with the same hold and expiry rules as Redis."""

    def __init__(
        self, *, ttl_seconds: int = 86_400, lock_seconds: int = 60, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._ttl, self._lock, self._clock = ttl_seconds, lock_seconds, clock
        self._records: dict[str, _Record] = {}
        self._expiries: list[tuple[float, int, str]] = []  # heap of (expires_at, n, key)
        self._n = itertools.count()

    def _sweep(self) -> None:
        now = self._clock()
        while self._expiries and self._expiries[0][0] <= now:
            _, _, key = heapq.heappop(self._expiries)
            record = self._records.get(key)
            if record is not None and record.expires_at <= now:
                del self._records[key]

    def _put(self, key: str, record: _Record) -> None:
        self._records[key] = record
        heapq.heappush(self._expiries, (record.expires_at, next(self._n), key))

    async def reserve(self, key: str, fingerprint: str) -> Reservation:
        self._sweep()
        record = self._records.get(key)
        if record is None:
            token = new_token()
            self._put(key, _Record(token, fingerprint, None, self._clock() + self._lock))
            return Reserved(token)
        if record.answer is None:
            return InFlight(record.fingerprint)
        return Completed(record.fingerprint, record.answer)

    async def complete(self, key: str, token: str, fingerprint: str, answer: StoredAnswer) -> bool:
        self._sweep()
        record = self._records.get(key)
        if record is not None and record.token != token:
            return False
        self._put(key, _Record(token, fingerprint, answer, self._clock() + self._ttl))
        return True

    async def release(self, key: str, token: str) -> bool:
        self._sweep()
        record = self._records.get(key)
        if record is None or record.token != token or record.answer is not None:
            return False
        del self._records[key]
        return True

    async def close(self) -> None:
        self._records.clear()
        self._expiries.clear()


# --- Redis adapter ------------------------------------------------------------------------------

# A record is one JSON string: {"s": "p"|"d", "t": token, "f": fingerprint, "c": status, "b": body}.
# Complete: overwrite our hold (or a lapsed one) with the answer; never another request's hold.
_COMPLETE = """
local v = redis.call('GET', KEYS[1])
if v and cjson.decode(v)['t'] ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
return 1
"""
# Release: delete the key only while it is still our unanswered hold.
_RELEASE = """
local v = redis.call('GET', KEYS[1])
if not v then
  return 0
end
local r = cjson.decode(v)
if r['t'] ~= ARGV[1] or r['s'] ~= 'p' then
  return 0
end
return redis.call('DEL', KEYS[1])
"""


class RedisIdempotencyStore:
    """Keys shared by every gateway replica: `SET NX EX` holds, answers kept with `EX ttl`."""

    def __init__(
        self,
        redis_url: str,
        *,
        key_prefix: str = "agentry:idem:",
        ttl_seconds: int = 86_400,
        lock_seconds: int = 60,
        socket_timeout: float = 5.0,
    ) -> None:
        from redis import asyncio as aioredis

        from agentry.servicekit.eventstream.redis import connection_pool

        self._prefix, self._ttl, self._lock = key_prefix, ttl_seconds, lock_seconds
        # servicekit's pool: after a Redis restart a pooled connection is dead, and its next
        # command reconnects and is sent again at once instead of failing (from_url's does not).
        self._redis = aioredis.Redis.from_pool(connection_pool(redis_url, socket_timeout=socket_timeout))
        self._complete = self._redis.register_script(_COMPLETE)
        self._release = self._redis.register_script(_RELEASE)

    def key(self, key: str) -> str:
        return f"{self._prefix}{key}"

    async def _call(self, what: str, op: Awaitable[Any]) -> Any:
        from redis.exceptions import RedisError

        try:
            return await op
        except (RedisError, OSError) as exc:
            raise IdempotencyUnavailable(f"idempotency store: cannot {what}: {exc}") from exc

    async def reserve(self, key: str, fingerprint: str) -> Reservation:
        token = new_token()
        hold = orjson.dumps({"s": "p", "t": token, "f": fingerprint})
        for _ in range(3):
            if await self._call("reserve", self._redis.set(self.key(key), hold, nx=True, ex=self._lock)):
                return Reserved(token)
            raw = await self._call("read", self._redis.get(self.key(key)))
            if raw is None:
                continue  # released or lapsed between SET and GET: try to take it again
            record = orjson.loads(raw)
            if record["s"] == "p":
                return InFlight(record["f"])
            return Completed(record["f"], StoredAnswer(int(record["c"]), record["b"].encode()))
        return InFlight(fingerprint)  # taken and released over and over: busy

    async def complete(self, key: str, token: str, fingerprint: str, answer: StoredAnswer) -> bool:
        record = orjson.dumps({"s": "d", "t": token, "f": fingerprint, "c": answer.status, "b": answer.body.decode()})
        done = await self._call(
            "store the answer", self._complete(keys=[self.key(key)], args=[token, record, self._ttl])
        )
        return bool(done)

    async def release(self, key: str, token: str) -> bool:
        return bool(await self._call("release", self._release(keys=[self.key(key)], args=[token])))

    async def close(self) -> None:
        await self._redis.aclose()


# --- requests -----------------------------------------------------------------------------------


def validate_key(value: str) -> str:
    if not _VALID_KEY.fullmatch(value):
        raise ApiError(
            422, "invalid_idempotency_key", f"{KEY_HEADER} must be 1 to {MAX_KEY_LENGTH} printable ASCII characters"
        )
    return value


def _digest(value: Any) -> str:
    return hashlib.sha256(orjson.dumps(value, option=orjson.OPT_SORT_KEYS)).hexdigest()


def scoped_key(account_id: str, route: str, key: str) -> str:
    """The storage key: one per (account, route, key), with no user input in it verbatim."""
    return _digest([account_id, route, key])


def fingerprint(route: str, params: dict[str, str], body: BaseModel | None) -> str:
    """SHA-256 of the canonical JSON of the request: route, path parameters and (validated) body."""
    return _digest(
        {"route": route, "params": params, "body": body.model_dump(mode="json") if body is not None else None}
    )


def retry_may_succeed(status: int) -> bool:
    """Answers not kept for replay: the request may well succeed when tried again."""
    return status >= 500 or status in (429, 499)


def _replay(answer: StoredAnswer) -> Response:
    headers = {**(error_headers(answer.status) or {}), REPLAYED_HEADER: "true"}
    return Response(answer.body, status_code=answer.status, media_type="application/json", headers=headers)


async def idempotent(
    store: IdempotencyStore,
    *,
    key: str | None,
    account_id: str,
    route: str,
    params: dict[str, str],
    body: BaseModel | None,
    status: int,
    call: Callable[[], Awaitable[Any]],
) -> Any:
    """Runs `call` once per key: without a key it just runs; with one, retries get the first answer."""
    if key is None:
        return await call()
    validate_key(key)
    skey = scoped_key(account_id, route, key)
    request_print = fingerprint(route, params, body)
    held = await store.reserve(skey, request_print)
    if not isinstance(held, Reserved):
        if held.fingerprint != request_print:
            raise ApiError(
                422,
                "idempotency_key_reused",
                f"this {KEY_HEADER} was already used with a different request; use a new key",
            )
        if isinstance(held, InFlight):
            raise ApiError(
                409,
                "idempotency_key_in_use",
                f"a request with this {KEY_HEADER} is still running; retry shortly",
                headers={"Retry-After": str(IN_USE_RETRY_AFTER_SECONDS)},
            )
        return _replay(held.answer)

    try:
        result = await call()
    except BaseException as exc:
        response = error_response(exc) if isinstance(exc, Exception) else None
        if response is None or retry_may_succeed(response.status_code):
            await _release(store, skey, held.token)
            raise
        await _complete(
            store, skey, held.token, request_print, StoredAnswer(response.status_code, bytes(response.body))
        )
        return response
    response = JSONResponse(jsonable_encoder(result), status_code=status)
    await _complete(store, skey, held.token, request_print, StoredAnswer(status, bytes(response.body)))
    return response


async def _complete(store: IdempotencyStore, key: str, token: str, request_print: str, answer: StoredAnswer) -> None:
    # The request has run: answer it even if its answer cannot be kept (the hold then lapses).
    try:
        if not await store.complete(key, token, request_print, answer):
            logger.warning("idempotency hold lapsed before the answer was stored; another request holds the key")
    except IdempotencyUnavailable as exc:
        logger.error("%s; answering without keeping the answer", exc)


async def _release(store: IdempotencyStore, key: str, token: str) -> None:
    try:
        await store.release(key, token)
    except IdempotencyUnavailable as exc:
        logger.error("%s; the hold lapses by itself", exc)
