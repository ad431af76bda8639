"""The `agentry` command: run the system (`dev`, `serve`, `up`), talk to it (`chat`), and grant
credit (`billing grant`)."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import signal
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Agentry: a self-hostable backend for tool-using AI agents.")
console = Console()

SERVICES = {
    "auth": "agentry.auth.main",
    "billing": "agentry.billing.main",
    "sandbox": "agentry.sandbox.main",
    "runner": "agentry.runner.main",
    "gateway": "agentry.gateway.main",
    "fake-llm": "agentry.fakellm.__main__",
}


@app.command()
def dev(
    data_dir: Annotated[Path, typer.Option(help="Where SQLite files, keys and sandboxes live.")] = Path("var"),
    port: Annotated[int, typer.Option(help="The gateway's HTTP port.")] = 8000,
) -> None:
    """Run every service in this process on embedded defaults (SQLite, in-process queue and stream)."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    from agentry.servicekit import configure_logging

    from .devstack import start_dev_stack

    # Readable text lines here (AGENTRY_LOG_FORMAT=json for JSON, as in production).
    configure_logging(os.environ.get("AGENTRY_LOG_LEVEL", "WARNING"),
                      json=os.environ.get("AGENTRY_LOG_FORMAT") == "json")

    async def _run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with contextlib.AsyncExitStack() as stack:
            with console.status("starting Agentry services..."):
                dev_stack = await start_dev_stack(stack, data_dir=data_dir, ports={"gateway": port})
            _banner(dev_stack)
            await stop.wait()
            console.print("stopping...")

    asyncio.run(_run())


def _banner(dev_stack) -> None:
    url = dev_stack.gateway_url
    console.print(f"[bold green]Agentry is running[/] — gateway {url}  (API docs: {url}/docs)")
    ports = ", ".join(f"{k} :{v}" for k, v in dev_stack.ports.items() if k != "gateway")
    console.print(f"gRPC services on 127.0.0.1: {ports}")
    if dev_stack.demo:
        console.print("[yellow]No LLM provider key is set: runs use the scripted demo model "
                      f"({dev_stack.default_model}). Set OPENAI_API_KEY or ANTHROPIC_API_KEY for a real one.[/]")
    else:
        console.print(f"Default model: {dev_stack.default_model}")
    console.print(f'Try it: [bold]uv run agentry chat --url {url} "list the files in the workspace"[/]  (Ctrl-C stops)')


@app.command()
def serve(service: Annotated[str, typer.Argument(help="auth | billing | sandbox | runner | gateway | fake-llm")]) -> None:
    """Run one service alone; it reads its settings from AGENTRY_* environment variables."""
    if service not in SERVICES:
        raise typer.BadParameter(f"unknown service {service!r}; choose one of {', '.join(SERVICES)}")
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import sys

    # The service reads its own command line (`migrate`, `--help`): here it has none.
    sys.argv = [f"agentry serve {service}"]
    module = importlib.import_module(SERVICES[service])
    module.main()


@app.command()
def up(
    database_url: Annotated[str, typer.Option(envvar="AGENTRY_DATABASE_URL")] =
        "postgresql+asyncpg://postgres@127.0.0.1:5432/agentry",
    redis_url: Annotated[str, typer.Option(envvar="AGENTRY_REDIS_URL")] = "redis://127.0.0.1:6379/0",
    amqp_url: Annotated[str, typer.Option(envvar="AGENTRY_AMQP_URL")] = "amqp://guest:guest@127.0.0.1:5672/",
    port: Annotated[int, typer.Option(help="The gateway's HTTP port.")] = 8000,
    data_dir: Annotated[Path, typer.Option()] = Path("var/split"),
    workers: Annotated[int, typer.Option(envvar="AGENTRY_UP_WORKERS", min=1,
                                         help="How many worker processes consume runs.")] = 1,
) -> None:
    """Split mode: every service in its own process, on PostgreSQL, Redis and RabbitMQ.

    A service that dies is restarted (0.5 s, doubling to 30 s while it keeps dying)."""
    from .split import SplitConfig, run_split_forever

    run_split_forever(SplitConfig(database_url=database_url, redis_url=redis_url, amqp_url=amqp_url,
                                  gateway_port=port, data_dir=data_dir, workers=workers), console)


@app.command()
def chat(
    prompt: Annotated[str, typer.Argument(help="What to ask the agent.")],
    url: Annotated[str, typer.Option(envvar="AGENTRY_URL")] = "http://127.0.0.1:8000",
    email: Annotated[str, typer.Option(envvar="AGENTRY_EMAIL")] = "dev@agentry.local",
    password: Annotated[str, typer.Option(envvar="AGENTRY_PASSWORD")] = "agentry-dev-password",
    thread: Annotated[str | None, typer.Option(help="Continue this thread instead of a new one.")] = None,
    model: Annotated[str | None, typer.Option(help="A LiteLLM model string.")] = None,
) -> None:
    """Sign in to a running gateway, start a run and render its stream live."""
    from .chat import run_chat

    raise typer.Exit(run_chat(url=url, email=email, password=password, prompt=prompt, thread_id=thread,
                              model=model, console=console))


billing_app = typer.Typer(no_args_is_help=True, help="Billing operations (local payments provider).")
app.add_typer(billing_app, name="billing")


@billing_app.command("grant")
def billing_grant(
    account: Annotated[str, typer.Argument(help="The account id to credit.")],
    amount: Annotated[str, typer.Argument(help="USD to grant, e.g. 5 or 2.50.")],
    target: Annotated[str, typer.Option(envvar="AGENTRY_BILLING_TARGET", help="The billing service's gRPC address.")]
    = "127.0.0.1:50052",
    key: Annotated[str, typer.Option(help="Idempotency key: the same key grants once. Default: a new one.")] = "",
    note: Annotated[str, typer.Option(help="Why (kept with the ledger entry).")] = "agentry billing grant",
) -> None:
    """Credit an account (USD), authenticated with AGENTRY_INTERNAL_TOKEN like every internal call."""
    import uuid

    from .billing import grant_command

    code, line = grant_command(account, amount, target, key or uuid.uuid4().hex, note)
    (console.print if code == 0 else typer.echo)(line, **({} if code == 0 else {"err": True}))
    raise typer.Exit(code)


if __name__ == "__main__":
    app()
