"""The local identity provider's use cases: sign up, sign in, verify a token."""

from __future__ import annotations

import hashlib
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
    Session,
    SignedUp,
    User,
    VerifiedToken,
    check_password_policy,
    normalize_email,
    personal_account_name,
)
from .errors import InvalidCredentials, InvalidEmail, InvalidToken, RefreshTokenReused, TokenExpired
from .ports import Clock, IdFactory, PasswordHasher, SessionRepository, TokenSigner, UserRepository

logger = logging.getLogger(__name__)


REFRESH_TOKEN_PREFIX = "agentry_rt_"
_REFRESH_TOKEN_MAX_LENGTH = 128


def _new_id() -> str:
    return str(uuid.uuid4())


def secret_hash(secret: str) -> str:
    """How refresh tokens and API keys are stored: 256 random bits need no slow hash."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


class LocalIdentityProvider:
    """The IdentityProvider port over our own users table, argon2 hashes and ES256 tokens."""

    def __init__(
        self,
        repository: UserRepository,
        hasher: PasswordHasher,
        tokens: TokenSigner,
        sessions: SessionRepository,
        *,
        refresh_ttl_seconds: int = 30 * 86_400,
        clock: Clock = time.time,
        new_id: IdFactory = _new_id,
    ) -> None:
        self._repository, self._hasher, self._tokens = repository, hasher, tokens
        self._sessions, self._refresh_ttl = sessions, refresh_ttl_seconds
        self._clock, self._new_id = clock, new_id
        self._dummy_hash: str | None = None

    async def sign_up(self, email: str, password: str) -> SignedUp:
        email = normalize_email(email)
        check_password_policy(password)
        now = self._clock()
        user = User(
            user_id=self._new_id(), email=email, password_hash=await self._hasher.hash(password), created_at=now
        )
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
        now = self._clock()
        session = Session(session_id=self._new_id(), user_id=user.user_id, account_id=account_id, created_at=now)
        refresh_token = _new_refresh_token()
        await self._sessions.add_session(session, secret_hash(refresh_token), now + self._refresh_ttl)
        logger.info("user %s signed in (session %s)", user.user_id, session.session_id)
        principal = Principal(
            user_id=user.user_id, account_id=account_id, email=user.email, session_id=session.session_id
        )
        return _with_refresh(self._tokens.issue(principal), refresh_token)

    async def refresh(self, refresh_token: str) -> IssuedToken:
        if not refresh_token.startswith(REFRESH_TOKEN_PREFIX) or len(refresh_token) > _REFRESH_TOKEN_MAX_LENGTH:
            raise InvalidToken("invalid refresh token")
        old_hash = secret_hash(refresh_token)
        record = await self._sessions.find_refresh_token(old_hash)
        if record is None:
            raise InvalidToken("invalid refresh token")
        session, now = record.session, self._clock()
        if record.used_at is not None:
            await self._reused(session)
        if session.revoked_at is not None:
            raise InvalidToken("invalid refresh token: the session has ended")
        if now >= record.expires_at:
            raise TokenExpired("refresh token has expired")
        principal = await self._repository.find_principal(session.user_id, session.account_id)
        if principal is None:
            raise InvalidToken("invalid refresh token: the user or membership no longer exists")
        successor = _new_refresh_token()
        # Two refreshes racing with one token: exactly one wins, the other is treated as reuse.
        if not await self._sessions.rotate(
            old_hash, secret_hash(successor), now=now, expires_at=now + self._refresh_ttl
        ):
            await self._reused(session)
        principal = Principal(
            user_id=principal.user_id,
            account_id=principal.account_id,
            email=principal.email,
            session_id=session.session_id,
        )
        return _with_refresh(self._tokens.issue(principal), successor)

    async def _reused(self, session: Session) -> None:
        # A used refresh token coming back means two parties hold the family: end it for both.
        await self._sessions.revoke_session(session.session_id, now=self._clock())
        logger.warning("refresh token reused: session %s of user %s revoked", session.session_id, session.user_id)
        raise RefreshTokenReused("refresh token was already used: the session has been revoked")

    async def sign_out(self, token: str, *, everywhere: bool) -> None:
        principal = (await self.verify(token)).principal
        if not principal.session_id:
            raise InvalidToken("invalid token: signing out needs a session's access token")
        now = self._clock()
        if everywhere:
            await self._sessions.revoke_user_sessions(principal.user_id, now=now)
        else:
            await self._sessions.revoke_session(principal.session_id, now=now)
        logger.info("user %s signed out (%s)", principal.user_id, "all sessions" if everywhere else "one session")

    async def change_password(self, token: str, current_password: str, new_password: str) -> None:
        principal = (await self.verify(token)).principal
        if not principal.session_id:
            raise InvalidToken("invalid token: changing the password needs a session's access token")
        check_password_policy(new_password, field="new_password")
        user = await self._repository.find_user_by_id(principal.user_id)
        if user is None or not await self._hasher.verify(user.password_hash, current_password):
            raise InvalidCredentials()
        await self._repository.set_password_hash(user.user_id, await self._hasher.hash(new_password))
        ended = await self._sessions.revoke_user_sessions(user.user_id, now=self._clock(), keep=principal.session_id)
        logger.info("user %s changed password; %d other session(s) ended", user.user_id, ended)

    async def verify(self, token: str) -> VerifiedToken:
        verified = self._tokens.verify(token)
        claimed = verified.principal
        # A valid signature is not enough: the user may have been deleted or left the account,
        # or signed this session out.
        current = await self._repository.find_principal(claimed.user_id, claimed.account_id)
        if current is None:
            raise InvalidToken("invalid token: the user or membership no longer exists")
        if claimed.session_id:
            session = await self._sessions.find_session(claimed.session_id)
            if session is None or session.revoked_at is not None or session.user_id != claimed.user_id:
                raise InvalidToken("invalid token: the session has ended")
        principal = Principal(
            user_id=current.user_id, account_id=current.account_id, email=current.email, session_id=claimed.session_id
        )
        return VerifiedToken(principal=principal, expires_at=verified.expires_at)

    async def confirm(self, token: str) -> VerifiedToken:
        """verify() already reads the session's row, so a signed-out session is refused at once."""
        return await self.verify(token)

    def issue_stream_token(self, principal: Principal, resource: str) -> IssuedToken:
        return self._tokens.issue_stream(principal, resource)

    async def jwks(self) -> dict[str, Any]:
        return self._tokens.jwks()

    async def _dummy(self) -> str:
        if self._dummy_hash is None:
            self._dummy_hash = await self._hasher.hash(secrets.token_urlsafe(16))
        return self._dummy_hash


def _new_refresh_token() -> str:
    return REFRESH_TOKEN_PREFIX + secrets.token_urlsafe(32)


def _with_refresh(issued: IssuedToken, refresh_token: str) -> IssuedToken:
    return IssuedToken(
        access_token=issued.access_token,
        expires_in=issued.expires_in,
        expires_at=issued.expires_at,
        token_type=issued.token_type,
        refresh_token=refresh_token,
    )
