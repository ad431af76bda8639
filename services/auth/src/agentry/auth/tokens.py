"""ES256 access tokens: the signing key's lifecycle, issuing, strict verification and the JWKS."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from .domain import IssuedToken, Principal, VerifiedToken
from .errors import InvalidToken, SigningKeyError, TokenExpired
from .ports import Clock, IdFactory

logger = logging.getLogger(__name__)

ALGORITHM = "ES256"
# Stream tokens carry their own audience, so one can never pass for an access token (or back).
STREAM_AUDIENCE = "agentry-stream"
STREAM_TOKEN_TTL_SECONDS = 300
_REQUIRED_CLAIMS = ["exp", "iat", "sub", "iss", "aud"]
_SKEW_SECONDS = 60


def load_signing_key(pem: str | None, key_path: Path, *, allow_generate: bool) -> ec.EllipticCurvePrivateKey:
    """The configured key; else (dev only) the one stored at `key_path`, generated on first use."""
    if pem and pem.strip():
        # Env files often carry a PEM on one line with literal "\n" separators.
        if "\n" not in pem:
            pem = pem.replace("\\n", "\n")
        return _parse_pem(pem.strip().encode(), source="AGENTRY_AUTH_SIGNING_KEY")
    if not allow_generate:
        raise SigningKeyError("AGENTRY_AUTH_SIGNING_KEY is required outside dev mode")
    if key_path.exists():
        return _parse_pem(key_path.read_bytes(), source=str(key_path))
    return _create_key_file(key_path)


def load_retired_keys(pems: str | None) -> list[ec.EllipticCurvePublicKey]:
    """The public halves of retired signing keys (private or public PEM blocks, concatenated).

    They verify tokens signed before a rotation and stay in the JWKS until the operator drops
    them, one access-token lifetime after the rotation.
    """
    if not pems or not pems.strip():
        return []
    if "\n" not in pems:
        pems = pems.replace("\\n", "\n")
    keys: list[ec.EllipticCurvePublicKey] = []
    for match in re.finditer(r"-----BEGIN ([A-Z ]+)-----.+?-----END \1-----", pems, flags=re.S):
        data = match.group(0).encode()
        if "PRIVATE" in match.group(1):
            keys.append(_parse_pem(data, source="AGENTRY_AUTH_RETIRED_SIGNING_KEYS").public_key())
            continue
        try:
            public = serialization.load_pem_public_key(data)
        except (ValueError, TypeError) as exc:
            raise SigningKeyError("AGENTRY_AUTH_RETIRED_SIGNING_KEYS holds an unreadable PEM block") from exc
        if not isinstance(public, ec.EllipticCurvePublicKey) or not isinstance(public.curve, ec.SECP256R1):
            raise SigningKeyError("AGENTRY_AUTH_RETIRED_SIGNING_KEYS must hold EC P-256 keys")
        keys.append(public)
    if not keys:
        raise SigningKeyError("AGENTRY_AUTH_RETIRED_SIGNING_KEYS holds no PEM key")
    return keys


def _parse_pem(data: bytes, *, source: str) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise SigningKeyError(f"{source} is not an unencrypted PEM private key") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise SigningKeyError(f"{source} must be an EC P-256 (secp256r1) key for ES256")
    return key


def _create_key_file(key_path: Path) -> ec.EllipticCurvePrivateKey:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    key_path.parent.mkdir(parents=True, exist_ok=True)
    # Written to a private temp file, then linked into place: a reader never sees half a key, and
    # when two dev processes race, the loser adopts the winner's key instead of overwriting it.
    tmp = key_path.with_name(f".{key_path.name}.{uuid.uuid4().hex}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
        try:
            os.link(tmp, key_path)
        except FileExistsError:
            return _parse_pem(key_path.read_bytes(), source=str(key_path))
    finally:
        tmp.unlink(missing_ok=True)
    logger.info("generated a dev signing key at %s", key_path)
    return key


def _b64url_uint(value: int) -> str:
    raw = value.to_bytes(32, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def public_jwk(public_key: ec.EllipticCurvePublicKey) -> dict[str, str]:
    """The key as a JWK, with its RFC 7638 thumbprint as `kid` so the id follows the key."""
    numbers = public_key.public_numbers()
    members = {"crv": "P-256", "kty": "EC", "x": _b64url_uint(numbers.x), "y": _b64url_uint(numbers.y)}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
    kid = base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()).rstrip(b"=").decode()
    return {**members, "kid": kid, "use": "sig", "alg": ALGORITHM}


class TokenService:
    """The TokenSigner port: signs with one private key, verifies against the published keys."""

    def __init__(
        self,
        signing_key: ec.EllipticCurvePrivateKey,
        *,
        issuer: str,
        audience: str,
        ttl_seconds: int,
        clock: Clock = time.time,
        new_jti: IdFactory = lambda: uuid.uuid4().hex,
        retired_keys: Sequence[ec.EllipticCurvePublicKey] = (),
        stream_ttl_seconds: int = STREAM_TOKEN_TTL_SECONDS,
    ) -> None:
        self._key = signing_key
        self._jwk = public_jwk(signing_key.public_key())
        self.kid = self._jwk["kid"]
        # Keyed by kid: retired keys still verify (and are published) so a rotation signs nobody out.
        self._published = [self._jwk] + [public_jwk(k) for k in retired_keys]
        self._verification_keys = {self.kid: signing_key.public_key()}
        for key in retired_keys:
            self._verification_keys.setdefault(public_jwk(key)["kid"], key)
        self._stream_ttl = stream_ttl_seconds
        self._issuer, self._audience, self._ttl = issuer, audience, ttl_seconds
        self._clock, self._new_jti = clock, new_jti

    def issue(self, principal: Principal) -> IssuedToken:
        now = int(self._clock())
        expires_at = now + self._ttl
        claims = self._claims(principal, audience=self._audience, now=now, expires_at=expires_at)
        if principal.session_id:
            claims["sid"] = principal.session_id
        token = jwt.encode(claims, self._key, algorithm=ALGORITHM, headers={"kid": self.kid})
        return IssuedToken(access_token=token, expires_in=self._ttl, expires_at=expires_at)

    def issue_stream(self, principal: Principal, resource: str) -> IssuedToken:
        """A token that opens only `resource`'s event stream, for a few minutes."""
        now = int(self._clock())
        expires_at = now + self._stream_ttl
        claims = {
            **self._claims(principal, audience=STREAM_AUDIENCE, now=now, expires_at=expires_at),
            "resource": resource,
        }
        token = jwt.encode(claims, self._key, algorithm=ALGORITHM, headers={"kid": self.kid})
        return IssuedToken(access_token=token, expires_in=self._stream_ttl, expires_at=expires_at)

    def _claims(self, principal: Principal, *, audience: str, now: int, expires_at: int) -> dict[str, Any]:
        return {
            "iss": self._issuer,
            "aud": audience,
            "sub": principal.user_id,
            "account_id": principal.account_id,
            "email": principal.email,
            "iat": now,
            "exp": expires_at,
            "jti": self._new_jti(),
        }

    def verify(self, token: str) -> VerifiedToken:
        """The token's principal; InvalidToken (or TokenExpired) for anything not ours and current."""
        if not isinstance(token, str) or len(token) > 8192:
            raise InvalidToken("invalid token: malformed")
        try:
            header = jwt.get_unverified_header(token)
            kid = header.get("kid")
            public_key = self._verification_keys.get(kid) if isinstance(kid, str) else None
            if public_key is None:
                raise InvalidToken("token was not signed by a known key")
            claims = jwt.decode(
                token,
                public_key,
                algorithms=[ALGORITHM],  # never trust the header's alg: no "none", no HS256 tricks
                audience=self._audience,
                issuer=self._issuer,
                # Time claims are checked below against the injected clock, not PyJWT's.
                options={"require": _REQUIRED_CLAIMS, "verify_exp": False, "verify_iat": False, "verify_nbf": False},
            )
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"invalid token: {_reason(exc)}") from exc
        return VerifiedToken(principal=_principal(claims), expires_at=self._check_times(claims))

    def _check_times(self, claims: dict[str, Any]) -> int:
        exp, iat = claims["exp"], claims["iat"]
        if not _is_number(exp) or not _is_number(iat) or not _is_number(claims.get("nbf", 0)):
            raise InvalidToken("invalid token: time claims must be numbers")
        now = self._clock()
        if now >= exp:
            raise TokenExpired("token has expired")
        # iat may run a little ahead: tolerate clock skew between replicas, not forged futures.
        if claims.get("nbf", 0) > now + _SKEW_SECONDS or iat > now + _SKEW_SECONDS:
            raise InvalidToken("invalid token: not yet valid")
        return int(exp)

    def jwks(self) -> dict[str, Any]:
        return {"keys": [dict(jwk) for jwk in self._published]}


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _principal(claims: dict[str, Any]) -> Principal:
    user_id, account_id, email = (claims.get("sub"), claims.get("account_id"), claims.get("email"))
    if not (
        isinstance(user_id, str)
        and user_id
        and isinstance(account_id, str)
        and account_id
        and isinstance(email, str)
        and email
    ):
        raise InvalidToken("invalid token: sub, account_id and email must be non-empty strings")
    session_id = claims.get("sid", "")
    if not isinstance(session_id, str):
        raise InvalidToken("invalid token: sid must be a string")
    return Principal(user_id=user_id, account_id=account_id, email=email, session_id=session_id)


def _reason(exc: jwt.PyJWTError) -> str:
    # PyJWT's messages name the failed check (signature, audience, ...) and never echo the token.
    return str(exc) or type(exc).__name__
