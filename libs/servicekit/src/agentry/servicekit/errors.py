"""The root of every domain error, and the one table that maps them to gRPC status codes."""

from __future__ import annotations

import grpc


class DomainError(Exception):
    """A failure a caller can act on. `code` is machine-readable, the message is for people."""

    status: grpc.StatusCode = grpc.StatusCode.FAILED_PRECONDITION
    code: str = "failed_precondition"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class InvalidArgument(DomainError):
    status = grpc.StatusCode.INVALID_ARGUMENT
    code = "invalid_argument"


class NotFound(DomainError):
    status = grpc.StatusCode.NOT_FOUND
    code = "not_found"


class AlreadyExists(DomainError):
    status = grpc.StatusCode.ALREADY_EXISTS
    code = "already_exists"


class PermissionDenied(DomainError):
    status = grpc.StatusCode.PERMISSION_DENIED
    code = "permission_denied"


class Unauthenticated(DomainError):
    status = grpc.StatusCode.UNAUTHENTICATED
    code = "unauthenticated"


class FailedPrecondition(DomainError):
    status = grpc.StatusCode.FAILED_PRECONDITION
    code = "failed_precondition"


class ResourceExhausted(DomainError):
    status = grpc.StatusCode.RESOURCE_EXHAUSTED
    code = "resource_exhausted"


class Unavailable(DomainError):
    status = grpc.StatusCode.UNAVAILABLE
    code = "unavailable"


# Trailing-metadata key that carries DomainError.code across the wire.
ERROR_CODE_KEY = "x-agentry-error-code"
# The code a server answers when the caller lacks the internal service credential: a deployment
# fault (services disagree on AGENTRY_INTERNAL_TOKEN), never the end user's.
INTERNAL_CREDENTIAL_REFUSED = "internal_credential_refused"
