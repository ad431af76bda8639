"""The seams of the auth service: storage, password hashing, tokens and the identity provider."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from .domain import (
    Account,
    AccountMembership,
    ApiKey,
    Invitation,
    IssuedToken,
    Member,
    Membership,
    Principal,
    RefreshRecord,
    Session,
    SignedUp,
    User,
    VerifiedToken,
)

Clock = Callable[[], float]
IdFactory = Callable[[], str]


class UserRepository(Protocol):
    """The local provider's users, accounts and memberships."""

    async def add_user(self, user: User, account: Account, membership: Membership) -> None:
        """Stores all three in one transaction; EmailTaken if the (normalized) email exists."""
        ...

    async def find_user_by_email(self, email: str) -> User | None: ...

    async def ensure_user(self, user: User, account: Account, membership: Membership) -> str:
        """The user's personal account id, creating user, account and membership on first sight."""
        ...

    async def find_user_by_id(self, user_id: str) -> User | None: ...

    async def personal_account_id(self, user_id: str) -> str | None: ...

    async def set_password_hash(self, user_id: str, password_hash: str) -> None: ...

    async def find_principal(self, user_id: str, account_id: str) -> Principal | None:
        """The principal if the user exists and is still a member of the account."""
        ...


class SessionRepository(Protocol):
    """Sessions and their refresh tokens, stored by hash only."""

    async def add_session(self, session: Session, token_hash: str, expires_at: float) -> None: ...

    async def find_refresh_token(self, token_hash: str) -> RefreshRecord | None: ...

    async def rotate(self, old_hash: str, new_hash: str, *, now: float, expires_at: float) -> bool:
        """Marks `old_hash` used and stores its successor atomically; False if it was already used."""
        ...

    async def find_session(self, session_id: str) -> Session | None: ...

    async def revoke_session(self, session_id: str, *, now: float) -> None: ...

    async def revoke_user_sessions(self, user_id: str, *, now: float, keep: str | None = None) -> int: ...


class ApiKeyRepository(Protocol):
    async def add(self, key: ApiKey, key_hash: str) -> None: ...

    async def list_for_account(self, account_id: str) -> list[ApiKey]:
        """The account's keys that are not revoked."""
        ...

    async def revoke(self, account_id: str, api_key_id: str, *, now: float) -> bool:
        """False when the account has no such (unrevoked) key."""
        ...

    async def find_by_hash(self, key_hash: str) -> ApiKey | None: ...

    async def touch(self, api_key_id: str, *, now: float, every: float) -> None: ...


class AccountRepository(Protocol):
    async def membership(self, user_id: str, account_id: str) -> AccountMembership | None: ...

    async def list_for_user(self, user_id: str) -> list[AccountMembership]: ...

    async def add_account(self, account: Account, owner: Membership) -> None: ...

    async def members(self, account_id: str) -> list[Member]: ...

    async def add_invitation(self, invitation: Invitation, token_hash: str) -> None: ...

    async def accept_invitation(self, token_hash: str, user_id: str, email: str, *, now: float) -> Invitation | None:
        """Single use: marks it accepted and adds the membership; None if unknown, used, expired
        or addressed to another email."""
        ...

    async def set_role(self, account_id: str, user_id: str, role: str, *, keep_an_owner: bool) -> bool: ...

    async def remove_member(self, account_id: str, user_id: str, *, keep_an_owner: bool) -> bool: ...


class PasswordHasher(Protocol):
    async def hash(self, password: str) -> str: ...

    async def verify(self, password_hash: str, password: str) -> bool: ...

    def needs_rehash(self, password_hash: str) -> bool: ...


class TokenSigner(Protocol):
    """Issues and checks access tokens; verify raises InvalidToken or TokenExpired."""

    def issue(self, principal: Principal) -> IssuedToken: ...

    def issue_stream(self, principal: Principal, resource: str) -> IssuedToken: ...

    def verify(self, token: str) -> VerifiedToken: ...

    def jwks(self) -> dict[str, Any]: ...


class IdentityProvider(Protocol):
    """Where identities come from: the local provider now, Supabase GoTrue later.

    The gRPC API talks only to this, so adding a provider is one adapter plus a line in main.
    """

    async def sign_up(self, email: str, password: str) -> SignedUp: ...

    async def sign_in(self, email: str, password: str) -> IssuedToken: ...

    async def verify(self, token: str) -> VerifiedToken: ...

    async def confirm(self, token: str) -> VerifiedToken:
        """verify(), plus asking the identity's source that the session is still live (for
        sensitive actions: API keys, password changes)."""
        ...

    async def refresh(self, refresh_token: str) -> IssuedToken:
        """A new access token and the next refresh token; a reused one revokes its session."""
        ...

    async def sign_out(self, token: str, *, everywhere: bool) -> None: ...

    async def change_password(self, token: str, current_password: str, new_password: str) -> None:
        """Ends every other session of the user."""
        ...

    def issue_stream_token(self, principal: Principal, resource: str) -> IssuedToken:
        """A short-lived token that opens one resource's event stream."""
        ...

    async def jwks(self) -> dict[str, Any]:
        """The public keys that verify this provider's tokens, as a JWKS document."""
        ...
