"""Starting the service: settings from the environment, the key survives restarts, no key no start."""

from __future__ import annotations

import contextlib
import os

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import ValidationError

from agentry.api.auth.v1 import auth_pb2, auth_pb2_grpc
from agentry.auth import AuthSettings, start
from agentry.auth.errors import SigningKeyError
from agentry.servicekit import DEV_INTERNAL_TOKEN, open_channel

PASSWORD = "correct horse battery"


def _pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch):
    for name in list(os.environ):
        if name.startswith("AGENTRY_"):
            monkeypatch.delenv(name)


def test_settings_defaults_and_environment(monkeypatch, tmp_path):
    defaults = AuthSettings()
    assert defaults.database_url == "sqlite+aiosqlite:///./var/auth.db"
    assert (defaults.issuer, defaults.audience, defaults.access_token_ttl_seconds) == (
        "agentry-local",
        "authenticated",
        900,
    )
    assert defaults.provider == "local" and defaults.signing_key is None
    pem = _pem()
    monkeypatch.setenv("AGENTRY_AUTH_SIGNING_KEY", pem)
    monkeypatch.setenv("AGENTRY_AUTH_ACCESS_TOKEN_TTL_SECONDS", "60")
    monkeypatch.setenv("AGENTRY_AUTH_KEY_PATH", str(tmp_path / "k.pem"))
    settings = AuthSettings()
    assert settings.signing_key.get_secret_value() == pem
    assert "PRIVATE" not in repr(settings)
    assert settings.access_token_ttl_seconds == 60 and settings.key_path == tmp_path / "k.pem"


def test_outside_dev_mode_a_signing_key_is_required():
    secret = "a-real-internal-secret-0123456789"
    with pytest.raises(ValidationError, match="AGENTRY_AUTH_SIGNING_KEY"):
        AuthSettings(dev_mode=False, internal_token=secret)
    AuthSettings(dev_mode=False, internal_token=secret, signing_key=_pem())


async def test_a_bad_configured_key_stops_start_before_serving(sqlite_url, tmp_path):
    settings = AuthSettings(port=0, database_url=sqlite_url, signing_key="nonsense", key_path=tmp_path / "k.pem")
    async with contextlib.AsyncExitStack() as stack:
        with pytest.raises(SigningKeyError):
            await start(settings, stack)


async def test_tokens_survive_a_restart_in_dev_mode(sqlite_url, tmp_path):
    settings = AuthSettings(port=0, database_url=sqlite_url, key_path=tmp_path / "var" / "auth-signing-key.pem")
    async with contextlib.AsyncExitStack() as stack:
        running = await start(settings, stack)
        async with open_channel(running.target, DEV_INTERNAL_TOKEN) as channel:
            stub = auth_pb2_grpc.AuthServiceStub(channel)
            await stub.SignUp(auth_pb2.SignUpRequest(email="ada@example.com", password=PASSWORD))
            token = (await stub.SignIn(auth_pb2.SignInRequest(email="ada@example.com", password=PASSWORD))).access_token
    async with contextlib.AsyncExitStack() as stack:
        running = await start(settings, stack)
        async with open_channel(running.target, DEV_INTERNAL_TOKEN) as channel:
            stub = auth_pb2_grpc.AuthServiceStub(channel)
            verified = await stub.VerifyToken(auth_pb2.VerifyTokenRequest(token=token))
    assert verified.principal.email == "ada@example.com"
