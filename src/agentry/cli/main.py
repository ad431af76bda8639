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
from rich.text import Text

# No local variables in tracebacks: they would print passwords and tokens.
app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    help="Agentry: a self-hostable backend for tool-using AI agents.",
)
console = Console()
err_console = Console(stderr=True)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        console.print(f"agentry {version('agentry')}", highlight=False)
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Agentry: a self-hostable backend for tool-using AI agents."""


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
    port: Annotated[
        int,
        typer.Option(envvar="AGENTRY_DEV_PORT", min=0, max=65535, help="The gateway's HTTP port (0: any free one)."),
    ] = 8000,
    free_grpc_ports: Annotated[
        bool,
        typer.Option(
            "--free-grpc-ports",
            envvar="AGENTRY_DEV_FREE_GRPC_PORTS",
            help="Put the gRPC services (auth, billing, sandbox, runner) on free ports instead of 50051-50054.",
        ),
    ] = False,
) -> None:
    """Run every service in this process on embedded defaults (SQLite, in-process queue and stream)."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    from agentry.servicekit import configure_logging

    from .devstack import PortInUse, start_dev_stack

    # Readable text lines here (AGENTRY_LOG_FORMAT=json for JSON, as in production).
    configure_logging(
        os.environ.get("AGENTRY_LOG_LEVEL", "WARNING"), json=os.environ.get("AGENTRY_LOG_FORMAT") == "json"
    )
    ports = {"gateway": port}
    if free_grpc_ports:
        ports |= {"auth": 0, "billing": 0, "sandbox": 0, "runner": 0}

    async def _run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with contextlib.AsyncExitStack() as stack:
            with console.status("starting Agentry services..."):
                dev_stack = await start_dev_stack(stack, data_dir=data_dir, ports=ports)
            freeze_startup_heap()
            _banner(dev_stack)
            await stop.wait()
            console.print("stopping...")

    from agentry.servicekit.server import freeze_startup_heap, run_on_event_loop

    try:
        run_on_event_loop(_run(), spawns_processes=True)  # it hosts the sandbox
    except PortInUse as exc:
        _port_in_use(exc, "dev", "run")


def _port_in_use(exc, command: str, make_target: str) -> None:
    """One line naming the port, its service and the option that moves it; exit status 1."""
    if exc.service == "gateway":
        fix = (
            f"choose another with `agentry {command} --port {exc.port + 1}` "
            f"(or `make {make_target} PORT={exc.port + 1}`)"
        )
    else:
        fix = f"let the gRPC services take free ports with `agentry {command} --free-grpc-ports`"
    err_console.print(Text(f"{exc}: stop what uses it, or {fix}.", style="red"), soft_wrap=True)
    raise typer.Exit(1)


def _banner(dev_stack) -> None:
    url = dev_stack.gateway_url
    console.print(Text.assemble(("Agentry is running", "bold green"), f" — gateway {url}  (API docs: {url}/docs)"))
    ports = ", ".join(f"{k} :{v}" for k, v in dev_stack.ports.items() if k != "gateway")
    console.print(f"gRPC services on 127.0.0.1: {ports}", highlight=False)
    console.print(Text(_model_line(dev_stack), style="yellow" if dev_stack.demo else ""))
    console.print(
        Text.assemble(
            "Try it: ",
            (f'{_cli_command()} chat --url {url} "list the files in the workspace"', "bold"),
            "  (Ctrl-C stops)",
        )
    )


def _cli_command() -> str:
    """How to run the CLI here: `uv run agentry` when uv is on PATH, else this very executable
    (a user whose uv was bootstrapped into .tools/ has no `uv` command)."""
    import shutil
    import sys

    if shutil.which("uv"):
        return "uv run agentry"
    argv0 = Path(sys.argv[0])
    return str(argv0) if argv0.name == "agentry" else "agentry"


def _model_line(dev_stack) -> str:
    """The banner's line on the model: which one runs use by default, where it is served, and why."""
    if dev_stack.demo:
        return (
            f"Model: {dev_stack.default_model} (the scripted demo model, served locally at "
            f"{dev_stack.llm_base_url}): no LLM provider is configured. Set a provider key LiteLLM knows "
            "(OPENAI_API_KEY, ANTHROPIC_API_KEY, ...) or OPENAI_API_BASE for a local server "
            "(Ollama, vLLM, LM Studio)."
        )
    where = dev_stack.llm_base_url or "the provider's own API"
    why = f" (from {dev_stack.model_var})" if dev_stack.model_var else ""
    return f"Model: {dev_stack.default_model} at {where}{why}; a request's model_name overrides it."


