"""Users, accounts and principals, and the rules for emails and passwords: no I/O, no vendors."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import InvalidEmail, InvalidPassword

OWNER = "owner"
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
class Principal:
    """Who a verified caller is, and which account they act for."""

    user_id: str
    account_id: str
    email: str


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


@dataclass(frozen=True)
class VerifiedToken:
    principal: Principal
    expires_at: int


def normalize_email(raw: str) -> str:
    """The canonical (trimmed, lower-cased) form of `raw`, or InvalidEmail naming the field."""
    email = raw.strip().lower()
    if not email:
        raise InvalidEmail("email: is required")
    if len(email) > EMAIL_MAX_LENGTH or not _EMAIL.match(email) or ".." in email:
        raise InvalidEmail("email: is not a valid email address")
    return email


def check_password_policy(password: str) -> None:
    """Raises InvalidPassword, naming the field, when `password` may not be set."""
    if len(password) < PASSWORD_MIN_LENGTH:
        raise InvalidPassword(f"password: must be at least {PASSWORD_MIN_LENGTH} characters")
    if len(password) > PASSWORD_MAX_LENGTH:
        raise InvalidPassword(f"password: must be at most {PASSWORD_MAX_LENGTH} characters")


def personal_account_name(email: str) -> str:
    return f"{email.split('@', 1)[0]}'s account"
