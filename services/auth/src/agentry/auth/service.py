"""The local identity provider's use cases: sign up, sign in, verify a token."""

from __future__ import annotations

import logging
import secrets
import time
import uuid
from typing import Any

from .domain import (
    OWNER,
    PASSWORD_MAX_LENGTH,
    Account,
    IssuedToken,
    Membership,
    Principal,
    SignedUp,
    User,
    VerifiedToken,
    check_password_policy,
    normalize_email,
    personal_account_name,
)
from .errors import InvalidCredentials, InvalidEmail, InvalidToken
from .ports import Clock, IdFactory, PasswordHasher, TokenSigner, UserRepository

logger = logging.getLogger(__name__)


def _new_id() -> str:
    return str(uuid.uuid4())


class LocalIdentityProvider:
    """The IdentityProvider port over our own users table, argon2 hashes and ES256 tokens."""

    def __init__(
        self,
        repository: UserRepository,
        hasher: PasswordHasher,
        tokens: TokenSigner,
        *,
        clock: Clock = time.time,
        new_id: IdFactory = _new_id,
    ) -> None:
        self._repository, self._hasher, self._tokens = repository, hasher, tokens
        self._clock, self._new_id = clock, new_id
        self._dummy_hash: str | None = None

    async def sign_up(self, email: str, password: str) -> SignedUp:
        email = normalize_email(email)
        check_password_policy(password)
        now = self._clock()
        user = User(user_id=self._new_id(), email=email, password_hash=await self._hasher.hash(password), created_at=now)
        account = Account(account_id=self._new_id(), name=personal_account_name(email), personal=True, created_at=now)
        membership = Membership(account_id=account.account_id, user_id=user.user_id, role=OWNER, created_at=now)
        await self._repository.add_user(user, account, membership)
        logger.info("signed up user %s with personal account %s", user.user_id, account.account_id)
        return SignedUp(user_id=user.user_id, account_id=account.account_id)

    async def sign_in(self, email: str, password: str) -> IssuedToken:
        # The policy is public, so refusing an oversized password early leaks nothing.
        if len(password) > PASSWORD_MAX_LENGTH:
            raise InvalidCredentials()
        try:
            email = normalize_email(email)
        except InvalidEmail:
            raise InvalidCredentials() from None
        user = await self._repository.find_user_by_email(email)
        if user is None:
            # Spend the same argon2 work as for a real user, so timing does not reveal who exists.
            await self._hasher.verify(await self._dummy(), password)
            raise InvalidCredentials()
        if not await self._hasher.verify(user.password_hash, password):
            raise InvalidCredentials()
        if self._hasher.needs_rehash(user.password_hash):
            await self._repository.set_password_hash(user.user_id, await self._hasher.hash(password))
        account_id = await self._repository.personal_account_id(user.user_id)
        if account_id is None:
            # Sign-up creates the personal account in the same transaction, so this is corruption.
            raise RuntimeError(f"user {user.user_id} has no personal account")
        return self._tokens.issue(Principal(user_id=user.user_id, account_id=account_id, email=user.email))

    async def verify(self, token: str) -> VerifiedToken:
        verified = self._tokens.verify(token)
        claimed = verified.principal
        # A valid signature is not enough: the user may have been deleted or left the account.
        current = await self._repository.find_principal(claimed.user_id, claimed.account_id)
        if current is None:
            raise InvalidToken("invalid token: the user or membership no longer exists")
        return VerifiedToken(principal=current, expires_at=verified.expires_at)

    async def jwks(self) -> dict[str, Any]:
        return self._tokens.jwks()

    async def _dummy(self) -> str:
        if self._dummy_hash is None:
            self._dummy_hash = await self._hasher.hash(secrets.token_urlsafe(16))
        return self._dummy_hash
