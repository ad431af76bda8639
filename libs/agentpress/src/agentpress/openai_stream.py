"""The direct lane to OpenAI-compatible servers: streamed chat completions without LiteLLM's
per-call and per-chunk machinery.

Measured on this machine (bench/BENCHMARKS.md, "Performance at scale"): a streamed call through
`litellm.acompletion` costs about 12 ms of CPU before the first chunk and after the last (request
building, logging objects, a success-logging thread that rebuilds the whole response, cost
lookups) and about 0.55 ms per chunk (a pydantic object per chunk, wrapped twice). That is most
of what a run costs. For the provider LiteLLM itself calls "openai" -- api.openai.com, or any
server given as `api_base` with an `openai/...` model (vLLM, Ollama, LM Studio, llama.cpp, a
gateway) -- LiteLLM sends the request as it is, so agentpress sends it itself: one aiohttp session
per event loop (keep-alive connections reused across calls), the body encoded once with orjson,
each SSE line decoded with orjson straight into a ModelDelta. aiohttp, not httpx: its C parser
reads a chunk for ~16 µs of CPU against httpx's ~50, and a 14-chunk call costs ~0.4 ms against
~2.9 (bench/BENCHMARKS.md, "Third sitting"). An `openai/...` model takes
the lane without LiteLLM even being imported (agentpress.catalog answers its provider, price and
window from LiteLLM's own table); LiteLLM decides for any other name. A failed call raises the
ModelCallError that agentpress.retries.classify makes of LiteLLM's exception for the same answer
(the same kind, Retry-After and transience), built here from the HTTP status, headers and body,
so retries and fallbacks treat both lanes alike and a failure never imports LiteLLM (which costs
seconds of CPU, once per process, when it matters least: under load, when calls fail).

Everything else goes through LiteLLM: other providers, settings LiteLLM translates for OpenAI
(`thinking`, provider-specific extras, `max_tokens`/`temperature` on reasoning models), and any
model when `AGENTPRESS_DIRECT_OPENAI=0`.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Mapping
from types import ModuleType
from typing import TYPE_CHECKING, Any

import orjson

from agentpress import catalog
from agentpress.errors import ModelCallError
from agentpress.retries import ErrorKind, kind_from_status, model_error

if TYPE_CHECKING:
    import aiohttp

# aiohttp is imported by the first lane built, not with agentpress: a process that never calls a
# model (the runner's API role, the gateway's OpenAPI document) does not load it.

__all__ = ["DirectLane", "aclose_sessions", "direct_lane", "direct_lane_enabled"]

# Models that LiteLLM sends with translated parameters (max_completion_tokens, no temperature).
_REASONING_PREFIXES = ("o1", "o3", "o4", "gpt-5")
_CONTEXT_MARKERS = ("context_length_exceeded", "maximum context length", "context window", "too many tokens")
_MAX_LINE = 16 * 1024 * 1024  # one SSE line longer than this is not a chat-completion chunk
# The event loop's session, and the suspended generator whose close (the loop's
# shutdown_asyncgens, which asyncio.run and asyncio.Runner call) closes it.
_sessions: dict[asyncio.AbstractEventLoop, tuple[aiohttp.ClientSession, AsyncIterator[None]]] = {}
_lanes: dict[tuple[str, str | None, str | None], DirectLane | None] = {}


def direct_lane_enabled() -> bool:
    return os.environ.get("AGENTPRESS_DIRECT_OPENAI", "1").strip().lower() not in ("0", "false", "no", "off")


async def _closes(session: aiohttp.ClientSession) -> AsyncIterator[None]:
    try:
        yield
    finally:
        await session.close()


async def _session() -> aiohttp.ClientSession:
    """One session per event loop: its connections stay open between calls (no TLS handshake or
    TCP connect per call), and a session never outlives or crosses its loop: it is closed when
    the loop shuts down its async generators (or by `aclose_sessions`)."""
    loop = asyncio.get_running_loop()
    held = _sessions.get(loop)
    if held is not None and not held[0].closed:
        return held[0]
    import aiohttp

    for other in [other for other in _sessions if other.is_closed()]:
        del _sessions[other]
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=60),
        # Proxies from the environment are read once per lane (`_proxy_for`): aiohttp's trust_env
        # looks them (and ~/.netrc) up again in a thread for every request.
        trust_env=False,
        cookie_jar=aiohttp.DummyCookieJar(),  # a model API keeps no cookies
        auto_decompress=True,
        raise_for_status=False,
    )
    closer = _closes(session)
    await anext(closer)  # registered with the loop: shutdown_asyncgens closes the session
    _sessions[loop] = (session, closer)
    return session


async def aclose_sessions() -> None:
    """Closes this event loop's session (its keep-alive connections); the next call opens another."""
    held = _sessions.pop(asyncio.get_running_loop(), None)
    if held is not None:
        await held[0].close()


