"""Agentry's auth service: identities, accounts and the access tokens every other service trusts."""

from .config import AuthSettings
from .domain import IssuedToken, Principal, SignedUp, VerifiedToken
from .errors import EmailTaken, InvalidCredentials, InvalidEmail, InvalidPassword, InvalidToken, TokenExpired
from .main import start
from .ports import IdentityProvider
from .service import LocalIdentityProvider
from .tokens import TokenService

__all__ = [
    "AuthSettings",
    "EmailTaken",
    "IdentityProvider",
    "InvalidCredentials",
    "InvalidEmail",
    "InvalidPassword",
    "InvalidToken",
    "IssuedToken",
    "LocalIdentityProvider",
    "Principal",
    "SignedUp",
    "TokenExpired",
    "TokenService",
    "VerifiedToken",
    "start",
]
