"""The AuthService over a real gRPC server, started the way production starts it."""

from __future__ import annotations

import contextlib
import json

import grpc
import jwt
import pytest

from agentry.api.auth.v1 import auth_pb2, auth_pb2_grpc
from agentry.auth import AuthSettings, start
from agentry.servicekit import DEV_INTERNAL_TOKEN, open_channel
from agentry.servicekit.errors import ERROR_CODE_KEY

PASSWORD = "correct horse battery"


@pytest.fixture
async def server(sqlite_url, tmp_path, clock, hasher):
    settings = AuthSettings(port=0, database_url=sqlite_url, key_path=tmp_path / "auth-signing-key.pem")
    async with contextlib.AsyncExitStack() as stack:
        yield await start(settings, stack, clock=clock, hasher=hasher)


@pytest.fixture
async def stub(server):
    async with open_channel(server.target, DEV_INTERNAL_TOKEN) as channel:
        yield auth_pb2_grpc.AuthServiceStub(channel)


def _error_code(exc: grpc.aio.AioRpcError) -> str | None:
    return dict(exc.trailing_metadata() or ()).get(ERROR_CODE_KEY)


async def _sign_in(stub, email="ada@example.com", password=PASSWORD) -> auth_pb2.SignInResponse:
    return await stub.SignIn(auth_pb2.SignInRequest(email=email, password=password))


async def test_sign_up_sign_in_verify(stub, clock):
    signed_up = await stub.SignUp(auth_pb2.SignUpRequest(email="Ada@Example.com", password=PASSWORD))
    assert signed_up.user_id and signed_up.account_id and signed_up.user_id != signed_up.account_id
    signed_in = await _sign_in(stub)
    assert signed_in.token_type == "Bearer" and signed_in.expires_in == 900
    assert signed_in.refresh_token.startswith("agentry_rt_")
    verified = await stub.VerifyToken(auth_pb2.VerifyTokenRequest(token=signed_in.access_token))
    assert verified.principal.session_id
    assert verified.principal == auth_pb2.Principal(
        user_id=signed_up.user_id,
        account_id=signed_up.account_id,
        email="ada@example.com",
        session_id=verified.principal.session_id,
    )
    assert verified.expires_at == int(clock()) + 900


async def test_duplicate_sign_up_is_already_exists(stub):
    await stub.SignUp(auth_pb2.SignUpRequest(email="ada@example.com", password=PASSWORD))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.SignUp(auth_pb2.SignUpRequest(email="ADA@example.com", password="another password"))
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert _error_code(caught.value) == "email_taken"


@pytest.mark.parametrize(
    ("email", "password", "field", "code"),
    [
        ("not-an-email", PASSWORD, "email", "invalid_email"),
        ("ada@example.com", "short", "password", "invalid_password"),
    ],
)
async def test_bad_sign_up_input_is_invalid_argument_naming_the_field(stub, email, password, field, code):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.SignUp(auth_pb2.SignUpRequest(email=email, password=password))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details().startswith(f"{field}:")
    assert _error_code(caught.value) == code


@pytest.mark.parametrize(("email", "password"), [("ada@example.com", "wrong password"), ("bob@example.com", PASSWORD)])
async def test_wrong_credentials_are_unauthenticated_alike(stub, email, password):
    await stub.SignUp(auth_pb2.SignUpRequest(email="ada@example.com", password=PASSWORD))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _sign_in(stub, email, password)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert caught.value.details() == "invalid email or password"
    assert _error_code(caught.value) == "invalid_credentials"


async def test_expired_and_garbage_tokens_are_unauthenticated(stub, clock):
    await stub.SignUp(auth_pb2.SignUpRequest(email="ada@example.com", password=PASSWORD))
    token = (await _sign_in(stub)).access_token
    for bad, code in (("garbage", "invalid_token"), (token[:-4] + "AAAA", "invalid_token")):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.VerifyToken(auth_pb2.VerifyTokenRequest(token=bad))
        assert (caught.value.code(), _error_code(caught.value)) == (grpc.StatusCode.UNAUTHENTICATED, code)
    clock.advance(3600)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.VerifyToken(auth_pb2.VerifyTokenRequest(token=token))
    assert (caught.value.code(), _error_code(caught.value)) == (grpc.StatusCode.UNAUTHENTICATED, "token_expired")


