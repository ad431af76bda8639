"""The auth service's named failures; servicekit's interceptor maps them to gRPC status codes."""

from __future__ import annotations

from agentry.servicekit.errors import AlreadyExists, InvalidArgument, NotFound, Unauthenticated


class InvalidEmail(InvalidArgument):
    code = "invalid_email"


class InvalidPassword(InvalidArgument):
    code = "invalid_password"


class EmailTaken(AlreadyExists):
    code = "email_taken"


class InvalidCredentials(Unauthenticated):
    """Wrong email or wrong password: one message for both, so emails cannot be enumerated."""

    code = "invalid_credentials"

    def __init__(self) -> None:
        super().__init__("invalid email or password")


class InvalidToken(Unauthenticated):
    code = "invalid_token"


class TokenExpired(InvalidToken):
    code = "token_expired"


class RefreshTokenReused(InvalidToken):
    """A refresh token came back after it was exchanged: its whole session has been revoked."""

    code = "refresh_token_reused"


class ApiKeyNotFound(NotFound):
    code = "api_key_not_found"


class InvalidName(InvalidArgument):
    code = "invalid_name"


class SigningKeyError(RuntimeError):
    """The configured or stored signing key is missing or unusable: the service must not start."""
