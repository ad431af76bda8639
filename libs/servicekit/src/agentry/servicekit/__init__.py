"""gRPC server and client building blocks shared by every Agentry service."""

from .client import open_channel
from .context import configure_logging, request_id_var, run_id_var
from .errors import (
    AlreadyExists,
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from .server import RunningServer, run_service, serve_until_signalled, start_grpc_server
from .settings import DEV_INTERNAL_TOKEN, ServiceSettings

__all__ = [
    "DEV_INTERNAL_TOKEN",
    "AlreadyExists",
    "DomainError",
    "FailedPrecondition",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "RunningServer",
    "ServiceSettings",
    "Unauthenticated",
    "Unavailable",
    "configure_logging",
    "open_channel",
    "request_id_var",
    "run_id_var",
    "run_service",
    "serve_until_signalled",
    "start_grpc_server",
]