async def test_calls_without_the_internal_credential_are_refused(server):
    async with open_channel(server.target, None) as channel:
        stub = auth_pb2_grpc.AuthServiceStub(channel)
        for call in (
            stub.SignUp(auth_pb2.SignUpRequest(email="ada@example.com", password=PASSWORD)),
            stub.GetJwks(auth_pb2.GetJwksRequest()),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    async with open_channel(server.target, DEV_INTERNAL_TOKEN) as channel:
        # The refused sign-up must not have happened.
        stub = auth_pb2_grpc.AuthServiceStub(channel)
        await stub.SignUp(auth_pb2.SignUpRequest(email="ada@example.com", password=PASSWORD))


async def test_jwks_verifies_tokens_independently(stub):
    signed_up = await stub.SignUp(auth_pb2.SignUpRequest(email="ada@example.com", password=PASSWORD))
    token = (await _sign_in(stub)).access_token
    jwks = json.loads((await stub.GetJwks(auth_pb2.GetJwksRequest())).jwks_json)
    by_kid = {jwk["kid"]: jwt.PyJWK(jwk) for jwk in jwks["keys"]}
    key = by_kid[jwt.get_unverified_header(token)["kid"]]
    # Real time here: the fake clock sits in the past, and these claims are PyJWT's to judge.
    claims = jwt.decode(
        token,
        key,
        algorithms=["ES256"],
        audience="authenticated",
        issuer="agentry-local",
        options={"verify_exp": False, "verify_iat": False},
    )
    assert claims["sub"] == signed_up.user_id and claims["account_id"] == signed_up.account_id
    assert all("d" not in jwk for jwk in jwks["keys"])


async def test_refresh_sign_out_api_keys_and_stream_tokens_over_grpc(stub):
    signed_up = await stub.SignUp(auth_pb2.SignUpRequest(email="ada@example.com", password=PASSWORD))
    signed_in = await _sign_in(stub)
    refreshed = await stub.Refresh(auth_pb2.RefreshRequest(refresh_token=signed_in.refresh_token))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Refresh(auth_pb2.RefreshRequest(refresh_token=signed_in.refresh_token))
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert _error_code(caught.value) == "refresh_token_reused"

    again = await _sign_in(stub)
    principal = (await stub.VerifyToken(auth_pb2.VerifyTokenRequest(token=again.access_token))).principal
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CreateApiKey(auth_pb2.CreateApiKeyRequest(principal=principal, name="ci"))
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED  # no session token: no key
    created = await stub.CreateApiKey(
        auth_pb2.CreateApiKeyRequest(principal=principal, name="ci", token=again.access_token)
    )
    assert created.key.startswith("agentry_sk_") and created.api_key.name == "ci"
    via_key = await stub.VerifyApiKey(auth_pb2.VerifyApiKeyRequest(key=created.key))
    assert via_key.principal.api_key_id == created.api_key.api_key_id
    assert via_key.principal.account_id == signed_up.account_id
    listed = await stub.ListApiKeys(auth_pb2.ListApiKeysRequest(account_id=signed_up.account_id))
    assert [k.api_key_id for k in listed.api_keys] == [created.api_key.api_key_id]
    assert created.key not in str(listed)
    await stub.RevokeApiKey(
        auth_pb2.RevokeApiKeyRequest(account_id=signed_up.account_id, api_key_id=created.api_key.api_key_id)
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.VerifyApiKey(auth_pb2.VerifyApiKeyRequest(key=created.key))
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED

    stream = await stub.IssueStreamToken(auth_pb2.IssueStreamTokenRequest(principal=principal, resource="run:r1"))
    assert jwt.decode(stream.token, options={"verify_signature": False})["resource"] == "run:r1"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.IssueStreamToken(auth_pb2.IssueStreamTokenRequest(principal=principal, resource="anything"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    await stub.ChangePassword(
        auth_pb2.ChangePasswordRequest(
            token=again.access_token, current_password=PASSWORD, new_password="a brand new password"
        )
    )
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.Refresh(auth_pb2.RefreshRequest(refresh_token=refreshed.refresh_token))
    await stub.SignOut(auth_pb2.SignOutRequest(token=again.access_token, scope="local"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.VerifyToken(auth_pb2.VerifyTokenRequest(token=again.access_token))
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
