"""Where the gateway finds the caller's token, and the Last-Event-ID it accepts."""

from __future__ import annotations

import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.requests import Request

from agentry.api.auth.v1 import auth_pb2
from agentry.gateway.deps import get_caller, get_stream_caller
from agentry.gateway.errors import ApiError
from agentry.gateway.routes import _sequence_number
from agentry.gateway.upstreams import Upstreams


class FakeAuth:
    """Accepts one token; remembers every token it was asked about."""

    def __init__(self, good: str) -> None:
        self.good, self.seen = good, []

    async def VerifyToken(self, request: auth_pb2.VerifyTokenRequest) -> auth_pb2.VerifyTokenResponse:
        self.seen.append(request.token)
        assert request.token == self.good
        return auth_pb2.VerifyTokenResponse(
            principal=auth_pb2.Principal(user_id="u1", account_id="a1", email="a@example.com")
        )


def request(path: str, *, query: str = "", authorization: str | None = None) -> Request:
    headers = [(b"authorization", authorization.encode())] if authorization is not None else []
    return Request({"type": "http", "method": "GET", "path": path, "query_string": query.encode(), "headers": headers})


@pytest.fixture
def auth() -> FakeAuth:
    return FakeAuth("tok")


@pytest.fixture
def upstreams(auth) -> Upstreams:
    return Upstreams(auth=auth, billing=None, runner=None, events=None)  # type: ignore[arg-type]


async def test_bearer_header(upstreams, auth):
    caller = await get_caller(request("/api/threads", authorization="bearer  tok "), upstreams)
    assert (caller.user_id, caller.account_id, caller.email) == ("u1", "a1", "a@example.com")
    assert auth.seen == ["tok"]


@pytest.mark.parametrize("path", ["/api/agent-run/stream", "/api/agent-run/r1/stream", "/api/threads"])
async def test_query_token_is_ignored_by_the_ordinary_dependency(upstreams, auth, path):
    with pytest.raises(ApiError) as refused:
        await get_caller(request(path, query="access_token=tok"), upstreams)
    assert (refused.value.status, refused.value.code) == (401, "unauthenticated")
    assert auth.seen == [], "the token never left the gateway"


def stream_request(path: str, path_params: dict, *, query: str = "", headers=()) -> Request:
    return Request(
        {
            "type": "http",
            "method": "GET",
            "path": path,
            "query_string": query.encode(),
            "headers": list(headers),
            "path_params": path_params,
        }
    )


class StreamAuth(FakeAuth):
    """Also publishes a signing key, and signs stream tokens with it like agentry.auth does."""

    def __init__(self, good: str) -> None:
        super().__init__(good)
        self.key = ec.generate_private_key(ec.SECP256R1())

    async def GetJwks(self, request):
        jwk = {**json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self.key.public_key())), "kid": "k1", "alg": "ES256"}
        return auth_pb2.GetJwksResponse(jwks_json=json.dumps({"keys": [jwk]}))

    def sign(self, *, aud: str = "agentry-stream", resource: str | None = "run:r1") -> str:
        now = int(time.time())
        claims = {
            "iss": "agentry-local",
            "aud": aud,
            "sub": "u1",
            "account_id": "a1",
            "email": "a@example.com",
            "iat": now,
            "exp": now + 300,
            "resource": resource,
        }
        return jwt.encode(
            {k: v for k, v in claims.items() if v is not None}, self.key, algorithm="ES256", headers={"kid": "k1"}
        )


async def test_stream_dependency_accepts_only_a_stream_token_for_this_stream_in_the_url():
    auth = StreamAuth("tok")
    upstreams = Upstreams(auth=auth, billing=None, runner=None, events=None)  # type: ignore[arg-type]
    run = ("/api/agent-run/r1/stream", {"run_id": "r1"})
    caller = await get_stream_caller(stream_request(*run, query=f"access_token={auth.sign()}"), upstreams)
    assert (caller.user_id, caller.account_id) == ("u1", "a1")
    thread = ("/api/threads/t1/stream", {"thread_id": "t1"})
    await get_stream_caller(stream_request(*thread, query=f"access_token={auth.sign(resource='thread:t1')}"), upstreams)
    refused = [
        (run, auth.sign(resource="run:r2")),  # another run's stream token
        (run, auth.sign(resource="thread:r1")),  # a thread's, for a run with the same id
        (run, auth.sign(resource=None)),  # no resource at all
        (thread, auth.sign()),  # a run's token on a thread stream
        (run, auth.sign(aud="authenticated")),  # an access token: never in a URL
        (run, "tok"),
        (run, "agentry_sk_an-api-key"),
    ]
    for (path, params), token in refused:
        with pytest.raises(ApiError) as caught:
            await get_stream_caller(stream_request(path, params, query=f"access_token={token}"), upstreams)
        assert caught.value.status == 401
    assert auth.seen == [], "a credential from the URL never reached VerifyToken"
    # A header credential still works on the stream routes, and wins over the query.
    await get_stream_caller(
        stream_request(*run, query="access_token=x", headers=[(b"authorization", b"Bearer tok")]), upstreams
    )
    assert auth.seen == ["tok"]


async def test_x_api_key_header(upstreams, auth):
    class KeyAuth(FakeAuth):
        async def VerifyApiKey(self, request):
            self.seen.append(request.key)
            return auth_pb2.VerifyTokenResponse(
                principal=auth_pb2.Principal(user_id="u1", account_id="a1", email="a@example.com", api_key_id="k1")
            )

    keys = KeyAuth("unused")
    up = Upstreams(auth=keys, billing=None, runner=None, events=None)  # type: ignore[arg-type]
    for headers in ([(b"x-api-key", b"agentry_sk_abc")], [(b"authorization", b"Bearer agentry_sk_abc")]):
        caller = await get_caller(
            Request({"type": "http", "method": "GET", "path": "/api/threads", "query_string": b"", "headers": headers}),
            up,
        )
        assert caller.api_key_id == "k1"
    assert keys.seen == ["agentry_sk_abc", "agentry_sk_abc"]


@pytest.mark.parametrize("value,expected", [("0", 0), ("7", 7), (" 42 ", 42), (str(2**63 - 1), 2**63 - 1)])
def test_last_event_id_accepted(value, expected):
    assert _sequence_number(value) == expected


@pytest.mark.parametrize("value", ["", "x", "-1", "+1", "1.0", "1e3", "²", "١", str(2**63), "9" * 5000])
def test_last_event_id_refused(value):
    with pytest.raises(ApiError) as refused:
        _sequence_number(value)
    assert (refused.value.status, refused.value.code) == (422, "invalid_last_event_id")
