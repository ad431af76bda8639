"""Who is calling: access tokens verified in the gateway against auth's published keys (JWKS),
or, when configured, by asking the auth service on every request."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Protocol

import grpc
import jwt

from agentry.api.auth.v1 import auth_pb2
from agentry.servicekit.errors import ERROR_CODE_KEY, INTERNAL_CREDENTIAL_REFUSED

from .errors import ApiError
from .recent import Recent

logger = logging.getLogger(__name__)

ALGORITHMS = ["ES256"]  # never the token header's choice: no "none", no HS256 with a public key
REQUIRED_CLAIMS = ["exp", "iat", "sub", "iss", "aud"]
# Must match agentry.auth: the prefix of API keys, and the audience of stream tokens.
API_KEY_PREFIX = "agentry_sk_"
STREAM_AUDIENCE = "agentry-stream"
_MAX_CREDENTIAL_LENGTH = 8192
# An unknown kid makes the gateway refetch the keys (a rotation), but at most this often, so
# tokens with made-up kids cannot turn into a flood of calls to auth.
JWKS_REFRESH_SECONDS = 10.0
# Tokens verified here are remembered (their claims) for this long at most, and never past their
# `exp`, so a client's next request skips the signature check (~0.2 ms of ES256). Safe because a
# token's verdict here depends only on the token, the keys and the clock: these tokens are not
# revocable before `exp` in "local" mode anyway, and the memory is cleared whenever the keys are
# refetched (a retired key stops its tokens as before). API keys and "auth" mode are never cached.
VERIFIED_TOKEN_SECONDS = 60.0
VERIFIED_TOKENS_MAX = 4096


@dataclass(frozen=True, slots=True)
class Caller:
    user_id: str
    account_id: str
    email: str
    # The session behind an access token ("" for API keys and stream tokens).
    session_id: str = ""
    # The API key the caller used ("" for tokens).
    api_key_id: str = ""
    # The caller's role in account_id when it was chosen with X-Account-Id ("" for their own).
    role: str = ""


class TokenVerifier(Protocol):
    async def verify(self, token: str) -> Caller: ...


def _invalid(message: str, code: str = "invalid_token") -> ApiError:
    return ApiError(401, code, message)


async def _ask_auth(call, request) -> Caller:
    try:
        reply = await call(request)
    except grpc.aio.AioRpcError as exc:
        trailing = dict(exc.trailing_metadata() or ())
        refused_us = trailing.get(ERROR_CODE_KEY) == INTERNAL_CREDENTIAL_REFUSED
        if not refused_us and exc.code() in (
            grpc.StatusCode.UNAUTHENTICATED,
            grpc.StatusCode.INVALID_ARGUMENT,
            grpc.StatusCode.NOT_FOUND,
        ):
            code = trailing.get(ERROR_CODE_KEY)
            raise _invalid(
                exc.details() or "invalid token",
                code if code in ("token_expired", "api_key_expired") else "invalid_token",
            ) from exc
        raise
    p = reply.principal
    return Caller(
        user_id=p.user_id, account_id=p.account_id, email=p.email, session_id=p.session_id, api_key_id=p.api_key_id
    )


class AuthServiceVerifier:
    """Asks auth's VerifyToken: one gRPC call per request, and revocation takes effect at once."""

    def __init__(self, auth) -> None:
        self._auth = auth

    async def verify(self, token: str) -> Caller:
        return await _ask_auth(self._auth.VerifyToken, auth_pb2.VerifyTokenRequest(token=token))


class CredentialVerifier:
    """Any credential a route accepts: API keys (recognised by their prefix) are looked up in auth
    on every request, so a revoked key stops at once; tokens go to the token verifier."""

    def __init__(self, auth, tokens: TokenVerifier) -> None:
        self._auth, self._tokens = auth, tokens

    async def verify(self, token: str) -> Caller:
        if len(token) > _MAX_CREDENTIAL_LENGTH:
            raise _invalid("invalid token: malformed")
        if token.startswith(API_KEY_PREFIX):
            return await _ask_auth(self._auth.VerifyApiKey, auth_pb2.VerifyApiKeyRequest(key=token))
        return await self._tokens.verify(token)