@app.command()
def serve(
    service: Annotated[str, typer.Argument(help="auth | billing | sandbox | runner | gateway | fake-llm")],
) -> None:
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
    database_url: Annotated[
        str, typer.Option(envvar="AGENTRY_DATABASE_URL")
    ] = "postgresql+asyncpg://postgres@127.0.0.1:5432/agentry",
    redis_url: Annotated[str, typer.Option(envvar="AGENTRY_REDIS_URL")] = "redis://127.0.0.1:6379/0",
    amqp_url: Annotated[str, typer.Option(envvar="AGENTRY_AMQP_URL")] = "amqp://guest:guest@127.0.0.1:5672/",
    port: Annotated[int, typer.Option(help="The gateway's HTTP port.")] = 8000,
    data_dir: Annotated[Path, typer.Option()] = Path("var/split"),
    workers: Annotated[
        int, typer.Option(envvar="AGENTRY_UP_WORKERS", min=1, help="How many worker processes consume runs.")
    ] = 1,
    free_grpc_ports: Annotated[
        bool,
        typer.Option(
            "--free-grpc-ports",
            envvar="AGENTRY_UP_FREE_GRPC_PORTS",
            help="Put the gRPC services on free ports instead of 50051-50055.",
        ),
    ] = False,
) -> None:
    """Split mode: every service in its own process, on PostgreSQL, Redis and RabbitMQ.

    A service that dies is restarted (0.5 s, doubling to 30 s while it keeps dying)."""
    from .devstack import PortInUse, check_ports_free
    from .split import SplitConfig, free_port, run_split_forever

    config = SplitConfig(
        database_url=database_url,
        redis_url=redis_url,
        amqp_url=amqp_url,
        gateway_port=port,
        data_dir=data_dir,
        workers=workers,
    )
    if free_grpc_ports:
        config.grpc_ports = {name: free_port() for name in config.grpc_ports}
    try:
        check_ports_free({"gateway": port, **config.grpc_ports})
    except PortInUse as exc:
        _port_in_use(exc, "up", "up")
    run_split_forever(config, console)


# -- talking to a running gateway --------------------------------------------------------------

UrlOpt = Annotated[str, typer.Option(envvar="AGENTRY_URL", help="The gateway's base URL.")]
EmailOpt = Annotated[str, typer.Option(envvar="AGENTRY_EMAIL", help="Sign in as (signed up on first use).")]
PasswordOpt = Annotated[str, typer.Option(envvar="AGENTRY_PASSWORD")]
TokenOpt = Annotated[
    str | None, typer.Option(envvar="AGENTRY_TOKEN", help="An access token or API key (instead of email and password).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON lines (one object per line) for scripts.")]
LimitOpt = Annotated[int, typer.Option(min=1, max=100, help="How many to show (newest first).")]
CursorOpt = Annotated[str | None, typer.Option(help="Show the page after this cursor (printed under a list).")]
DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_EMAIL = "dev@agentry.local"
DEFAULT_PASSWORD = "agentry-dev-password"


@app.command()
def chat(
    prompt: Annotated[str, typer.Argument(help="What to ask the agent.")],
    url: UrlOpt = DEFAULT_URL,
    email: EmailOpt = DEFAULT_EMAIL,
    password: PasswordOpt = DEFAULT_PASSWORD,
    token: TokenOpt = None,
    thread: Annotated[str | None, typer.Option(help="Continue this thread instead of a new one.")] = None,
    model: Annotated[str | None, typer.Option(help="A LiteLLM model string.")] = None,
    json: JsonOpt = False,
) -> None:
    """Start a run and show it live: text, tool calls with exit codes, tokens and cost per model call.

    Ctrl-C stops the run; a second Ctrl-C leaves it running (re-attach with `agentry attach RUN`)."""
    from .chat import run_chat

    raise typer.Exit(
        run_chat(
            url=url,
            email=email,
            password=password,
            prompt=prompt,
            thread_id=thread,
            model=model,
            console=console,
            json_out=json,
            token=token,
        )
    )


@app.command()
def attach(
    run: Annotated[str, typer.Argument(help="The run's id (agent_run_id).")],
    after: Annotated[int, typer.Option(min=0, help="Start after this event number (0: replay from the start).")] = 0,
    url: UrlOpt = DEFAULT_URL,
    email: EmailOpt = DEFAULT_EMAIL,
    password: PasswordOpt = DEFAULT_PASSWORD,
    token: TokenOpt = None,
    json: JsonOpt = False,
) -> None:
    """Follow a run's stream (again): its events so far, then live until it ends. Ctrl-C stops it."""
    from .chat import run_attach

    raise typer.Exit(
        run_attach(
            url=url,
            email=email,
            password=password,
            run_id=run,
            after=after,
            console=console,
            json_out=json,
            token=token,
        )
    )


