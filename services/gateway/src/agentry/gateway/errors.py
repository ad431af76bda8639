"""One table from gRPC status to HTTP status, and the JSON error body every route answers with."""

from __future__ import annotations

import logging
import math

import grpc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from agentry.servicekit.errors import ERROR_CODE_KEY, INTERNAL_CREDENTIAL_REFUSED
from agentry.servicekit.eventstream import EventStreamUnavailable

logger = logging.getLogger(__name__)

GRPC_TO_HTTP: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.INVALID_ARGUMENT: 422,
    grpc.StatusCode.OUT_OF_RANGE: 422,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}

# Error codes whose HTTP status is not the gRPC status's: billing refusing a run for want of
# credit is 402 Payment Required whichever service relayed it (the runner checks it too).
# Codes whose status is not the gRPC default: a webhook whose signature does not verify is 400, as
# Stripe documents it (the 422 rule is for request fields that fail validation).
CODE_TO_HTTP: dict[str, int] = {"insufficient_credits": 402, "invalid_signature": 400}

# Seconds a client should wait before retrying an unavailable upstream (503).
RETRY_AFTER_SECONDS = 1
# Trailing-metadata key an upstream may send with RESOURCE_EXHAUSTED: whole seconds to wait.
RETRY_AFTER_KEY = "retry-after"
# An upstream's retry-after is honoured up to this; anything longer is clamped.
MAX_RETRY_AFTER_SECONDS = 3600
UNAVAILABLE_MESSAGE = "an internal service is unavailable; try again"


class ApiError(Exception):
    """An error the gateway itself answers with (for example 401 before any upstream call)."""

    def __init__(self, status: int, code: str, message: str, *, headers: dict[str, str] | None = None, **extra) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers
        self.extra = extra  # more members of the error body (`fields` of a validation error)


class UpstreamUnavailable(Exception):
    """Something the gateway depends on (other than a gRPC service) could not be reached: 503."""


def error_body(code: str, message: str, **extra) -> dict:
    return {"error": {"code": code, "message": message, **extra}}


def _from_grpc(exc: grpc.aio.AioRpcError) -> tuple[int, str, str]:
    status = GRPC_TO_HTTP.get(exc.code())
    trailing = dict(exc.trailing_metadata() or ())
    if status is None:
        logger.error("upstream failed: %s %s", exc.code().name, exc.details())
        return (
            502 if exc.code() is not grpc.StatusCode.INTERNAL else 500,
            "upstream_error",
            "an internal service failed",
        )
    code = str(trailing.get(ERROR_CODE_KEY) or exc.code().name.lower())
    if code == INTERNAL_CREDENTIAL_REFUSED:
        logger.error("an upstream refused the gateway's internal credential: check AGENTRY_INTERNAL_TOKEN")
        return 502, "upstream_error", "an internal service failed"
    status = CODE_TO_HTTP.get(code, status)
    message = exc.details() or exc.code().name
    if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        message = UNAVAILABLE_MESSAGE
    return status, code, message


def _parse_retry_after(value) -> int | None:
    """Whole seconds from an upstream's `retry-after` (an integer or decimal string), else None."""
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if not isinstance(value, str) or len(value) > 20:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return min(math.ceil(seconds), MAX_RETRY_AFTER_SECONDS)


def _retry_after(exc: grpc.aio.AioRpcError) -> int | None:
    """Retry-After seconds for a gRPC failure the caller should simply retry, else None."""
    if exc.code() is grpc.StatusCode.UNAVAILABLE:
        return RETRY_AFTER_SECONDS
    if exc.code() is grpc.StatusCode.RESOURCE_EXHAUSTED:
        sent = _parse_retry_after(dict(exc.trailing_metadata() or ()).get(RETRY_AFTER_KEY))
        return sent if sent is not None else RETRY_AFTER_SECONDS
    return None


def _challenge(status: int) -> dict[str, str] | None:
    # RFC 9110: every 401 names the scheme, whether the gateway or an upstream refused.
    return {"WWW-Authenticate": "Bearer"} if status == 401 else None


def error_headers(
    status: int, retry_after: int | None = None, extra: dict[str, str] | None = None
) -> dict[str, str] | None:
    headers = {**(_challenge(status) or {}), **(extra or {})}
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return headers or None


def error_response(exc: BaseException) -> JSONResponse | None:
    """The answer the gateway gives for `exc`, or None for an exception it does not map (a bug: 500)."""
    if isinstance(exc, grpc.aio.AioRpcError):
        status, code, message = _from_grpc(exc)
        retry_after = _retry_after(exc) if status in (429, 503) else None
        return JSONResponse(error_body(code, message), status_code=status, headers=error_headers(status, retry_after))
    if isinstance(exc, ApiError):
        return JSONResponse(
            error_body(exc.code, exc.message, **exc.extra),
            status_code=exc.status,
            headers=error_headers(exc.status, extra=exc.headers),
        )
    if isinstance(exc, (EventStreamUnavailable, UpstreamUnavailable, ConnectionError)):
        # Never a 500 for a dependency that cannot be reached: the client can retry.
        logger.error("upstream unreachable: %s", exc)
        return JSONResponse(
            error_body("unavailable", UNAVAILABLE_MESSAGE),
            status_code=503,
            headers=error_headers(503, RETRY_AFTER_SECONDS),
        )
    return None


def install_error_handlers(app: FastAPI) -> None:
    async def _mapped(request: Request, exc: Exception):
        response = error_response(exc)
        if response is None:  # unreachable: only mapped types are registered below
            raise exc
        return response

    for exc_type in (grpc.aio.AioRpcError, ApiError, EventStreamUnavailable, UpstreamUnavailable, ConnectionError):
        app.add_exception_handler(exc_type, _mapped)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        fields = [{"field": ".".join(str(p) for p in err["loc"]), "message": err["msg"]} for err in exc.errors()]
        summary = "; ".join(f"{f['field']}: {f['message']}" for f in fields)
        return JSONResponse(
            error_body("validation_error", f"invalid request: {summary}", fields=fields), status_code=422
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(error_body(code, str(exc.detail)), status_code=exc.status_code)
