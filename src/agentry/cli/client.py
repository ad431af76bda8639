"""The gateway's HTTP API as the CLI uses it: sign in, JSON calls with readable errors, SSE.

Every failure the user can meet ends in a `CliError` whose message says what to do: the
gateway's own `{"error": {"code", "message"}}` body, or, when nothing answers at the URL, a
sentence naming the URL and how to start a gateway there.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx


class RunOver(Exception):
    """The stream answered 204: the run has finished and has no event after the one asked for."""


class CliError(Exception):
    """A failure to show as one line; `code` is the process exit status."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def unreachable(url: str, exc: BaseException) -> CliError:
    return CliError(
        f"cannot reach the Agentry gateway at {url} ({type(exc).__name__}: {exc or 'no answer'}). "
        "Start one with `agentry dev` (or `make run`), or point --url / AGENTRY_URL at yours."
    )


def api_error(response: httpx.Response, what: str) -> CliError:
    try:
        error = response.json()["error"]
        message = f"{error['code']}: {error['message']}"
    except Exception:  # noqa: BLE001 - any unparseable body: show the start of the raw text
        message = response.text[:300]
    return CliError(f"{what} failed ({response.status_code}): {message}")


class Gateway:
    """A signed-in session on one gateway. Use as a context manager.

    `transport` replaces httpx's (tests inject faults through it). Timeouts: 30 s to connect and
    for a JSON answer; none between the events of a stream (the gateway sends keep-alives)."""

    def __init__(self, url: str, *, transport: httpx.BaseTransport | None = None) -> None:
        self.url = url.rstrip("/")
        self.http = httpx.Client(base_url=self.url, timeout=httpx.Timeout(30.0, read=None), transport=transport)

    def __enter__(self) -> Gateway:
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()

    # -- plain calls ---------------------------------------------------------------------------

    def request(self, method: str, path: str, what: str, **kwargs: Any) -> httpx.Response:
        """Sends one request; a non-2xx answer or a transport failure raises CliError."""
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise unreachable(self.url, exc) from None
        if not response.is_success:
            raise api_error(response, what)
        return response

    def get(self, route: str, what: str, **params: Any) -> Any:
        clean = {k: v for k, v in params.items() if v is not None}
        return self.request("GET", route, what, params=clean).json()

    def post(self, path: str, what: str, json: Any = None) -> Any:
        response = self.request("POST", path, what, json=json)
        return response.json() if response.content else None

    def sign_in(self, email: str, password: str, token: str | None = None) -> None:
        """Uses `token` (an access token or API key) when given; otherwise signs in with the
        password, signing the account up first if it does not exist yet (the dev convenience)."""
        if not token:
            body = {"email": email, "password": password}
            try:
                response = self.http.post("/api/auth/token", json=body)
                if response.status_code == 401:
                    signup = self.http.post("/api/auth/signup", json=body)
                    if signup.status_code != 409 and not signup.is_success:
                        raise api_error(signup, "sign-up")
                    response = self.http.post("/api/auth/token", json=body)
            except httpx.TransportError as exc:
                raise unreachable(self.url, exc) from None
            if not response.is_success:
                raise api_error(response, "sign-in")
            token = response.json()["access_token"]
        self.http.headers["Authorization"] = f"Bearer {token}"

    # -- the event stream ------------------------------------------------------------------------

    @contextmanager
    def stream(self, run_id: str, after_seq: int) -> Iterator[Iterator[tuple[int | None, str]]]:
        """Opens GET /api/agent-run/{run_id}/stream, resuming after `after_seq` (Last-Event-ID),
        and yields an iterator of (seq, data) pairs. A refusal raises CliError; 204 (the run is
        over and has nothing after `after_seq`) raises RunOver; a connection that fails midway
        raises httpx.TransportError from the iterator (the caller reconnects)."""
        headers = {"Last-Event-ID": str(after_seq)} if after_seq else {}
        try:
            with self.http.stream("GET", f"/api/agent-run/{run_id}/stream", headers=headers) as response:
                if not response.is_success:
                    response.read()
                    raise api_error(response, "stream")
                if response.status_code == 204:
                    raise RunOver(run_id)
                yield iter_sse(response)
        except httpx.ConnectError as exc:
            raise unreachable(self.url, exc) from None


def iter_sse(response: httpx.Response) -> Iterator[tuple[int | None, str]]:
    """Yields (id, data) for each event of an SSE response; comments and `retry:` are skipped.
    `id` is the event's sequence number (None when the event has none)."""
    event_id: int | None = None
    data: list[str] = []
    for line in response.iter_lines():
        if not line:
            if data:
                yield event_id, "\n".join(data)
            event_id, data = None, []
        elif line.startswith("id:"):
            value = line[3:].strip()
            event_id = int(value) if value.isdigit() else None
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
