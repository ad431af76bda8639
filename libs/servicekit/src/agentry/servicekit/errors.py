"""The root of every domain error and its kinds; `grpc_status.py` maps the kinds to gRPC status codes."""

from __future__ import annotations


class DomainError(Exception):
    """A failure a caller can act on. `code` is machine-readable, the message is for people."""

    code: str = "failed_precondition"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class InvalidArgument(DomainError):
    code = "invalid_argument"


class NotFound(DomainError):
    code = "not_found"


class AlreadyExists(DomainError):
    code = "already_exists"


class PermissionDenied(DomainError):
    code = "permission_denied"


class Unauthenticated(DomainError):
    code = "unauthenticated"


class FailedPrecondition(DomainError):
    code = "failed_precondition"


class ResourceExhausted(DomainError):
    code = "resource_exhausted"


class Unavailable(DomainError):
    code = "unavailable"


# Trailing-metadata key that carries DomainError.code across the wire.
ERROR_CODE_KEY = "x-agentry-error-code"
# The code a server answers when the caller lacks the internal service credential: a deployment
# fault (services disagree on AGENTRY_INTERNAL_TOKEN), never the end user's.
INTERNAL_CREDENTIAL_REFUSED = "internal_credential_refused"
