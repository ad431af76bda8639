"""Every service in one process, each on its own loopback port, still talking real gRPC.

This is `agentry dev` (and what `make run` and the embedded-mode tests start): SQLite files,
the in-process queue and event stream, the local auth, billing and sandbox providers, and, when
no LLM provider key is set, the scripted demo model served by the fake OpenAI-compatible server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from agentry.auth.config import AuthSettings
from agentry.auth.main import start as start_auth
from agentry.billing.config import BillingSettings
from agentry.billing.main import start as start_billing
from agentry.gateway.config import GatewaySettings
from agentry.gateway.main import start as start_gateway
from agentry.runner.config import RunnerSettings
from agentry.runner.main import start as start_runner
from agentry.sandbox.config import SandboxSettings
from agentry.sandbox.main import start as start_sandbox
from agentry.servicekit.eventstream import MemoryEventStream

logger = logging.getLogger(__name__)

# Environment variables through which LiteLLM finds a real provider.
PROVIDER_KEYS: dict[str, str] = {
    "OPENAI_API_KEY": "openai/gpt-4o-mini",
    "ANTHROPIC_API_KEY": "anthropic/claude-sonnet-4-5",
    "GEMINI_API_KEY": "gemini/gemini-2.5-flash",
    "OPENROUTER_API_KEY": "openrouter/openai/gpt-4o-mini",
    "GROQ_API_KEY": "groq/llama-3.3-70b-versatile",
    "MISTRAL_API_KEY": "mistral/mistral-small-latest",
    "DEEPSEEK_API_KEY": "deepseek/deepseek-chat",
    "XAI_API_KEY": "xai/grok-3-mini",
}
DEMO_MODEL = "openai/agentry-demo"
DEFAULT_PORTS = {"auth": 50051, "billing": 50052, "sandbox": 50053, "runner": 50054, "gateway": 8000}


BASE_URL_VARS = ("OPENAI_API_BASE", "OPENAI_BASE_URL")
# Variables that name a provider other than by `<PROVIDER>_API_KEY`.
_OTHER_KEYS = {
    "GOOGLE_API_KEY": "gemini/gemini-2.5-flash",
    "TOGETHERAI_API_KEY": "together_ai/meta-llama/Llama-3.3-70B-Instruct-Turbo",
    "AWS_ACCESS_KEY_ID": "bedrock/anthropic.claude-3-5-haiku-20241022-v1:0",
}


@dataclass(frozen=True)
class ModelChoice:
    """What runs will use when a request names no model.

    `source`: "base_url" (an OpenAI-compatible server named by OPENAI_API_BASE / OPENAI_BASE_URL:
    Ollama, vLLM, LM Studio; no key needed), "provider_key" (the first provider key found, in
    `key_var`), or "demo" (nothing configured: the scripted demo model, served locally)."""

    source: str
    model: str
    base_url: str | None = None
    api_key: str | None = None
    key_var: str | None = None

    @property
    def demo(self) -> bool:
        return self.source == "demo"


def _litellm_provider(var: str) -> str | None:
    """The LiteLLM provider a `<PROVIDER>_API_KEY` variable names, if LiteLLM knows it."""
    if not var.endswith("_API_KEY"):
        return None
    name = var.removesuffix("_API_KEY").lower()
    import litellm

    known = {getattr(p, "value", p) for p in litellm.provider_list}
    # Only providers with chat models (LiteLLM also lists vector stores, observability tools...).
    return name if name in known and litellm.models_by_provider.get(name) else None


def _first_model(provider: str) -> str:
    import litellm

    models = sorted(litellm.models_by_provider.get(provider) or ())
    model = models[0] if models else "default"
    return model if model.startswith(f"{provider}/") else f"{provider}/{model}"


def _served_model(base_url: str, api_key: str | None) -> str | None:
    """The first model an OpenAI-compatible server lists (GET {base}/models), or None."""
    import httpx

    try:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        answer = httpx.get(base_url.rstrip("/") + "/models", headers=headers, timeout=2.0)
        ids = [m["id"] for m in answer.json().get("data", []) if isinstance(m, dict) and m.get("id")]
        return f"openai/{ids[0]}" if ids else None
    except Exception:  # noqa: BLE001 - a server that does not list models: fall back to the default
        return None


def resolve_model(environ: Mapping[str, str] | None = None, *, probe: bool = True) -> ModelChoice:
    """Decides which model and server runs use, from the environment:

    1. OPENAI_API_BASE (or OPENAI_BASE_URL) alone selects that server, with OPENAI_API_KEY if set
       (local servers need none); the model is AGENTRY_RUNNER_DEFAULT_MODEL, else the first one
       the server lists at /models (`probe`), else openai/gpt-4o-mini.
    2. Else any provider key LiteLLM knows (`<PROVIDER>_API_KEY` for a LiteLLM provider, e.g.
       OPENAI_API_KEY, ANTHROPIC_API_KEY, TOGETHERAI_API_KEY, or GOOGLE_API_KEY, AWS_ACCESS_KEY_ID):
       LiteLLM reads the key itself; the model is AGENTRY_RUNNER_DEFAULT_MODEL, else a default for
       that provider.
    3. Else the demo model (nothing configured at all).
    """
    env = os.environ if environ is None else environ
    override = env.get("AGENTRY_RUNNER_DEFAULT_MODEL") or None
    base_var = next((v for v in BASE_URL_VARS if env.get(v)), None)
    if base_var is not None:
        base_url = env[base_var]
        api_key = env.get("OPENAI_API_KEY") or None
        model = override or (probe and _served_model(base_url, api_key)) or "openai/gpt-4o-mini"
        return ModelChoice("base_url", model, base_url=base_url, api_key=api_key, key_var=base_var)
    for var, model in PROVIDER_KEYS.items():
        if env.get(var):
            return ModelChoice("provider_key", override or model, key_var=var)
    for var in sorted(env):
        if not env.get(var):
            continue
        if _OTHER_KEYS.get(var):
            return ModelChoice("provider_key", override or _OTHER_KEYS[var], key_var=var)
        provider = _litellm_provider(var)
        if provider is not None:
            return ModelChoice("provider_key", override or _first_model(provider), key_var=var)
    return ModelChoice("demo", DEMO_MODEL)


def provider_default_model(environ: Mapping[str, str] | None = None) -> str | None:
    """The default model when a provider (a key or a base URL) is configured, else None."""
    choice = resolve_model(environ, probe=False)
    return None if choice.demo else choice.model


class PortInUse(Exception):
    """A port a service was asked to listen on is taken (`service`, `port`)."""

    def __init__(self, service: str, port: int, host: str = "127.0.0.1") -> None:
        super().__init__(f"port {port} ({service}) is already in use on {host}")
        self.service, self.port, self.host = service, port, host


def check_ports_free(ports: Mapping[str, int], host: str = "127.0.0.1") -> None:
    """Raises PortInUse for the first fixed port (0 = any free one) that cannot be bound, before
    anything starts: a taken port is then one clear error, not a traceback from deep in a server."""
    for service, port in ports.items():
        if not port:
            continue
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn and gRPC bind
            try:
                sock.bind((host, port))
            except OSError:
                raise PortInUse(service, port, host) from None


@dataclass
class DevStack:
    gateway_url: str
    ports: dict[str, int]
    demo: bool
    llm_base_url: str | None
    default_model: str
    # Where the model choice came from: "base_url", "provider_key", "demo" or "test" (llm_api_base given).
    model_source: str = "test"
    # The variable that chose it (OPENAI_API_BASE, ANTHROPIC_API_KEY, ...), when one did.
    model_var: str | None = None
    events: MemoryEventStream = field(repr=False, default_factory=MemoryEventStream)


async def start_dev_stack(
    stack: contextlib.AsyncExitStack,
    *,
    data_dir: Path,
    ports: dict[str, int] | None = None,
    llm_api_base: str | None = None,
    runner_overrides: dict | None = None,
    billing_overrides: dict | None = None,
    agents=None,
    auth_overrides: dict | None = None,
    gateway_overrides: dict | None = None,
) -> DevStack:
    """Starts auth, billing, sandbox, runner (api + worker) and the gateway.

    With `llm_api_base` the runner talks to that OpenAI-compatible server (tests). Otherwise, if
    a provider key is in the environment it is used unchanged; if not, the scripted demo model is
    served locally and every run uses it. `billing_overrides` are extra BillingSettings fields
    (tests start an account with no credit through it).
    """
    ports = {**DEFAULT_PORTS, **(ports or {})}
    check_ports_free(ports)
    data_dir.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - once, before anything is served
    from agentry.servicekit import tracing

    tracing.configure_tracing("agentry")  # one process, one service name (only with an OTLP endpoint)

    def db(name: str) -> str:
        return f"sqlite+aiosqlite:///{data_dir / f'{name}.db'}"

    demo = False
    runner_extra: dict = {}
    choice = ModelChoice("test", DEMO_MODEL)
    if llm_api_base is not None:
        default_model = (runner_overrides or {}).get("default_model", DEMO_MODEL)
        runner_extra = {"llm_api_base": llm_api_base}
    elif not (choice := await asyncio.to_thread(resolve_model)).demo:
        default_model = choice.model
        if choice.base_url:
            llm_api_base = choice.base_url
            runner_extra = {"llm_api_base": choice.base_url, "llm_api_key": choice.api_key}
    else:
        from agentry.fakellm import FakeLLMServer

        demo = True
        llm = FakeLLMServer(ttft_seconds=0.3, tokens_per_second=40)
        await llm.start()
        stack.push_async_callback(llm.stop)
        llm_api_base = llm.base_url
        default_model = DEMO_MODEL
        runner_extra = {"llm_api_base": llm_api_base, "force_model": DEMO_MODEL}

    auth = await start_auth(
        AuthSettings(
            port=ports["auth"],
            database_url=db("auth"),
            key_path=data_dir / "auth-signing-key.pem",
            **(auth_overrides or {}),
        ),
        stack,
    )
    billing = await start_billing(
        BillingSettings(port=ports["billing"], database_url=db("billing"), **(billing_overrides or {})), stack
    )
    # Dev mode runs sandbox commands unisolated when bubblewrap is missing (the sandbox service
    # logs a loud warning); AGENTRY_SANDBOX_ALLOW_UNISOLATED=false refuses them instead.
    sandbox = await start_sandbox(
        SandboxSettings(
            port=ports["sandbox"],
            database_url=db("sandbox"),
            root_dir=data_dir / "sandboxes",
            allow_unisolated=os.environ.get(  # pyright: ignore[reportArgumentType] - pydantic parses it
                "AGENTRY_SANDBOX_ALLOW_UNISOLATED", "true"
            ),
        ),
        stack,
    )
    events = MemoryEventStream()
    stack.push_async_callback(events.close)
    runner = await start_runner(
        RunnerSettings(
            port=ports["runner"],
            database_url=db("runner"),
            role="all",
            sandbox_target=sandbox.target,
            billing_target=billing.target,
            **{"default_model": default_model, **runner_extra, **(runner_overrides or {})},
        ),
        stack,
        events=events,
        agents=agents,
    )
    gateway = await start_gateway(
        GatewaySettings(
            port=ports["gateway"],
            auth_target=auth.target,
            billing_target=billing.target,
            sandbox_target=sandbox.target,
            runner_target=runner.target,
            **(gateway_overrides or {}),
        ),
        stack,
        events=events,
    )
    return DevStack(
        gateway_url=gateway.base_url,
        ports={
            "auth": auth.port,
            "billing": billing.port,
            "sandbox": sandbox.port,
            "runner": runner.port,
            "gateway": gateway.port,
        },
        demo=demo,
        llm_base_url=llm_api_base,
        default_model=default_model,
        events=events,
        model_source=choice.source,
        model_var=choice.key_var,
    )
