"""The auth service's named failures; servicekit's interceptor maps them to gRPC status codes."""

from __future__ import annotations

from agentry.servicekit.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)


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


class AccountNotFound(NotFound):
    """No such account, or one the caller is not a member of: the two answer the same."""

    code = "account_not_found"


class MemberNotFound(NotFound):
    code = "member_not_found"


class RoleRequired(PermissionDenied):
    """A member of the account whose role does not allow the action (they know it exists)."""

    code = "role_required"


class InvalidInvitation(NotFound):
    """Unknown, used, expired or for another email: one answer for all."""

    code = "invitation_not_found"


class LastOwner(FailedPrecondition):
    code = "last_owner"


class SigningKeyError(RuntimeError):
    """The configured or stored signing key is missing or unusable: the service must not start."""
