"""The IdentityProvider over Supabase Auth (GoTrue), through the `supabase` package's auth client.

Access tokens are verified here, locally: against the project's JWKS (asymmetric keys, cached,
refetched on an unknown `kid` at most every few seconds) or the legacy HS256 secret, with the
signature, `exp`, `aud` and `iss` all checked (the client's own `get_claims` checks neither `aud`
nor `iss`). A Supabase user gets a personal account the first time they are seen.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

import httpx
import jwt
from supabase_auth import AsyncGoTrueAdminAPI, AsyncGoTrueClient
from supabase_auth.errors import AuthApiError, AuthError, AuthRetryableError

from agentry.servicekit.errors import Unavailable

from ..domain import (
    OWNER,
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
from ..errors import (
    EmailTaken,
    InvalidCredentials,
    InvalidEmail,
    InvalidPassword,
    InvalidToken,
    RefreshTokenReused,
    TokenExpired,
)
from ..ports import Clock, TokenSigner, UserRepository

logger = logging.getLogger(__name__)

AUDIENCE = "authenticated"
ASYMMETRIC = ("ES256", "RS256", "EdDSA")
REQUIRED_CLAIMS = ["exp", "iat", "sub", "aud", "iss"]
JWKS_REFETCH_SECONDS = 10.0
# A mirrored user has no local password: this is no argon2 hash, so no password ever matches it.
NO_LOCAL_PASSWORD = "!supabase"


class _Jwks:
    """The project's public keys by kid; an unknown kid refetches, at most every few seconds."""

    def __init__(self, http: httpx.AsyncClient, url: str, *, apikey: str, clock: Clock = time.monotonic) -> None:
        self._http, self._url, self._clock = http, url, clock
        self._headers = {"apikey": apikey}
        self._keys: dict[str, jwt.PyJWK] = {}
        self._document: dict[str, Any] = {"keys": []}
        self._fetched_at: float | None = None
        self._lock = asyncio.Lock()

    async def key(self, kid: str) -> jwt.PyJWK | None:
        return self._keys.get(kid) or await self._refetch(kid)

    async def document(self) -> dict[str, Any]:
        if self._fetched_at is None:
            await self._refetch(None)
        return self._document

    async def _refetch(self, kid: str | None) -> jwt.PyJWK | None:
        async with self._lock:
            if kid is not None and kid in self._keys:
                return self._keys[kid]
            now = self._clock()
            if self._fetched_at is not None and now - self._fetched_at < JWKS_REFETCH_SECONDS:
                return None
            try:
                response = await self._http.get(self._url, headers=self._headers)
                response.raise_for_status()
                document = response.json()
                keys = jwt.PyJWKSet.from_dict(document).keys if document.get("keys") else []
            except (httpx.HTTPError, ValueError, jwt.PyJWTError) as exc:
                raise Unavailable(f"cannot fetch the Supabase JWKS: {type(exc).__name__}") from exc
            self._fetched_at = now
            self._document = {"keys": [k for k in document.get("keys", []) if isinstance(k, dict)]}
            self._keys = {k.key_id: k for k in keys if k.key_id and k.algorithm_name in ASYMMETRIC}
            logger.info("loaded %d Supabase signing key(s)", len(self._keys))
            return self._keys.get(kid) if kid is not None else None


