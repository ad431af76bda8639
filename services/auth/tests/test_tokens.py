"""ES256 tokens: what verifies, every way a token can be wrong, and the signing key's lifecycle."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import stat

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from agentry.auth.domain import Principal
from agentry.auth.errors import InvalidToken, SigningKeyError, TokenExpired
from agentry.auth.tokens import TokenService, load_signing_key

ADA = Principal(user_id="u-1", account_id="a-1", email="ada@example.com")


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _claims(clock, **overrides) -> dict:
    now = int(clock())
    claims = {
        "iss": "agentry-local",
        "aud": "authenticated",
        "sub": "u-1",
        "account_id": "a-1",
        "email": "ada@example.com",
        "iat": now,
        "exp": now + 60,
        "jti": "j",
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def _pem(key) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def test_round_trip_returns_the_principal_and_expiry(tokens, clock):
    issued = tokens.issue(ADA)
    assert issued.token_type == "Bearer"
    assert issued.expires_in == 3600
    verified = tokens.verify(issued.access_token)
    assert verified.principal == ADA
    assert verified.expires_at == int(clock()) + 3600 == issued.expires_at


def test_issued_claims_and_header(tokens, clock):
    token = tokens.issue(ADA).access_token
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "ES256"
    assert header["kid"] == tokens.kid
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["iss"] == "agentry-local" and claims["aud"] == "authenticated"
    assert claims["sub"] == "u-1" and claims["account_id"] == "a-1" and claims["email"] == "ada@example.com"
    assert claims["iat"] == int(clock()) and claims["exp"] == int(clock()) + 3600
    assert claims["jti"] != jwt.decode(tokens.issue(ADA).access_token, options={"verify_signature": False})["jti"]


def test_expired_token_is_token_expired(tokens, clock):
    token = tokens.issue(ADA).access_token
    clock.advance(3599)
    tokens.verify(token)
    clock.advance(1)
    with pytest.raises(TokenExpired) as caught:
        tokens.verify(token)
    assert caught.value.code == "token_expired"


def test_token_from_the_future_is_invalid(tokens, signing_key, clock):
    token = jwt.encode(
        _claims(clock, iat=int(clock()) + 3600, exp=int(clock()) + 7200),
        signing_key,
        algorithm="ES256",
        headers={"kid": tokens.kid},
    )
    with pytest.raises(InvalidToken) as caught:
        tokens.verify(token)
    assert caught.value.code == "invalid_token"


def test_signature_from_another_key_is_invalid(tokens, clock):
    other = ec.generate_private_key(ec.SECP256R1())
    forged = jwt.encode(_claims(clock), other, algorithm="ES256", headers={"kid": tokens.kid})
    with pytest.raises(InvalidToken, match=r"[Ss]ignature"):
        tokens.verify(forged)


def test_alg_none_is_invalid(tokens, clock):
    unsigned = f"{_b64({'alg': 'none', 'typ': 'JWT', 'kid': tokens.kid})}.{_b64(_claims(clock))}."
    with pytest.raises(InvalidToken, match="alg value is not allowed"):
        tokens.verify(unsigned)


def test_hs256_signed_with_the_public_key_is_invalid(tokens, signing_key, clock):
    public_pem = signing_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    # PyJWT refuses PEM as an HMAC secret, so sign the classic confusion attack by hand.
    signing_input = f"{_b64({'alg': 'HS256', 'typ': 'JWT', 'kid': tokens.kid})}.{_b64(_claims(clock))}"
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    forged = f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"
    with pytest.raises(InvalidToken, match="alg value is not allowed"):
        tokens.verify(forged)


@pytest.mark.parametrize(("field", "value"), [("aud", "somebody-else"), ("iss", "https://evil.example")])
def test_wrong_audience_or_issuer_is_invalid(tokens, signing_key, clock, field, value):
    token = jwt.encode(_claims(clock, **{field: value}), signing_key, algorithm="ES256", headers={"kid": tokens.kid})
    with pytest.raises(InvalidToken):
        tokens.verify(token)


@pytest.mark.parametrize("missing", ["exp", "iat", "sub", "aud", "iss"])
def test_required_claims_must_be_present(tokens, signing_key, clock, missing):
    token = jwt.encode(_claims(clock, **{missing: None}), signing_key, algorithm="ES256", headers={"kid": tokens.kid})
    with pytest.raises(InvalidToken):
        tokens.verify(token)


@pytest.mark.parametrize("overrides", [{"account_id": None}, {"email": 7}, {"exp": "later"}, {"iat": True}])
def test_malformed_claims_are_invalid(tokens, signing_key, clock, overrides):
    token = jwt.encode(_claims(clock, **overrides), signing_key, algorithm="ES256", headers={"kid": tokens.kid})
    with pytest.raises(InvalidToken):
        tokens.verify(token)


def test_tampered_payload_is_invalid(tokens):
    header, _payload, signature = tokens.issue(ADA).access_token.split(".")
    claims = jwt.decode(tokens.issue(ADA).access_token, options={"verify_signature": False})
    claims["account_id"] = "someone-elses-account"
    with pytest.raises(InvalidToken):
        tokens.verify(f"{header}.{_b64(claims)}.{signature}")


def test_unknown_or_missing_kid_is_invalid(tokens, signing_key, clock):
    for headers in ({"kid": "nope"}, None):
        with pytest.raises(InvalidToken):
            tokens.verify(jwt.encode(_claims(clock), signing_key, algorithm="ES256", headers=headers))


@pytest.mark.parametrize("garbage", ["", "garbage", "a.b.c", "a.b", "....", "eyJhbGciOiJFUzI1NiJ9.%%%.xx"])
def test_garbage_is_invalid(tokens, garbage):
    with pytest.raises(InvalidToken) as caught:
        tokens.verify(garbage)
    assert caught.value.code == "invalid_token"


def test_jwks_publishes_the_public_key_only(tokens, signing_key):
    (jwk,) = tokens.jwks()["keys"]
    assert jwk["kid"] == tokens.kid and jwk["alg"] == "ES256" and jwk["kty"] == "EC" and jwk["crv"] == "P-256"
    assert "d" not in jwk
    public = jwt.PyJWK(jwk).key
    assert public.public_numbers() == signing_key.public_key().public_numbers()


def test_kid_is_stable_for_a_key_and_differs_between_keys(signing_key, clock):
    def service(key):
        return TokenService(key, issuer="i", audience="a", ttl_seconds=1, clock=clock)

    assert service(signing_key).kid == service(signing_key).kid
    assert service(signing_key).kid != service(ec.generate_private_key(ec.SECP256R1())).kid


def test_dev_key_is_generated_once_private_and_reused(tmp_path):
    path = tmp_path / "var" / "key.pem"
    first = load_signing_key(None, path, allow_generate=True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = load_signing_key(None, path, allow_generate=True)
    assert again.private_numbers() == first.private_numbers()
    assert [p.name for p in path.parent.iterdir()] == ["key.pem"]


def test_configured_key_wins_and_is_never_written(tmp_path, signing_key):
    path = tmp_path / "key.pem"
    loaded = load_signing_key(_pem(signing_key), path, allow_generate=True)
    assert loaded.private_numbers() == signing_key.private_numbers()
    assert not path.exists()
    one_line = _pem(signing_key).replace("\n", "\\n")
    assert load_signing_key(one_line, path, allow_generate=False).private_numbers() == signing_key.private_numbers()


def test_no_key_outside_dev_mode_refuses(tmp_path):
    with pytest.raises(SigningKeyError, match="AGENTRY_AUTH_SIGNING_KEY"):
        load_signing_key(None, tmp_path / "key.pem", allow_generate=False)
    assert not (tmp_path / "key.pem").exists()


@pytest.mark.parametrize(
    "pem",
    [
        "not a pem",
        _pem(ec.generate_private_key(ec.SECP384R1())),
        _pem(rsa.generate_private_key(public_exponent=65537, key_size=2048)),
    ],
)
def test_unusable_keys_are_refused(tmp_path, pem):
    with pytest.raises(SigningKeyError):
        load_signing_key(pem, tmp_path / "key.pem", allow_generate=True)