def _call(url: str, email: str, password: str, token: str | None, json: bool, action) -> None:
    """Signs in and runs `action(gateway, json_output_or_None)`; a CliError is one red line."""
    from .client import CliError, Gateway
    from .render import JsonLines

    out = JsonLines() if json else None
    try:
        with Gateway(url) as gw:
            gw.sign_in(email, password, token)
            code = action(gw, out)
    except CliError as exc:
        if out is not None:
            out.note("error", str(exc))
        else:
            err_console.print(Text(str(exc), style="red"))
        raise typer.Exit(exc.code) from None
    raise typer.Exit(code)


@app.command()
def threads(
    url: UrlOpt = DEFAULT_URL,
    email: EmailOpt = DEFAULT_EMAIL,
    password: PasswordOpt = DEFAULT_PASSWORD,
    token: TokenOpt = None,
    json: JsonOpt = False,
    limit: LimitOpt = 20,
    cursor: CursorOpt = None,
) -> None:
    """List your threads, newest first."""
    from .browse import list_threads

    _call(url, email, password, token, json, lambda gw, out: list_threads(gw, console, out, limit=limit, cursor=cursor))


@app.command()
def runs(
    thread: Annotated[str, typer.Argument(help="The thread's id.")],
    url: UrlOpt = DEFAULT_URL,
    email: EmailOpt = DEFAULT_EMAIL,
    password: PasswordOpt = DEFAULT_PASSWORD,
    token: TokenOpt = None,
    json: JsonOpt = False,
    limit: LimitOpt = 20,
    cursor: CursorOpt = None,
) -> None:
    """List a thread's runs, newest first."""
    from .browse import list_runs

    _call(
        url,
        email,
        password,
        token,
        json,
        lambda gw, out: list_runs(gw, console, out, thread, limit=limit, cursor=cursor),
    )


@app.command()
def stop(
    run: Annotated[str, typer.Argument(help="The run's id.")],
    url: UrlOpt = DEFAULT_URL,
    email: EmailOpt = DEFAULT_EMAIL,
    password: PasswordOpt = DEFAULT_PASSWORD,
    token: TokenOpt = None,
    json: JsonOpt = False,
) -> None:
    """Ask the gateway to stop a run (it ends `cancelled`)."""
    from .browse import stop_run

    _call(url, email, password, token, json, lambda gw, out: stop_run(gw, console, out, run))


@app.command()
def files(
    thread: Annotated[str, typer.Argument(help="The thread's id.")],
    path: Annotated[str, typer.Argument(help="A directory to list or a file to download.")] = "",
    output: Annotated[
        str | None, typer.Option("--output", "-o", help="Where to save a downloaded file ('-' for stdout).")
    ] = None,
    url: UrlOpt = DEFAULT_URL,
    email: EmailOpt = DEFAULT_EMAIL,
    password: PasswordOpt = DEFAULT_PASSWORD,
    token: TokenOpt = None,
    json: JsonOpt = False,
) -> None:
    """List the files of the thread's sandbox workspace, or download one."""
    from .browse import files as files_

    _call(url, email, password, token, json, lambda gw, out: files_(gw, console, out, thread, path, output=output))


billing_app = typer.Typer(no_args_is_help=True, help="Billing operations (local payments provider).")
app.add_typer(billing_app, name="billing")


@billing_app.command("grant")
def billing_grant(
    account: Annotated[str, typer.Argument(help="The account id to credit.")],
    amount: Annotated[str, typer.Argument(help="USD to grant, e.g. 5 or 2.50.")],
    target: Annotated[
        str, typer.Option(envvar="AGENTRY_BILLING_TARGET", help="The billing service's gRPC address.")
    ] = "127.0.0.1:50052",
    key: Annotated[str, typer.Option(help="Idempotency key: the same key grants once. Default: a new one.")] = "",
    note: Annotated[str, typer.Option(help="Why (kept with the ledger entry).")] = "agentry billing grant",
) -> None:
    """Credit an account (USD), authenticated with AGENTRY_INTERNAL_TOKEN like every internal call."""
    import uuid

    from .billing import grant_command

    code, line = grant_command(account, amount, target, key or uuid.uuid4().hex, note)
    if code == 0:
        console.print(line)
    else:
        typer.echo(line, err=True)
    raise typer.Exit(code)


if __name__ == "__main__":
    app()
