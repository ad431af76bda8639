"""Where the gateway finds the caller's token, and the Last-Event-ID it accepts."""

from __future__ import annotations

import pytest
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
        return auth_pb2.VerifyTokenResponse(principal=auth_pb2.Principal(
            user_id="u1", account_id="a1", email="a@example.com"))


def request(path: str, *, query: str = "", authorization: str | None = None) -> Request:
    headers = [(b"authorization", authorization.encode())] if authorization is not None else []
    return Request({"type": "http", "method": "GET", "path": path, "query_string": query.encode(),
                    "headers": headers})


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


async def test_stream_dependency_accepts_the_query_token(upstreams, auth):
    caller = await get_stream_caller(request("/api/agent-run/r1/stream", query="access_token=tok"), upstreams)
    assert caller.account_id == "a1"
    # A header wins over the query parameter.
    await get_stream_caller(request("/api/agent-run/r1/stream", query="access_token=other",
                                    authorization="Bearer tok"), upstreams)
    assert auth.seen == ["tok", "tok"]


@pytest.mark.parametrize("value,expected", [("0", 0), ("7", 7), (" 42 ", 42), (str(2**63 - 1), 2**63 - 1)])
def test_last_event_id_accepted(value, expected):
    assert _sequence_number(value) == expected


@pytest.mark.parametrize("value", ["", "x", "-1", "+1", "1.0", "1e3", "²", "١", str(2**63), "9" * 5000])
def test_last_event_id_refused(value):
    with pytest.raises(ApiError) as refused:
        _sequence_number(value)
    assert (refused.value.status, refused.value.code) == (400, "invalid_last_event_id")