class DirectLane:
    """Streams one OpenAI-compatible model. Build it with `direct_lane`, which says whether the
    model may take this lane at all."""

    def __init__(
        self,
        *,
        model: str,
        provider_model: str,
        base_url: str,
        api_key: str | None,
        timeout: float,
    ) -> None:
        self.model = model  # as the caller named it, e.g. "openai/gpt-4o-mini"
        self.provider_model = provider_model  # as the server knows it, e.g. "gpt-4o-mini"
        self.url = base_url.rstrip("/") + "/chat/completions"
        self._headers = {"content-type": "application/json", "accept": "text/event-stream"}
        if api_key:
            self._headers["authorization"] = f"Bearer {api_key}"
        organization = os.environ.get("OPENAI_ORGANIZATION")
        if organization:
            self._headers["openai-organization"] = organization
        self.timeout = timeout
        self.proxy = _proxy_for(self.url)

    def accepts(self, settings: Mapping[str, Any]) -> bool:
        """Settings sent as they are (LiteLLM would not translate them for this model)."""
        if any(key not in ("temperature", "max_tokens", "reasoning_effort", "tools") for key in settings):
            return False
        reasoning = self.provider_model.split("/")[-1].lower().startswith(_REASONING_PREFIXES)
        return not (reasoning and ("max_tokens" in settings or "temperature" in settings))

    async def stream(self, messages: list[dict[str, Any]], settings: Mapping[str, Any]) -> AsyncIterator[dict]:
        """The decoded `data:` objects of the server's stream, in order (usage in the last one).
        Raises ModelCallError (ModelTransientError when worth retrying), as classify would of
        LiteLLM's exception for the same answer. `timeout` (seconds) bounds the connect (at most
        10 s) and each wait for more of the answer, as httpx's and the OpenAI SDK's timeout do."""
        import aiohttp

        body = orjson.dumps(
            {
                "model": self.provider_model,
                "messages": messages,
                "stream": True,
                "stream_options": {"include_usage": True},
                **settings,
            }
        )
        session = await _session()
        timeout = aiohttp.ClientTimeout(
            total=None, connect=min(self.timeout, 10.0), sock_connect=min(self.timeout, 10.0), sock_read=self.timeout
        )
        try:
            response = await session.post(self.url, data=body, headers=self._headers, timeout=timeout, proxy=self.proxy)
        except TimeoutError as exc:  # aiohttp's connect and read timeouts are TimeoutErrors
            raise model_error(ErrorKind.TIMEOUT, f"Timeout: request timed out: {exc!r}") from exc
        except aiohttp.ClientError as exc:
            raise model_error(ErrorKind.CONNECTION, f"APIConnectionError: could not reach {self.url}: {exc!r}") from exc
        try:
            if response.status != 200:
                text = (await response.read()).decode("utf-8", "replace")[:2000]
                raise self._error(response.status, text, response.headers)
            done = False
            pending = b""
            # Lines are split here rather than by aiohttp's readline, which refuses a line longer
            # than its buffer: a chunk may carry a whole tool call's arguments.
            async for data in response.content.iter_any():
                if pending:
                    data = pending + data
                lines = data.split(b"\n")
                pending = lines.pop()
                if len(pending) > _MAX_LINE:
                    raise model_error(ErrorKind.SERVER_ERROR, "APIError: a stream line longer than 16 MiB", status=500)
                for line in lines:
                    # Read to the end of the body even after [DONE]: a response left unread
                    # closes its connection too, and the next call would connect again.
                    if done or not line.startswith(b"data:"):
                        continue  # blank separators, comments (": keep-alive"), event: lines
                    payload = line[5:].strip()
                    if payload == b"[DONE]":
                        done = True
                        continue
                    chunk = self._decode(payload)
                    if chunk is not None:
                        yield chunk
            if pending.startswith(b"data:") and not done:  # a last line without its newline
                payload = pending[5:].strip()
                if payload != b"[DONE]":
                    chunk = self._decode(payload)
                    if chunk is not None:
                        yield chunk
        except TimeoutError as exc:
            raise model_error(ErrorKind.TIMEOUT, f"Timeout: stream timed out: {exc!r}") from exc
        except aiohttp.ClientError as exc:
            raise model_error(
                ErrorKind.CONNECTION, f"APIConnectionError: stream from {self.url} broke: {exc!r}"
            ) from exc
        finally:
            response.release()

    def _decode(self, payload: bytes) -> dict | None:
        """One `data:` payload: the chunk, None for a JSON value that is not an object, an error
        the server sent in the stream raised as one."""
        try:
            data = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            data = _lenient_loads(payload)  # only on this rare path: nothing per chunk
            if data is None:
                detail = f"APIError: unreadable stream chunk: {payload[:200]!r}"
                raise model_error(ErrorKind.SERVER_ERROR, detail, status=500) from exc
        if not isinstance(data, dict):
            return None
        if data.get("error"):
            detail = f"APIError: error in stream: {data['error']!r}"[:1000]
            raise model_error(ErrorKind.SERVER_ERROR, detail, status=500)
        return data

    def _error(self, status: int, text: str, headers: Mapping[str, str]) -> ModelCallError:
        """The error for an answer other than 200: the kind LiteLLM's exception mapping gives the
        same status and body (a context-window or content-filter message on a 400 says so)."""
        lowered = text.lower()
        if status in (400, 413) and any(marker in lowered for marker in _CONTEXT_MARKERS):
            kind = ErrorKind.CONTEXT_WINDOW
        elif status == 400 and ("content_filter" in lowered or "content_policy" in lowered):
            kind = ErrorKind.CONTENT_FILTER
        else:
            kind = kind_from_status(status)
        return model_error(kind, f"HTTP {status} from {self.model}: {text}", status=status, headers=headers)


