"""Every service in one process, each on its own loopback port, still talking real gRPC.

This is `agentry dev` (and what `make run` and the embedded-mode tests start): SQLite files,
the in-process queue and event stream, the local auth, billing and sandbox providers, and, when
no LLM provider key is set, the scripted demo model served by the fake OpenAI-compatible server.
"""

from __future__ import annotations

import contextlib
import logging
import os
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


def provider_default_model(environ: os._Environ[str] | dict[str, str] = os.environ) -> str | None:
    """The default model for the first provider key found, or None when there is none."""
    for key, model in PROVIDER_KEYS.items():
        if environ.get(key):
            return model
    return None


@dataclass
class DevStack:
    gateway_url: str
    ports: dict[str, int]
    demo: bool
    llm_base_url: str | None
    default_model: str
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
    data_dir.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - once, before anything is served

    def db(name: str) -> str:
        return f"sqlite+aiosqlite:///{data_dir / f'{name}.db'}"

    demo = False
    runner_extra: dict = {}
    if llm_api_base is not None:
        default_model = (runner_overrides or {}).get("default_model", DEMO_MODEL)
        runner_extra = {"llm_api_base": llm_api_base}
    elif model := provider_default_model():
        default_model = os.environ.get("AGENTRY_RUNNER_DEFAULT_MODEL", model)
    else:
        from agentry.fakellm import FakeLLMServer

        demo = True
        llm = FakeLLMServer(ttft_seconds=0.3, tokens_per_second=40)
        await llm.start()
        stack.push_async_callback(llm.stop)
        llm_api_base = llm.base_url
        default_model = DEMO_MODEL
        runner_extra = {"llm_api_base": llm_api_base, "force_model": DEMO_MODEL}

    auth = await start_auth(AuthSettings(port=ports["auth"], database_url=db("auth"),
                                         key_path=data_dir / "auth-signing-key.pem", **(auth_overrides or {})),
                            stack)
    billing = await start_billing(BillingSettings(port=ports["billing"], database_url=db("billing"),
                                                  **(billing_overrides or {})), stack)
    # Dev mode runs sandbox commands unisolated when bubblewrap is missing (the sandbox service
    # logs a loud warning); AGENTRY_SANDBOX_ALLOW_UNISOLATED=false refuses them instead.
    sandbox = await start_sandbox(SandboxSettings(port=ports["sandbox"], database_url=db("sandbox"),
                                                  root_dir=data_dir / "sandboxes",
                                                  allow_unisolated=os.environ.get(  # pyright: ignore[reportArgumentType] - pydantic parses it
                                                      "AGENTRY_SANDBOX_ALLOW_UNISOLATED", "true")), stack)
    events = MemoryEventStream()
    stack.push_async_callback(events.close)
    runner = await start_runner(
        RunnerSettings(port=ports["runner"], database_url=db("runner"), role="all",
                       sandbox_target=sandbox.target, billing_target=billing.target,
                       **{"default_model": default_model, **runner_extra, **(runner_overrides or {})}),
        stack, events=events, agents=agents)
    gateway = await start_gateway(
        GatewaySettings(port=ports["gateway"], auth_target=auth.target, billing_target=billing.target,
                        sandbox_target=sandbox.target, runner_target=runner.target, **(gateway_overrides or {})),
        stack, events=events)
    return DevStack(
        gateway_url=gateway.base_url,
        ports={"auth": auth.port, "billing": billing.port, "sandbox": sandbox.port, "runner": runner.port,
               "gateway": gateway.port},
        demo=demo, llm_base_url=llm_api_base, default_model=default_model, events=events,
    )