class JwksVerifier:
    """Verifies ES256 access tokens locally with the keys auth publishes (GetJwks).

    No call per request: signature, algorithm, issuer, audience, expiry and the required claims
    are checked here. A user deleted after sign-in keeps access until the token expires
    (access_token_ttl_seconds, an hour by default); set token_verification="auth" to trade a
    gRPC call per request for immediate revocation.
    """

    def __init__(self, auth, *, issuer: str, audience: str, clock=time.monotonic, wall_clock=time.time) -> None:
        self._auth = auth
        self._issuer = issuer
        self._audience = audience
        self._clock = clock
        self._wall_clock = wall_clock
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None
        self._lock = asyncio.Lock()
        # (token, audience) -> its verified claims, until min(exp, VERIFIED_TOKEN_SECONDS).
        self._verified: Recent[tuple[str, str], dict] = Recent(VERIFIED_TOKENS_MAX, VERIFIED_TOKEN_SECONDS, clock=clock)

    async def verify(self, token: str) -> Caller:
        claims = await self._claims(token, self._audience)
        sid = claims.get("sid", "")
        if not isinstance(sid, str):
            raise _invalid("invalid token: sid must be a string")
        return Caller(claims["sub"], claims["account_id"], claims["email"], session_id=sid)

    async def verify_stream(self, token: str, resource: str) -> Caller:
        """The caller of a stream token, if it was issued for exactly `resource`."""
        claims = await self._claims(token, STREAM_AUDIENCE)
        if claims.get("resource") != resource:
            raise _invalid("invalid token: this stream token is for another stream")
        return Caller(claims["sub"], claims["account_id"], claims["email"])

    async def _claims(self, token: str, audience: str) -> dict:
        if len(token) > _MAX_CREDENTIAL_LENGTH:
            raise _invalid("invalid token: malformed")
        claims = self._verified.get((token, audience))
        if claims is None:
            claims = await self._verify(token, audience)
            # Until exp (on the monotonic clock: the seconds left by the wall clock), without the
            # leeway: past exp the token is checked again, and PyJWT decides.
            left = float(claims["exp"]) - self._wall_clock()  # PyJWT has checked it is a number
            if left > 0:
                self._verified.put((token, audience), claims, until=self._clock() + left)
        return claims

    async def _verify(self, token: str, audience: str) -> dict:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise _invalid("invalid token: malformed") from exc
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise _invalid("invalid token: no key id")
        key = self._keys.get(kid) or await self._refetch_for(kid)
        if key is None:
            raise _invalid("token was not signed by a known key")
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=ALGORITHMS,
                audience=audience,
                issuer=self._issuer,
                options={"require": REQUIRED_CLAIMS},
                leeway=60,
            )
        except jwt.ExpiredSignatureError as exc:
            raise _invalid("token has expired", "token_expired") from exc
        except jwt.PyJWTError as exc:
            # PyJWT's messages name the failed check and never echo the token.
            raise _invalid(f"invalid token: {exc}") from exc
        values = (claims.get("sub"), claims.get("account_id"), claims.get("email"))
        if not all(isinstance(v, str) and v for v in values):
            raise _invalid("invalid token: sub, account_id and email must be non-empty strings")
        return claims

    async def _refetch_for(self, kid: str) -> jwt.PyJWK | None:
        async with self._lock:
            if kid in self._keys:
                return self._keys[kid]
            now = self._clock()
            if self._fetched_at is not None and now - self._fetched_at < JWKS_REFRESH_SECONDS:
                return None
            reply = await self._auth.GetJwks(auth_pb2.GetJwksRequest())
            self._fetched_at = now
            keys = jwt.PyJWKSet.from_json(reply.jwks_json).keys if reply.jwks_json else []
            self._keys = {k.key_id: k for k in keys if k.key_id and k.algorithm_name in ALGORITHMS}
            self._verified.clear()  # a key auth no longer publishes stops its tokens at once
            logger.info("loaded %d token signing key(s) from auth", len(self._keys))
            return self._keys.get(kid)
