"""The seams of the auth service: storage, password hashing, tokens and the identity provider."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from .domain import Account, IssuedToken, Membership, Principal, SignedUp, User, VerifiedToken

Clock = Callable[[], float]
IdFactory = Callable[[], str]


class UserRepository(Protocol):
    """The local provider's users, accounts and memberships."""

    async def add_user(self, user: User, account: Account, membership: Membership) -> None:
        """Stores all three in one transaction; EmailTaken if the (normalized) email exists."""

    async def find_user_by_email(self, email: str) -> User | None: ...

    async def personal_account_id(self, user_id: str) -> str | None: ...

    async def set_password_hash(self, user_id: str, password_hash: str) -> None: ...

    async def find_principal(self, user_id: str, account_id: str) -> Principal | None:
        """The principal if the user exists and is still a member of the account."""


class PasswordHasher(Protocol):
    async def hash(self, password: str) -> str: ...

    async def verify(self, password_hash: str, password: str) -> bool: ...

    def needs_rehash(self, password_hash: str) -> bool: ...


class TokenSigner(Protocol):
    """Issues and checks access tokens; verify raises InvalidToken or TokenExpired."""

    def issue(self, principal: Principal) -> IssuedToken: ...

    def verify(self, token: str) -> VerifiedToken: ...

    def jwks(self) -> dict[str, Any]: ...


class IdentityProvider(Protocol):
    """Where identities come from: the local provider now, Supabase GoTrue later.

    The gRPC API talks only to this, so adding a provider is one adapter plus a line in main.
    """

    async def sign_up(self, email: str, password: str) -> SignedUp: ...

    async def sign_in(self, email: str, password: str) -> IssuedToken: ...

    async def verify(self, token: str) -> VerifiedToken: ...

    async def jwks(self) -> dict[str, Any]:
        """The public keys that verify this provider's tokens, as a JWKS document."""
