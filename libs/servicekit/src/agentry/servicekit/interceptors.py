"""Server interceptors: request ids, service-to-service authentication, domain error mapping."""

from __future__ import annotations

import contextlib
import hmac
import logging
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from grpc.aio import AbortError

from .context import (
    ACCOUNT_ID_KEY,
    REQUEST_ID_KEY,
    RUN_ID_KEY,
    account_id_var,
    new_request_id,
    request_id_var,
    run_id_var,
)
from .errors import ERROR_CODE_KEY, INTERNAL_CREDENTIAL_REFUSED, DomainError
from .grpc_status import grpc_status

logger = logging.getLogger(__name__)

AUTHORIZATION_KEY = "authorization"
# Kubernetes' native gRPC probes cannot send credentials; health answers everyone.
UNAUTHENTICATED_PREFIXES = ("/grpc.health.v1.Health/",)


def _metadata(details: grpc.HandlerCallDetails) -> dict[str, str]:
    return {k: v for k, v in (details.invocation_metadata or ()) if isinstance(v, str)}


def _rewrap(
    handler: grpc.RpcMethodHandler,
    unary: Callable[[Callable[..., Awaitable[Any]]], Callable[..., Awaitable[Any]]],
    streaming: Callable[[Callable[..., Any]], Callable[..., Any]],
) -> grpc.RpcMethodHandler:
    """Returns `handler` with its behaviour wrapped, keeping its (de)serializers."""
    kwargs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(unary(handler.unary_unary), **kwargs)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(streaming(handler.unary_stream), **kwargs)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(unary(handler.stream_unary), **kwargs)
    if handler.stream_stream:
        return grpc.stream_stream_rpc_method_handler(streaming(handler.stream_stream), **kwargs)
    raise TypeError(f"{handler!r} has no behaviour to wrap")


def _is_store_unavailable(exc: BaseException) -> bool:
    try:
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError
    except ImportError:  # pragma: no cover - redis is a dependency of every service
        return False
    return isinstance(exc, (RedisConnectionError, RedisTimeoutError))


def is_transient_db_error(exc: BaseException) -> bool:
    """db.is_transient_db_error, imported only in a process that has a database: SQLAlchemy
    costs a service without one (the gateway) ~15 MB and a second of import for nothing."""
    if "agentry.servicekit.db" not in sys.modules:
        return False  # no engine was ever made here, so no database error can reach us
    from .db import is_transient_db_error as check

    return check(exc)


async def _abort_for(exc: BaseException, context: grpc.aio.ServicerContext, method: str) -> None:
    if isinstance(exc, DomainError):
        await context.abort(grpc_status(exc), exc.message, trailing_metadata=((ERROR_CODE_KEY, exc.code),))
    if is_transient_db_error(exc) or _is_store_unavailable(exc):
        # The database (or Redis) is restarting, refusing connections or out of them: the caller
        # may retry shortly (the gateway answers 503 with Retry-After), it is not our bug.
        logger.warning("%s: a backing store is unavailable: %r", method, exc)
        await context.abort(
            grpc.StatusCode.UNAVAILABLE,
            "a backing store is unavailable; try again",
            trailing_metadata=((ERROR_CODE_KEY, "unavailable"), ("retry-after", "1")),
        )
    logger.error("unhandled error in %s", method, exc_info=exc)
    await context.abort(grpc.StatusCode.INTERNAL, "internal error", trailing_metadata=((ERROR_CODE_KEY, "internal"),))


class ContextInterceptor(grpc.aio.ServerInterceptor):
    """Binds the request and run ids from metadata, and maps DomainError to a status code.

    Mapping lives here, once, so handlers just raise.
    """

    async def intercept_service(self, continuation, handler_call_details):  # type: ignore[override]
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        meta = _metadata(handler_call_details)
        request_id = meta.get(REQUEST_ID_KEY) or new_request_id()
        run_id = meta.get(RUN_ID_KEY, "-")
        account_id = meta.get(ACCOUNT_ID_KEY, "-")
        method = handler_call_details.method

        def unary(behaviour):
            async def wrapper(request, context):
                request_id_var.set(request_id)
                run_id_var.set(run_id)
                account_id_var.set(account_id)
                try:
                    return await behaviour(request, context)
                except AbortError:
                    raise
                except Exception as exc:  # noqa: BLE001 - mapped to a status, never swallowed
                    await _abort_for(exc, context, method)

            return wrapper

        def streaming(behaviour):
            async def wrapper(request, context):
                request_id_var.set(request_id)
                run_id_var.set(run_id)
                account_id_var.set(account_id)
                try:
                    # aclosing: a cancelled call finalises the handler's generator now, so its
                    # cleanup (killing a sandbox process, say) never waits for the GC.
                    async with contextlib.aclosing(behaviour(request, context)) as items:
                        async for item in items:
                            yield item
                except AbortError:
                    raise
                except Exception as exc:  # noqa: BLE001
                    await _abort_for(exc, context, method)

            return wrapper

        return _rewrap(handler, unary, streaming)


class InternalAuthInterceptor(grpc.aio.ServerInterceptor):
    """Refuses any call that does not carry the internal service credential."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

    async def intercept_service(self, continuation, handler_call_details):  # type: ignore[override]
        method = handler_call_details.method
        if method.startswith(UNAUTHENTICATED_PREFIXES):
            return await continuation(handler_call_details)
        presented = _metadata(handler_call_details).get(AUTHORIZATION_KEY, "").encode()
        if hmac.compare_digest(presented, self._expected):
            return await continuation(handler_call_details)
        handler = await continuation(handler_call_details)
        if handler is None:
            return None

        async def refuse(request, context):
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                "missing or invalid internal service credential",
                trailing_metadata=((ERROR_CODE_KEY, INTERNAL_CREDENTIAL_REFUSED),),
            )

        async def refuse_stream(request, context):
            await refuse(request, context)
            yield  # pragma: no cover - abort raises first

        return _rewrap(handler, lambda _b: refuse, lambda _b: refuse_stream)


class TracingInterceptor(grpc.aio.ServerInterceptor):
    """Each call is a SERVER span continuing the caller's `traceparent` (servicekit.tracing),
    current in the handler so the calls it makes carry it on. Installed only when tracing is on."""

    async def intercept_service(self, continuation, handler_call_details):  # type: ignore[override]
        from . import tracing

        handler = await continuation(handler_call_details)
        if handler is None or not tracing.enabled():
            return handler
        method = handler_call_details.method
        if method.startswith(UNAUTHENTICATED_PREFIXES):
            return handler  # health probes: no trace

        def unary(behaviour):
            async def wrapper(request, context):
                span = tracing.grpc_server_span(method, _metadata(handler_call_details))
                token = tracing.attach_span(span)
                try:
                    result = await behaviour(request, context)
                except BaseException as exc:
                    tracing.end_span(
                        span, exc if not isinstance(exc, AbortError) else None, code=str(context.code() or "") or None
                    )
                    raise
                else:
                    tracing.end_span(span)
                    return result
                finally:
                    tracing.detach(token)

            return wrapper

        def streaming(behaviour):
            async def wrapper(request, context):
                span = tracing.grpc_server_span(method, _metadata(handler_call_details))
                token = tracing.attach_span(span)
                error: BaseException | None = None
                try:
                    async with contextlib.aclosing(behaviour(request, context)) as items:
                        async for item in items:
                            yield item
                except BaseException as exc:
                    error = exc
                    raise
                finally:
                    tracing.end_span(span, error if not isinstance(error, (AbortError, GeneratorExit)) else None)
                    tracing.detach(token)

            return wrapper

        return _rewrap(handler, unary, streaming)
