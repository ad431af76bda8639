"""Users, accounts and principals, and the rules for emails and passwords: no I/O, no vendors."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from .errors import InvalidEmail, InvalidPassword

OWNER = "owner"
ADMIN = "admin"
MEMBER = "member"
ROLES = (OWNER, ADMIN, MEMBER)
# Who may do what: a role can act on roles at or below its own rank.
ROLE_RANK = {OWNER: 3, ADMIN: 2, MEMBER: 1}
TEAM_NAME_MAX_LENGTH = 200
PASSWORD_MIN_LENGTH = 8
# An upper bound keeps a single request from making the hasher chew on megabytes.
PASSWORD_MAX_LENGTH = 1024
EMAIL_MAX_LENGTH = 254

# Deliberately loose: one @, no spaces, a dotted domain. Deliverability is the mailer's job.
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s.]+(\.[^@\s.]+)+$")


@dataclass(frozen=True)
class User:
    user_id: str
    email: str
    password_hash: str
    created_at: float


@dataclass(frozen=True)
class Account:
    account_id: str
    name: str
    personal: bool
    created_at: float


@dataclass(frozen=True)
class Membership:
    account_id: str
    user_id: str
    role: str
    created_at: float


@dataclass(frozen=True)
class AccountMembership:
    account: Account
    role: str


@dataclass(frozen=True)
class Member:
    user_id: str
    email: str
    role: str
    joined_at: float


@dataclass(frozen=True)
class Invitation:
    invitation_id: str
    account_id: str
    email: str
    role: str
    invited_by: str
    created_at: float
    expires_at: float
    accepted_at: float | None = None


@dataclass(frozen=True)
class Principal:
    """Who a verified caller is, and which account they act for."""

    user_id: str
    account_id: str
    email: str
    # The session (refresh-token family) behind an access token; "" for API keys.
    session_id: str = ""
    # The API key the caller authenticated with; "" for session tokens.
    api_key_id: str = ""


@dataclass(frozen=True)
class Session:
    """One sign-in: its refresh tokens form a family that is revoked together."""

    session_id: str
    user_id: str
    account_id: str
    created_at: float
    revoked_at: float | None = None


@dataclass(frozen=True)
class RefreshRecord:
    """What the store knows about a presented refresh token (only its hash is stored)."""

    session: Session
    expires_at: float
    used_at: float | None


@dataclass(frozen=True)
class ApiKey:
    api_key_id: str
    account_id: str
    user_id: str
    name: str
    display_prefix: str
    created_at: float
    expires_at: float | None = None
    last_used_at: float | None = None
    revoked_at: float | None = None


@dataclass(frozen=True)
class SignedUp:
    user_id: str
    account_id: str


@dataclass(frozen=True)
class IssuedToken:
    access_token: str
    expires_in: int
    expires_at: int
    token_type: str = "Bearer"
    refresh_token: str = ""


@dataclass(frozen=True)
class VerifiedToken:
    principal: Principal
    expires_at: int


def text_problem(value: str, *, max_length: int) -> str | None:
    """Why `value` may not be stored (a NUL, a lone surrogate, too long), or None when it may."""
    if len(value) > max_length:
        return f"must be at most {max_length} characters"
    if "\x00" in value:
        return "must not contain NUL characters"
    # PostgreSQL refuses NUL in text and UTF-8 cannot encode a lone surrogate: both were 500s.
    if any("\ud800" <= ch <= "\udfff" for ch in value):
        return "must be valid Unicode (no lone surrogates)"
    return None


def normalize_email(raw: str) -> str:
    """The canonical (NFC, trimmed, lower-cased) form of `raw`, or InvalidEmail naming the field."""
    problem = text_problem(raw, max_length=EMAIL_MAX_LENGTH + 64)
    if problem:
        raise InvalidEmail(f"email: {problem}")
    email = unicodedata.normalize("NFC", raw).strip().lower()
    if not email:
        raise InvalidEmail("email: is required")
    if len(email) > EMAIL_MAX_LENGTH or not _EMAIL.match(email) or ".." in email:
        raise InvalidEmail("email: is not a valid email address")
    return email


def check_password_policy(password: str, field: str = "password") -> None:
    """Raises InvalidPassword, naming the field, when `password` may not be set."""
    problem = text_problem(password, max_length=PASSWORD_MAX_LENGTH)
    if problem:
        raise InvalidPassword(f"{field}: {problem}")
    if len(password) < PASSWORD_MIN_LENGTH:
        raise InvalidPassword(f"{field}: must be at least {PASSWORD_MIN_LENGTH} characters")


def personal_account_name(email: str) -> str:
    return f"{email.split('@', 1)[0]}'s account"
