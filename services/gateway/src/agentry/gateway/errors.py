"""One table from gRPC status to HTTP status, and the JSON error body every route answers with."""

from __future__ import annotations

import logging

import grpc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from agentry.servicekit.errors import ERROR_CODE_KEY, INTERNAL_CREDENTIAL_REFUSED

logger = logging.getLogger(__name__)

GRPC_TO_HTTP: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
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


class ApiError(Exception):
    """An error the gateway itself answers with (for example 401 before any upstream call)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def error_body(code: str, message: str, **extra) -> dict:
    return {"error": {"code": code, "message": message, **extra}}


def _from_grpc(exc: grpc.aio.AioRpcError) -> tuple[int, str, str]:
    status = GRPC_TO_HTTP.get(exc.code())
    trailing = dict(exc.trailing_metadata() or ())
    if status is None:
        logger.error("upstream failed: %s %s", exc.code().name, exc.details())
        return 502 if exc.code() is not grpc.StatusCode.INTERNAL else 500, "upstream_error", "an internal service failed"
    code = str(trailing.get(ERROR_CODE_KEY) or exc.code().name.lower())
    if code == INTERNAL_CREDENTIAL_REFUSED:
        logger.error("an upstream refused the gateway's internal credential: check AGENTRY_INTERNAL_TOKEN")
        return 502, "upstream_error", "an internal service failed"
    message = exc.details() or exc.code().name
    if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        message = "an internal service is unavailable; try again"
    return status, code, message


def _challenge(status: int) -> dict[str, str] | None:
    # RFC 9110: every 401 names the scheme, whether the gateway or an upstream refused.
    return {"WWW-Authenticate": "Bearer"} if status == 401 else None


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(grpc.aio.AioRpcError)
    async def _grpc(request: Request, exc: grpc.aio.AioRpcError):
        status, code, message = _from_grpc(exc)
        return JSONResponse(error_body(code, message), status_code=status, headers=_challenge(status))

    @app.exception_handler(ApiError)
    async def _api(request: Request, exc: ApiError):
        return JSONResponse(error_body(exc.code, exc.message), status_code=exc.status, headers=_challenge(exc.status))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        fields = [
            {"field": ".".join(str(p) for p in err["loc"]), "message": err["msg"]} for err in exc.errors()
        ]
        summary = "; ".join(f"{f['field']}: {f['message']}" for f in fields)
        return JSONResponse(error_body("validation_error", f"invalid request: {summary}", fields=fields),
                              status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(error_body(code, str(exc.detail)), status_code=exc.status_code)
