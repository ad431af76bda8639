"""Provider errors by class, and the retry policy: transient ones only, as long as the provider asks."""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import ModuleType
from typing import TYPE_CHECKING

from agentpress.errors import ModelCallError, ModelTransientError

if TYPE_CHECKING:
    from agentpress.models import Model, ModelDelta, ModelRequest


class ErrorKind(StrEnum):
    RATE_LIMIT = "rate_limit"
    OVERLOADED = "overloaded"
    TIMEOUT = "timeout"
    SERVER_ERROR = "server_error"
    CONNECTION = "connection"
    CONTEXT_WINDOW = "context_window"
    AUTH = "auth"
    BAD_REQUEST = "bad_request"
    CONTENT_FILTER = "content_filter"
    UNKNOWN = "unknown"


TRANSIENT = frozenset(
    {ErrorKind.RATE_LIMIT, ErrorKind.OVERLOADED, ErrorKind.TIMEOUT, ErrorKind.SERVER_ERROR, ErrorKind.CONNECTION}
)

# What a run's error says first: the cause, in words a user can act on.
LABELS = {
    ErrorKind.RATE_LIMIT: "rate limit reached (HTTP 429)",
    ErrorKind.OVERLOADED: "provider overloaded",
    ErrorKind.TIMEOUT: "model call timed out",
    ErrorKind.SERVER_ERROR: "provider server error",
    ErrorKind.CONNECTION: "could not connect to the provider",
    ErrorKind.CONTEXT_WINDOW: "context window exceeded",
    ErrorKind.AUTH: "authentication with the provider failed",
    ErrorKind.BAD_REQUEST: "the provider rejected the request",
    ErrorKind.CONTENT_FILTER: "blocked by the provider's content filter",
    ErrorKind.UNKNOWN: "model call failed",
}

# LiteLLM exception names, most specific first (ContextWindowExceededError is a BadRequestError,
# Timeout an APIConnectionError in some versions).
_BY_TYPE: tuple[tuple[str, ErrorKind], ...] = (
    ("ContextWindowExceededError", ErrorKind.CONTEXT_WINDOW),
    ("ContentPolicyViolationError", ErrorKind.CONTENT_FILTER),
    ("AuthenticationError", ErrorKind.AUTH),
    ("PermissionDeniedError", ErrorKind.AUTH),
    ("RateLimitError", ErrorKind.RATE_LIMIT),
    ("Timeout", ErrorKind.TIMEOUT),
    ("ServiceUnavailableError", ErrorKind.OVERLOADED),
    ("InternalServerError", ErrorKind.SERVER_ERROR),
    ("BadGatewayError", ErrorKind.SERVER_ERROR),
    ("APIConnectionError", ErrorKind.CONNECTION),
    ("BadRequestError", ErrorKind.BAD_REQUEST),
    ("NotFoundError", ErrorKind.BAD_REQUEST),
    ("UnprocessableEntityError", ErrorKind.BAD_REQUEST),
)


def kind_from_status(status: int | None) -> ErrorKind:
    """The error class an HTTP status alone says (429 rate_limit, 503/529 overloaded, 5xx
    server_error, 408 timeout, 401/403 auth, 413 context_window, other 4xx bad_request)."""
    if status is None:
        return ErrorKind.UNKNOWN
    if status == 429:
        return ErrorKind.RATE_LIMIT
    if status in (503, 529):
        return ErrorKind.OVERLOADED
    if status >= 500:
        return ErrorKind.SERVER_ERROR
    if status == 408:
        return ErrorKind.TIMEOUT
    if status in (401, 403):
        return ErrorKind.AUTH
    if status == 413:
        return ErrorKind.CONTEXT_WINDOW
    return ErrorKind.BAD_REQUEST if 400 <= status < 500 else ErrorKind.UNKNOWN


