"""Client channels that carry the internal credential, the request id and a default deadline."""

from __future__ import annotations

import grpc

from .context import ACCOUNT_ID_KEY, REQUEST_ID_KEY, RUN_ID_KEY, account_id_var, request_id_var, run_id_var
from .errors import ERROR_CODE_KEY
from .interceptors import AUTHORIZATION_KEY
from .metrics import client_interceptors
from .tls import TlsFiles
from .tracing import grpc_client_metadata


def _details(details: grpc.aio.ClientCallDetails, token: str, default_timeout: float | None):
    metadata = grpc.aio.Metadata()
    for key, value in details.metadata or ():
        metadata.add(key, value)
    metadata[AUTHORIZATION_KEY] = f"Bearer {token}"
    request_id = request_id_var.get()
    if request_id != "-" and REQUEST_ID_KEY not in metadata:
        metadata[REQUEST_ID_KEY] = request_id
    run_id = run_id_var.get()
    if run_id != "-" and RUN_ID_KEY not in metadata:
        metadata[RUN_ID_KEY] = run_id
    account_id = account_id_var.get()
    if account_id != "-" and ACCOUNT_ID_KEY not in metadata:
        metadata[ACCOUNT_ID_KEY] = account_id
    grpc_client_metadata(metadata)  # traceparent, when tracing is on
    timeout = details.timeout if details.timeout is not None else default_timeout
    return grpc.aio.ClientCallDetails(details.method, timeout, metadata, details.credentials, details.wait_for_ready)


class _Unary(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, token: str, timeout: float | None) -> None:
        self._token, self._timeout = token, timeout

    async def intercept_unary_unary(self, continuation, client_call_details, request):
        return await continuation(_details(client_call_details, self._token, self._timeout), request)


class _UnaryStream(grpc.aio.UnaryStreamClientInterceptor):
    def __init__(self, token: str, timeout: float | None) -> None:
        self._token, self._timeout = token, timeout

    async def intercept_unary_stream(self, continuation, client_call_details, request):
        return await continuation(_details(client_call_details, self._token, self._timeout), request)


class _StreamUnary(grpc.aio.StreamUnaryClientInterceptor):
    def __init__(self, token: str, timeout: float | None) -> None:
        self._token, self._timeout = token, timeout

    async def intercept_stream_unary(self, continuation, client_call_details, request_iterator):
        return await continuation(_details(client_call_details, self._token, self._timeout), request_iterator)


def open_channel(
    target: str,
    internal_token: str | None,
    *,
    default_timeout: float | None = 30.0,
    stream_timeout: float | None = None,
    tls: TlsFiles | None = None,
) -> grpc.aio.Channel:
    """An insecure channel (cluster-internal) whose calls carry the service credential.

    Unary calls get `default_timeout` unless the caller sets one; streaming calls (either way) get
    `stream_timeout` (none by default: a command may run long, the caller bounds it).
    With `internal_token=None` nothing is added (used to test that servers refuse such calls).
    """
    interceptors: list[grpc.aio.ClientInterceptor] = client_interceptors()
    if internal_token is not None:
        interceptors += [
            _Unary(internal_token, default_timeout),
            _UnaryStream(internal_token, stream_timeout),
            _StreamUnary(internal_token, stream_timeout),
        ]
    options = [("grpc.keepalive_time_ms", 30_000), ("grpc.max_receive_message_length", 64 * 1024 * 1024)]
    if tls is not None:  # mutual TLS: our certificate out, the server's checked against the CA
        return grpc.aio.secure_channel(target, tls.channel_credentials(), interceptors=interceptors, options=options)
    return grpc.aio.insecure_channel(target, interceptors=interceptors, options=options)


def is_unavailable(exc: BaseException) -> bool:
    """The call failed with UNAVAILABLE: the server could not be reached, or it (or a store
    behind it) is away for now. An idempotent call may be sent again (`db.retrying`'s
    `is_transient`), since it may or may not have taken effect."""
    return isinstance(exc, grpc.aio.AioRpcError) and exc.code() is grpc.StatusCode.UNAVAILABLE


def is_store_unavailable(exc: BaseException) -> bool:
    """UNAVAILABLE from a servicekit server whose database or Redis failed under the handler (the
    interceptor's `unavailable` error code), as opposed to a call lost on the way. A handler that
    reaches its stores before it acts (the sandbox's do) took no effect, so the call may be sent
    again even when it is not idempotent."""
    if not is_unavailable(exc):
        return False
    assert isinstance(exc, grpc.aio.AioRpcError)
    return dict(exc.trailing_metadata() or ()).get(ERROR_CODE_KEY) == "unavailable"
