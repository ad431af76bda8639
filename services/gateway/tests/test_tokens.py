"""Local token verification against auth's JWKS: what it accepts, refuses, and how often it asks."""

from __future__ import annotations

import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from agentry.api.auth.v1 import auth_pb2
from agentry.gateway.errors import ApiError
from agentry.gateway.tokens import JWKS_REFRESH_SECONDS, VERIFIED_TOKEN_SECONDS, JwksVerifier
from agentry.servicekit.testing import FakeClock

ISSUER, AUDIENCE = "agentry-local", "authenticated"


def jwk_of(key: ec.EllipticCurvePrivateKey, kid: str) -> dict:
    public = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    return {**public, "kid": kid, "alg": "ES256", "use": "sig"}


class FakeAuth:
    """Publishes a JWKS it can change, and counts how often it is asked."""

    def __init__(self) -> None:
        self.keys: list[dict] = []
        self.fetches = 0

    async def GetJwks(self, request):
        self.fetches += 1
        return auth_pb2.GetJwksResponse(jwks_json=json.dumps({"keys": self.keys}))


def token(key, kid: str, **overrides) -> str:
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "u1",
        "account_id": "a1",
        "email": "a@example.com",
        "iat": now,
        "exp": now + 600,
        **overrides,
    }
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(claims, key, algorithm="ES256", headers={"kid": kid})


@pytest.fixture
def key():
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def auth(key):
    fake = FakeAuth()
    fake.keys = [jwk_of(key, "k1")]
    return fake


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def verifier(auth, clock):
    return JwksVerifier(auth, issuer=ISSUER, audience=AUDIENCE, clock=clock)


async def refused(verifier, value: str) -> ApiError:
    with pytest.raises(ApiError) as err:
        await verifier.verify(value)
    assert err.value.status == 401
    assert not value or value not in err.value.message
    return err.value


async def test_a_valid_token_gives_the_caller_and_keys_are_fetched_once(verifier, auth, key):
    for _ in range(3):
        caller = await verifier.verify(token(key, "k1"))
    assert (caller.user_id, caller.account_id, caller.email) == ("u1", "a1", "a@example.com")
    assert auth.fetches == 1


async def test_expired_token(verifier, key):
    err = await refused(verifier, token(key, "k1", iat=int(time.time()) - 7200, exp=int(time.time()) - 3600))
    assert err.code == "token_expired"


@pytest.mark.parametrize(
    "claims",
    [
        {"aud": "someone-else"},
        {"iss": "https://evil.example"},
        {"sub": None},
        {"exp": None},
        {"iat": None},
        {"account_id": None},
        {"email": ""},
    ],
)
async def test_wrong_or_missing_claims(verifier, key, claims):
    err = await refused(verifier, token(key, "k1", **claims))
    assert err.code == "invalid_token"


async def test_signature_by_another_key_under_a_known_kid(verifier):
    other = ec.generate_private_key(ec.SECP256R1())
    await refused(verifier, token(other, "k1"))


async def test_algorithm_confusion_is_refused(verifier, key):
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "u1",
        "account_id": "a1",
        "email": "a@example.com",
        "iat": int(time.time()),
        "exp": int(time.time()) + 600,
    }
    await refused(verifier, jwt.encode(claims, None, algorithm="none", headers={"kid": "k1"}))
    await refused(
        verifier, jwt.encode(claims, "a-shared-secret-of-enough-length!!", algorithm="HS256", headers={"kid": "k1"})
    )


@pytest.mark.parametrize("garbage", ["", "abc", "a.b.c", "eyJhbGciOiJFUzI1NiJ9.e30.", "Bearer x"])
async def test_garbage(verifier, garbage):
    await refused(verifier, garbage)


async def test_rotation_unknown_kid_refetches_but_not_more_than_the_refresh_interval(verifier, auth, key, clock):
    await verifier.verify(token(key, "k1"))
    rotated = ec.generate_private_key(ec.SECP256R1())
    auth.keys.append(jwk_of(rotated, "k2"))
    # A made-up kid right after a fetch does not make the gateway ask again...
    await refused(verifier, token(key, "made-up"))
    assert auth.fetches == 1
    clock.now += JWKS_REFRESH_SECONDS + 1
    # ...but a real new key is picked up once the interval has passed.
    caller = await verifier.verify(token(rotated, "k2"))
    assert caller.user_id == "u1" and auth.fetches == 2
    for _ in range(5):
        await refused(verifier, token(key, "made-up-again"))
    assert auth.fetches == 2


@pytest.fixture
def decodes(monkeypatch):
    """Counts the signature checks (PyJWT decodes) the verifier makes."""
    calls = []
    decode = jwt.decode

    def counting(*args, **kwargs):
        calls.append(1)
        return decode(*args, **kwargs)

    monkeypatch.setattr(jwt, "decode", counting)
    return calls


async def test_a_verified_token_is_remembered_for_a_short_while(verifier, key, clock, decodes):
    value = token(key, "k1")
    for _ in range(3):
        caller = await verifier.verify(value)
    assert caller.account_id == "a1" and len(decodes) == 1
    clock.advance(VERIFIED_TOKEN_SECONDS + 1)
    await verifier.verify(value)
    assert len(decodes) == 2


async def test_a_remembered_token_is_checked_again_once_it_expires(auth, key, clock, decodes):
    wall = FakeClock(time.time())
    verifier = JwksVerifier(auth, issuer=ISSUER, audience=AUDIENCE, clock=clock, wall_clock=wall)
    value = token(key, "k1", exp=int(wall.now) + 5)
    await verifier.verify(value)
    await verifier.verify(value)
    assert len(decodes) == 1
    clock.advance(6)
    wall.advance(6)
    await verifier.verify(value)  # PyJWT decides again (here: within its leeway)
    assert len(decodes) == 2


async def test_refused_tokens_are_not_remembered(verifier, key, decodes):
    value = token(key, "k1", aud="someone-else")
    await refused(verifier, value)
    await refused(verifier, value)
    assert len(decodes) == 2


async def test_a_remembered_token_is_not_a_stream_token(verifier, key):
    value = token(key, "k1")
    await verifier.verify(value)
    with pytest.raises(ApiError):
        await verifier.verify_stream(value, "run:r1")


async def test_refetched_keys_forget_the_tokens_of_a_retired_key(verifier, auth, key, clock):
    old = token(key, "k1")
    await verifier.verify(old)
    rotated = ec.generate_private_key(ec.SECP256R1())
    auth.keys = [jwk_of(rotated, "k2")]  # k1 retired
    clock.advance(JWKS_REFRESH_SECONDS + 1)
    await verifier.verify(token(rotated, "k2"))  # an unknown kid: the keys are fetched again
    err = await refused(verifier, old)
    assert "known key" in err.message