def direct_lane(
    litellm: ModuleType | None, model: str, *, api_base: str | None, api_key: str | None, timeout: float
) -> DirectLane | None:
    """The direct lane for `model`, or None when it must go through LiteLLM (not an OpenAI
    protocol provider by LiteLLM's own reckoning, or the lane is turned off). Cached per model.
    Without `litellm` (not imported), only what agentpress.catalog resolves as LiteLLM would
    (`openai/<name>`) takes the lane."""
    if not direct_lane_enabled():
        return None
    key = (model, api_base, api_key)
    if key in _lanes:
        lane = _lanes[key]
        if lane is not None:
            lane.timeout = timeout
        return lane
    lane = None
    if litellm is None:
        # What LiteLLM's get_llm_provider answers for `openai/<name>`: (<name>, "openai", None, api_base).
        name = catalog.openai_provider(model)
        if name is None:
            return None  # not cached: LiteLLM decides, once imported
        resolved: tuple[str, str, str | None, str | None] | None = (name, "openai", None, api_base)
    else:
        try:
            resolved = litellm.get_llm_provider(model, api_base=api_base)
        except Exception:  # noqa: BLE001 - LiteLLM does not know it either: let LiteLLM say so on the call
            resolved = None
    if resolved is not None:
        provider_model, provider, dynamic_key, resolved_base = resolved
        if provider == "openai":
            base = (
                resolved_base
                or api_base
                or os.environ.get("OPENAI_API_BASE")
                or os.environ.get("OPENAI_BASE_URL")
                or "https://api.openai.com/v1"
            )
            key_ = api_key or dynamic_key or os.environ.get("OPENAI_API_KEY")
            lane = DirectLane(model=model, provider_model=provider_model, base_url=base, api_key=key_, timeout=timeout)
    if len(_lanes) > 1024:
        _lanes.clear()
    _lanes[key] = lane
    return lane


def _proxy_for(url: str) -> str | None:
    """The proxy the environment names for `url` (HTTP_PROXY / HTTPS_PROXY / ALL_PROXY, unless
    NO_PROXY covers its host), as httpx and the OpenAI SDK would use; None for a direct connection."""
    import urllib.parse
    import urllib.request

    parts = urllib.parse.urlsplit(url)
    if parts.hostname is None or urllib.request.proxy_bypass(parts.hostname):
        return None
    proxies = urllib.request.getproxies()
    return proxies.get(parts.scheme) or proxies.get("all") or None


def _lenient_loads(payload: bytes) -> Any:
    """A chunk orjson refuses may still be JSON: an unpaired surrogate escape (\\ud800), which
    models do send. The stdlib reads it; agentpress.safe_text replaces it downstream."""
    try:
        return json.loads(payload)
    except ValueError:
        return None