class SupabaseIdentityProvider:
    """Sign-up, sign-in, refresh, sign-out and password changes go to GoTrue; verification stays local."""

    def __init__(
        self,
        *,
        url: str,
        anon_key: str,
        service_role_key: str,
        jwt_secret: str | None,
        users: UserRepository,
        stream_tokens: TokenSigner,
        clock: Clock = time.time,
        timeout: float = 10.0,
    ) -> None:
        self._auth_url = url.rstrip("/") + "/auth/v1"
        self._anon_key, self._jwt_secret = anon_key, jwt_secret
        self._users, self._stream_tokens, self._clock = users, stream_tokens, clock
        # user id -> personal account id: fixed once created, so verification needs no query after
        # a user's first token (bounded; cleared when full).
        self._personal: dict[str, str] = {}
        self._http = httpx.AsyncClient(timeout=timeout)
        self._jwks = _Jwks(self._http, f"{self._auth_url}/.well-known/jwks.json", apikey=anon_key)
        # Admin calls use the service-role key; user calls get a fresh client each (signing in
        # rewrites a client's Authorization header), all over one connection pool.
        self._admin = AsyncGoTrueAdminAPI(
            url=self._auth_url,
            http_client=self._http,
            headers={"apiKey": service_role_key, "Authorization": f"Bearer {service_role_key}"},
        )

    async def close(self) -> None:
        await self._http.aclose()

    def _client(self) -> AsyncGoTrueClient:
        return AsyncGoTrueClient(
            url=self._auth_url,
            http_client=self._http,
            auto_refresh_token=False,
            persist_session=False,
            headers={"apiKey": self._anon_key, "Authorization": f"Bearer {self._anon_key}"},
        )

    async def sign_up(self, email: str, password: str) -> SignedUp:
        email = normalize_email(email)
        check_password_policy(password)
        try:
            reply = await self._client().sign_up({"email": email, "password": password})
        except AuthApiError as exc:
            if exc.code in ("user_already_exists", "email_exists"):
                raise EmailTaken("email: an account with this email already exists") from None
            if exc.code == "weak_password":
                raise InvalidPassword(f"password: {exc.message}") from None
            if exc.code in ("validation_failed", "email_address_invalid"):
                raise InvalidEmail("email: is not a valid email address") from None
            raise _unavailable(exc) from None
        except AuthError as exc:
            raise _unavailable(exc) from None
        if reply.user is None:
            raise Unavailable("GoTrue answered the sign-up without a user")
        account_id = await self._mirror(reply.user.id, reply.user.email or email)
        logger.info("signed up supabase user %s with personal account %s", reply.user.id, account_id)
        return SignedUp(user_id=reply.user.id, account_id=account_id)

    async def sign_in(self, email: str, password: str) -> IssuedToken:
        try:
            email = normalize_email(email)
        except InvalidEmail:
            raise InvalidCredentials() from None
        try:
            reply = await self._client().sign_in_with_password({"email": email, "password": password})
        except AuthApiError as exc:
            if exc.status in (400, 401, 403, 422):
                raise InvalidCredentials() from None
            raise _unavailable(exc) from None
        except AuthError as exc:
            raise _unavailable(exc) from None
        session = reply.session
        if session is None or reply.user is None:
            raise InvalidCredentials()
        await self._mirror(reply.user.id, reply.user.email or email)
        return _issued(session)

    async def refresh(self, refresh_token: str) -> IssuedToken:
        if not refresh_token or len(refresh_token) > 1024:
            raise InvalidToken("invalid refresh token")
        try:
            reply = await self._client().refresh_session(refresh_token)
        except AuthApiError as exc:
            if exc.code == "refresh_token_already_used":
                raise RefreshTokenReused("refresh token was already used: the session has been revoked") from None
            if exc.status in (400, 401, 403, 404):
                raise InvalidToken("invalid refresh token") from None
            raise _unavailable(exc) from None
        except AuthError as exc:
            raise _unavailable(exc) from None
        return _issued(reply.session)

    async def sign_out(self, token: str, *, everywhere: bool) -> None:
        await self.verify(token)
        await self._call(self._admin.sign_out(token, "global" if everywhere else "local"))

    async def change_password(self, token: str, current_password: str, new_password: str) -> None:
        principal = (await self.confirm(token)).principal
        check_password_policy(new_password, field="new_password")
        try:
            await self._client().sign_in_with_password({"email": principal.email, "password": current_password})
        except AuthApiError as exc:
            if exc.status in (400, 401, 403, 422):
                raise InvalidCredentials() from None
            raise _unavailable(exc) from None
        await self._call(self._admin.update_user_by_id(principal.user_id, {"password": new_password}))
        await self._call(self._admin.sign_out(token, "others"))
        logger.info("supabase user %s changed password; other sessions ended", principal.user_id)

    async def confirm(self, token: str) -> VerifiedToken:
        """Verifies locally, then asks GoTrue's /user: a signed-out session is refused at once."""
        verified = await self.verify(token)
        try:
            await self._client().get_user(token)
        except AuthApiError as exc:
            if exc.status in (401, 403, 404):
                raise InvalidToken("invalid token: the session has ended") from None
            raise _unavailable(exc) from None
        except AuthError as exc:
            raise _unavailable(exc) from None
        return verified

    async def verify(self, token: str) -> VerifiedToken:
        if not isinstance(token, str) or len(token) > 8192:
            raise InvalidToken("invalid token: malformed")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidToken("invalid token: malformed") from exc
        alg = header.get("alg")
        if alg == "HS256":
            # Only a legacy project's shared secret: never a public key used as an HMAC secret.
            if not self._jwt_secret:
                raise InvalidToken("invalid token: this project does not sign with HS256")
            key: Any = self._jwt_secret
        elif alg in ASYMMETRIC:
            kid = header.get("kid")
            jwk = await self._jwks.key(kid) if isinstance(kid, str) else None
            if jwk is None or jwk.algorithm_name != alg:
                raise InvalidToken("token was not signed by a known key")
            key = jwk.key
        else:
            raise InvalidToken("invalid token: algorithm not accepted")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=AUDIENCE,
                issuer=self._auth_url,
                options={"require": REQUIRED_CLAIMS},
                leeway=30,
            )
        except jwt.ExpiredSignatureError as exc:
            raise TokenExpired("token has expired") from exc
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"invalid token: {exc}") from exc
        sub, email, session_id = claims.get("sub"), claims.get("email"), claims.get("session_id", "")
        if not (isinstance(sub, str) and sub and isinstance(email, str) and email and isinstance(session_id, str)):
            raise InvalidToken("invalid token: sub and email must be non-empty strings")
        account_id = await self._mirror(sub, email)
        principal = Principal(user_id=sub, account_id=account_id, email=normalize_email(email), session_id=session_id)
        return VerifiedToken(principal=principal, expires_at=int(claims["exp"]))

    async def jwks(self) -> dict[str, Any]:
        # The project's keys (access tokens) and ours (stream tokens): one document for both.
        return {"keys": [*(await self._jwks.document())["keys"], *self._stream_tokens.jwks()["keys"]]}

    def issue_stream_token(self, principal: Principal, resource: str) -> IssuedToken:
        return self._stream_tokens.issue_stream(principal, resource)

    async def _mirror(self, user_id: str, email: str) -> str:
        if (known := self._personal.get(user_id)) is not None:
            return known
        now = self._clock()
        email = normalize_email(email)
        user = User(user_id=user_id, email=email, password_hash=NO_LOCAL_PASSWORD, created_at=now)
        account = Account(
            account_id=str(uuid.uuid4()), name=personal_account_name(email), personal=True, created_at=now
        )
        account_id = await self._users.ensure_user(user, account, Membership(account.account_id, user_id, OWNER, now))
        if len(self._personal) >= 100_000:
            self._personal.clear()
        self._personal[user_id] = account_id
        return account_id

    @staticmethod
    async def _call(awaitable) -> Any:
        try:
            return await awaitable
        except AuthError as exc:
            raise _unavailable(exc) from None


def _issued(session) -> IssuedToken:
    expires_at = int(session.expires_at or time.time() + session.expires_in)
    return IssuedToken(
        access_token=session.access_token,
        expires_in=int(session.expires_in),
        expires_at=expires_at,
        refresh_token=session.refresh_token,
    )


def _unavailable(exc: AuthError) -> Unavailable:
    # GoTrue's messages name the failure, never the credentials.
    kind = "unreachable" if isinstance(exc, AuthRetryableError) else f"answered {getattr(exc, 'code', None)}"
    logger.warning("supabase auth %s", kind)
    return Unavailable(f"the identity provider is unavailable ({kind})")