def retry_after_seconds(headers: Mapping[str, str] | None, now: float | None = None) -> float | None:
    """`retry-after-ms` (OpenAI, Azure) or `Retry-After` (seconds or an HTTP date), else None."""
    if not headers:
        return None
    get = headers.get
    ms = get("retry-after-ms") or get("Retry-After-Ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = get("retry-after") or get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, parsed.timestamp() - (now if now is not None else time.time()))


def classify(exc: BaseException, litellm: ModuleType | None = None) -> ModelCallError:
    """Our error for a provider's: the class from LiteLLM's exception type (or the HTTP status),
    the provider's Retry-After, and a message that names the cause."""
    if isinstance(exc, ModelCallError):
        return exc
    kind = None
    if litellm is not None:
        for name, k in _BY_TYPE:
            cls = getattr(litellm, name, None)
            if isinstance(cls, type) and isinstance(exc, cls):
                kind = k
                break
    status = getattr(exc, "status_code", None)
    status = status if isinstance(status, int) else None
    if kind is None:
        kind = kind_from_status(status)
    headers = getattr(exc, "litellm_response_headers", None)
    if headers is None:
        headers = getattr(getattr(exc, "response", None), "headers", None)
    return model_error(kind, f"{type(exc).__name__}: {exc}", status=status, headers=headers)


def model_error(
    kind: ErrorKind, detail: str, *, status: int | None = None, headers: Mapping[str, str] | None = None
) -> ModelCallError:
    """The error `classify` gives, built from what is already known (the direct lane's HTTP status
    and headers): the same kind, Retry-After, transience and message shape, with no LiteLLM."""
    if kind in (ErrorKind.SERVER_ERROR, ErrorKind.UNKNOWN) and ("overloaded" in detail.lower() or status == 529):
        kind = ErrorKind.OVERLOADED
    try:
        retry_after = retry_after_seconds(headers)
    except (TypeError, ValueError):
        retry_after = None
    cls_ = ModelTransientError if kind in TRANSIENT else ModelCallError
    return cls_(f"{LABELS[kind]}: {detail}".strip(), kind=kind.value, retry_after=retry_after, status=status)


def is_transient(error: ModelCallError) -> bool:
    return error.kind in TRANSIENT or (error.kind == ErrorKind.UNKNOWN and isinstance(error, ModelTransientError))


@dataclass(frozen=True)
class RetryPolicy:
    """`attempts` per model call, the first included (3: the first and two retries, as the OpenAI
    SDK does). Between attempts: what the provider's Retry-After asks for, else exponential backoff
    from `initial_wait` up to `max_wait` with jitter. A Retry-After longer than `max_retry_after`
    is not waited for: the call fails at once, naming it. `run_budget`: retries one run may spend
    over all its model calls."""

    attempts: int = 3
    initial_wait: float = 1.0
    max_wait: float = 30.0
    max_retry_after: float = 60.0
    run_budget: int = 10

    def backoff(self, attempt: int, rng: Callable[[float, float], float] = random.uniform) -> float:
        base = min(self.max_wait, self.initial_wait * 2 ** (attempt - 1))
        return rng(base / 2, base)


class RetryBudget:
    """The retries one run has left; shared by every model call of the run."""

    def __init__(self, retries: int) -> None:
        self.left = retries
        self.spent = 0

    def take(self) -> bool:
        if self.left <= 0:
            return False
        self.left -= 1
        self.spent += 1
        return True


@dataclass
class OpenedStream:
    model: Model
    first: ModelDelta | None
    rest: AsyncIterator[ModelDelta]


Sleep = Callable[[float], Awaitable[None]]


async def open_stream(
    models: list[Model],
    request: ModelRequest,
    policy: RetryPolicy,
    budget: RetryBudget | None = None,
    *,
    sleep: Sleep = asyncio.sleep,
) -> OpenedStream:
    """Start a stream on the first model that answers. Transient errors are retried on the same
    model (at most `policy.attempts` attempts, within the run's budget), then the next model is
    tried; any other error fails at once (a context-window error too: the caller compresses or
    picks a larger model). Retries cover the call up to its first delta only: once output has
    been emitted, replaying the call would duplicate it, so a mid-stream failure ends the step."""
    budget = budget if budget is not None else RetryBudget(policy.run_budget)
    errors: list[str] = []
    last: ModelCallError | None = None
    for model in models:
        attempt = 0
        while True:
            attempt += 1
            try:
                stream = aiter(model.stream(request))
                try:
                    first = await anext(stream)
                except StopAsyncIteration:
                    first = None
                return OpenedStream(model, first, stream)
            except ModelCallError as exc:
                last = exc
                if not is_transient(exc):
                    raise ModelCallError(
                        f"{exc} (model {model.name}, not retried)",
                        kind=exc.kind,
                        retry_after=exc.retry_after,
                        status=exc.status,
                    ) from exc
                why = _stop_reason(exc, attempt, policy, budget)
                if why is not None:
                    errors.append(f"{exc} (model {model.name}: {why})")
                    break
                await sleep(max(exc.retry_after or 0.0, policy.backoff(attempt)))
    if last is None:
        raise ModelCallError("no model configured")
    raise ModelCallError("; ".join(errors), kind=last.kind, retry_after=last.retry_after, status=last.status)


def _stop_reason(exc: ModelCallError, attempt: int, policy: RetryPolicy, budget: RetryBudget) -> str | None:
    """Why the call is not retried again, or None to retry (spending one from the budget)."""
    if attempt >= policy.attempts:
        return f"gave up after {attempt} attempts"
    if exc.retry_after is not None and exc.retry_after > policy.max_retry_after:
        return (
            f"the provider asks to retry after {exc.retry_after:g} s, more than the "
            f"{policy.max_retry_after:g} s allowed; not retried"
        )
    if not budget.take():
        return f"the run's retry budget is spent, after {attempt} attempts"
    return None
