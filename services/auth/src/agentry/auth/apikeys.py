"""API keys: long-lived secrets that act for one account, shown once and stored as a hash."""

from __future__ import annotations

import logging
import secrets
import time
import uuid

from .domain import ApiKey, Principal, VerifiedToken, text_problem
from .errors import ApiKeyNotFound, InvalidName, InvalidToken
from .ports import ApiKeyRepository, Clock, IdFactory, UserRepository
from .service import secret_hash

logger = logging.getLogger(__name__)

# Recognisable in a leaked file or a secret scanner's rules, and by the gateway before any lookup.
API_KEY_PREFIX = "agentry_sk_"
NAME_MAX_LENGTH = 200
_KEY_MAX_LENGTH = 128
_DISPLAY_CHARS = len(API_KEY_PREFIX) + 6
# last_used_at is written at most this often per key, so a busy key costs no write per request.
_TOUCH_EVERY_SECONDS = 60.0


class ApiKeyService:
    def __init__(
        self,
        keys: ApiKeyRepository,
        users: UserRepository,
        *,
        clock: Clock = time.time,
        new_id: IdFactory = lambda: str(uuid.uuid4()),
    ) -> None:
        self._keys, self._users, self._clock, self._new_id = keys, users, clock, new_id

    async def create(self, principal: Principal, name: str, expires_at: float | None) -> tuple[ApiKey, str]:
        """The stored key and its secret; the secret is not kept anywhere."""
        name = name.strip()
        problem = "is required" if not name else text_problem(name, max_length=NAME_MAX_LENGTH)
        if problem:
            raise InvalidName(f"name: {problem}")
        now = self._clock()
        if expires_at is not None and expires_at <= now:
            raise InvalidName("expires_at: must be in the future", code="invalid_expires_at")
        # A key acts for its account, so only a member of that account may create one.
        if await self._users.find_principal(principal.user_id, principal.account_id) is None:
            raise InvalidToken("invalid token: the user or membership no longer exists")
        secret = API_KEY_PREFIX + secrets.token_urlsafe(32)
        key = ApiKey(
            api_key_id=self._new_id(),
            account_id=principal.account_id,
            user_id=principal.user_id,
            name=name,
            display_prefix=secret[:_DISPLAY_CHARS],
            created_at=now,
            expires_at=expires_at,
        )
        await self._keys.add(key, secret_hash(secret))
        logger.info("api key %s created for account %s", key.api_key_id, key.account_id)
        return key, secret

    async def list(self, account_id: str) -> list[ApiKey]:
        return await self._keys.list_for_account(account_id)

    async def revoke(self, account_id: str, api_key_id: str) -> None:
        if not await self._keys.revoke(account_id, api_key_id, now=self._clock()):
            # Another account's key and no key at all answer the same.
            raise ApiKeyNotFound(f"api key {api_key_id} not found")
        logger.info("api key %s revoked", api_key_id)

    async def verify(self, secret: str) -> VerifiedToken:
        if not secret.startswith(API_KEY_PREFIX) or len(secret) > _KEY_MAX_LENGTH:
            raise InvalidToken("invalid api key")
        key = await self._keys.find_by_hash(secret_hash(secret))
        now = self._clock()
        if key is None or key.revoked_at is not None:
            raise InvalidToken("invalid api key")
        if key.expires_at is not None and now >= key.expires_at:
            raise InvalidToken("api key has expired", code="api_key_expired")
        member = await self._users.find_principal(key.user_id, key.account_id)
        if member is None:
            raise InvalidToken("invalid api key: its creator is no longer a member of the account")
        await self._keys.touch(key.api_key_id, now=now, every=_TOUCH_EVERY_SECONDS)
        principal = Principal(
            user_id=member.user_id, account_id=member.account_id, email=member.email, api_key_id=key.api_key_id
        )
        return VerifiedToken(principal=principal, expires_at=int(key.expires_at or 0))
