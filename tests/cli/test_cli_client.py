"""The CLI without a running system: rendering, --json, Ctrl-C's two steps, reconnects, model
selection, ports and the commands that list things (against a small local HTTP server)."""

from __future__ import annotations

import io
import json
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from rich.console import Console
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from typer.testing import CliRunner

from agentry.cli.chat import INTERRUPTED, Cursor, follow, run_attach
from agentry.cli.client import Gateway
from agentry.cli.devstack import DEMO_MODEL, PortInUse, check_ports_free, resolve_model
from agentry.cli.main import _model_line, app
from agentry.cli.render import Human, JsonLines

HOSTILE = "[/bold] [red]not red[/red] [exit code 7] [link=x]y[/link] \\[escaped]"


def _console() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=300, color_system=None, force_terminal=False), out


def test_markup_like_text_in_text_arguments_and_output_renders_verbatim():
    console, out = _console()
    human = Human(console)
    human.event(1, {"type": "text_delta", "text": f"model says {HOSTILE}\n"})
    human.event(
        2,
        {
            "type": "tool_call_finished",
            "call_id": "c",
            "name": "run_command",
            "arguments": {"command": f"echo '{HOSTILE}'"},
            "output": f"[exit code 3]\n{HOSTILE}\n",
            "error": None,
            "duration_ms": 1200.0,
        },
    )
    human.event(
        3, {"type": "usage", "model": "openai/x", "prompt_tokens": 120, "completion_tokens": 30, "cost_usd": 0.00125}
    )
    human.event(4, {"type": "run_finished", "reason": "completed", "error": None})
    human.close()
    text = out.getvalue()
    assert f"model says {HOSTILE}" in text
    assert f"{HOSTILE}" in text.split("[exit code 3]", 1)[1]  # the tool's output, unchanged
    assert "[exit code 3]" in text  # the header line run_command writes stays
    assert "exit code 3 · 1.2s" in text  # and the panel's subtitle says it
    assert 'run_command({"command":"echo \'[/bold]' in text  # arguments: no markup either
    assert "openai/x: 120 tokens in, 30 out, $0.0013" in text
    assert "run finished: completed  (120 tokens in, 30 out, $0.0013)" in text


def test_json_lines_are_the_events_unchanged_plus_cli_records():
    sink = io.StringIO()
    out = JsonLines(sink)
    out.event(5, {"type": "text_delta", "text": HOSTILE})
    out.note("stopping", "stopping", run_id="r")
    records = [json.loads(line) for line in sink.getvalue().splitlines()]
    assert records == [
        {"seq": 5, "type": "text_delta", "text": HOSTILE},
        {"type": "cli.stopping", "message": "stopping", "run_id": "r"},
    ]


# -- a scripted gateway behind httpx.MockTransport ---------------------------------------------


def _sse(events: list[tuple[int, dict]]) -> bytes:
    return b"retry: 1000\n\n" + b"".join(b"id: %d\ndata: %s\n\n" % (seq, json.dumps(e).encode()) for seq, e in events)


EVENTS = [(i, {"type": "text_delta", "text": f"w{i} "}) for i in range(1, 9)] + [
    (9, {"type": "run_finished", "reason": "cancelled", "error": None})
]


class Cut(httpx.SyncByteStream):
    """A body that delivers `data` and then fails the way a dropped connection does."""

    def __init__(self, data: bytes, error: BaseException) -> None:
        self.data, self.error = data, error

    def __iter__(self) -> Iterator[bytes]:
        yield self.data
        raise self.error


def test_ctrl_c_stops_the_run_and_follows_it_to_its_end():
    calls: list[tuple[str, str | None]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append((request.url.path, request.headers.get("last-event-id")))
        if request.url.path.endswith("/stop"):
            return httpx.Response(200, json={"agent_run_id": "r1", "status": "running"})
        if request.headers.get("last-event-id") is None:  # Ctrl-C while event 3 is on screen
            return httpx.Response(200, stream=Cut(_sse(EVENTS[:3]), KeyboardInterrupt()))
        after = int(request.headers["last-event-id"])
        return httpx.Response(200, content=_sse([e for e in EVENTS if e[0] > after]))

    sink = io.StringIO()
    with Gateway("http://gw.test", transport=httpx.MockTransport(handler)) as gw:
        from agentry.cli.chat import watch

        code = watch(gw, "r1", JsonLines(sink), Cursor())
    assert code == INTERRUPTED
    assert calls == [
        ("/api/agent-run/r1/stream", None),
        ("/api/agent-run/r1/stop", None),
        ("/api/agent-run/r1/stream", "3"),
    ]
    records = [json.loads(line) for line in sink.getvalue().splitlines()]
    assert [r.get("seq") for r in records if "seq" in r] == list(range(1, 10))  # no gap, no duplicate
    assert records[-1]["reason"] == "cancelled"
    assert any(r["type"] == "cli.stopping" for r in records)


def test_a_second_ctrl_c_leaves_the_run_running_and_says_how_to_reattach():
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/stop"):
            raise KeyboardInterrupt  # the second Ctrl-C, while the stop request is on its way
        return httpx.Response(200, stream=Cut(_sse(EVENTS[:2]), KeyboardInterrupt()))

    sink = io.StringIO()
    with Gateway("http://gw.test", transport=httpx.MockTransport(handler)) as gw:
        from agentry.cli.chat import watch

        code = watch(gw, "r1", JsonLines(sink), Cursor())
    assert code == INTERRUPTED
    last = json.loads(sink.getvalue().splitlines()[-1])
    assert last["type"] == "cli.detached"
    assert "agentry attach r1 --url http://gw.test" in last["message"]


def test_follow_reconnects_after_a_broken_connection_without_gap_or_duplicate():
    asked: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        after = request.headers.get("last-event-id")
        asked.append(after)
        if after is None:
            return httpx.Response(200, stream=Cut(_sse(EVENTS[:4]), httpx.ReadError("connection reset")))
        # A server that repeats the last event it sent: the client must not show it twice.
        return httpx.Response(200, content=_sse([e for e in EVENTS if e[0] >= int(after)]))

    sink = io.StringIO()
    with Gateway("http://gw.test", transport=httpx.MockTransport(handler)) as gw:
        code = follow(gw, "r1", JsonLines(sink), Cursor())
    assert code == 2  # cancelled is not a success
    assert asked == [None, "4"]
    seqs = [json.loads(line).get("seq") for line in sink.getvalue().splitlines()]
    assert [s for s in seqs if s is not None] == list(range(1, 10))


def test_attach_past_the_end_of_a_finished_run_says_so_and_exits_by_how_it_ended():
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/stream"):
            assert request.headers["last-event-id"] == "40"
            return httpx.Response(204)  # the gateway's answer at or past a finished run's end
        return httpx.Response(200, json={"agent_run_id": "r1", "status": "completed", "finish_reason": "completed"})

    sink = io.StringIO()
    with Gateway("http://gw.test", transport=httpx.MockTransport(handler)) as gw:
        code = follow(gw, "r1", JsonLines(sink), Cursor(40))
    assert code == 0
    assert json.loads(sink.getvalue()) == {
        "type": "cli.over",
        "message": "run r1 is over (completed, completed) and has no events after 40",
        "run_id": "r1",
        "status": "completed",
        "finish_reason": "completed",
    }


def test_attach_reports_an_unreachable_gateway_with_its_url():
    sink = io.StringIO()
    console = Console(file=sink, width=300, color_system=None)
    code = run_attach(url="http://127.0.0.1:9", email="a@b.c", password="x" * 10, run_id="r", after=0, console=console)
    assert code == 1
    assert "cannot reach the Agentry gateway at http://127.0.0.1:9" in sink.getvalue()
    assert "agentry dev" in sink.getvalue()


# -- threads / runs / --json / --version against a small local server ------------------------
# The shapes of GET /api/threads and GET /api/threads/{id}/runs as the gateway answers them
# (ThreadList: {"threads", "next_cursor"}; RunList: {"runs", "next_cursor"}).

THREADS = [
    {
        "thread_id": f"t{i}",
        "name": f"[bold]thread {i}[/]",
        "project_id": "p",
        "sandbox_id": None,
        "created_at": "2026-11-30T10:00:00Z",
        "updated_at": f"2026-11-30T10:0{i}:00Z",
        "last_run_status": "completed",
        "message_count": i,
    }
    for i in (3, 2, 1)
]
RUNS = [
    {
        "agent_run_id": f"r{i}",
        "thread_id": "t3",
        "status": "completed",
        "finish_reason": "completed",
        "created_at": "2026-11-30T10:00:00Z",
        "completed_at": None,
    }
    for i in (2, 1)
]


@pytest.fixture(scope="module")
def fake_gateway() -> Iterator[tuple[str, list[dict]]]:
    seen: list[dict] = []

    async def token(request: Request) -> JSONResponse:
        return JSONResponse({"access_token": "tok", "token_type": "bearer"})

    async def threads(request: Request) -> JSONResponse:
        seen.append({"path": request.url.path, **request.query_params, "auth": request.headers.get("authorization")})
        if request.query_params.get("cursor") == "c2":
            return JSONResponse({"threads": THREADS[2:], "next_cursor": None})
        return JSONResponse({"threads": THREADS[:2], "next_cursor": "c2"})

    async def runs(request: Request) -> JSONResponse:
        if request.path_params["thread_id"] != "t3":
            return JSONResponse({"error": {"code": "not_found", "message": "thread not found"}}, status_code=404)
        # The generic name for the list: read as well as the gateway's "runs".
        return JSONResponse({"items": RUNS, "next_cursor": None})

    app_ = Starlette(
        routes=[
            Route("/api/auth/token", token, methods=["POST"]),
            Route("/api/threads", threads),
            Route("/api/threads/{thread_id}/runs", runs),
        ]
    )
    server = uvicorn.Server(uvicorn.Config(app_, host="127.0.0.1", port=0, log_config=None, lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the fake gateway did not start"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}", seen
    server.should_exit = True
    thread.join(10)


def test_threads_lists_newest_first_pages_and_prints_names_verbatim(fake_gateway):
    url, seen = fake_gateway
    result = CliRunner().invoke(app, ["threads", "--url", url, "--limit", "2"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert result.output.index("t3") < result.output.index("t2")
    assert "[bold]thread 3[/]" in result.output
    assert "agentry threads --cursor c2" in result.output
    assert seen[-1] == {"path": "/api/threads", "limit": "2", "auth": "Bearer tok"}


def test_threads_and_runs_json_are_valid_json_lines(fake_gateway):
    url, _ = fake_gateway
    result = CliRunner().invoke(app, ["threads", "--url", url, "--json", "--cursor", "c2"])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.output.splitlines()]
    assert records == [THREADS[2], {"type": "cli.page", "next_cursor": None}]

    result = CliRunner().invoke(app, ["runs", "t3", "--url", url, "--json"])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.output.splitlines()]
    assert [r.get("agent_run_id") for r in records] == ["r2", "r1", None]

    result = CliRunner().invoke(app, ["runs", "other", "--url", url, "--json"])
    assert result.exit_code == 1
    assert json.loads(result.output.splitlines()[-1]) == {
        "type": "cli.error",
        "message": "list runs failed (404): not_found: thread not found",
    }


def test_version():
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.startswith("agentry ")


# -- model selection ----------------------------------------------------------------------------


def test_openai_api_base_alone_selects_that_server_and_the_model_it_serves():
    from agentry.fakellm import ThreadedFakeLLMServer

    with ThreadedFakeLLMServer({}) as llm:
        for var in ("OPENAI_API_BASE", "OPENAI_BASE_URL"):
            choice = resolve_model({var: llm.base_url})
            assert (choice.source, choice.base_url, choice.api_key, choice.key_var) == (
                "base_url",
                llm.base_url,
                None,
                var,
            )
            assert choice.model.startswith("openai/") and choice.model != "openai/gpt-4o-mini"
    pinned = resolve_model(
        {"OPENAI_API_BASE": "http://127.0.0.1:9/v1", "AGENTRY_RUNNER_DEFAULT_MODEL": "openai/llama3"}
    )
    assert pinned.model == "openai/llama3" and not pinned.demo


def test_any_provider_key_litellm_knows_counts_and_the_demo_is_only_for_nothing():
    assert resolve_model({"ANTHROPIC_API_KEY": "k"}).model.startswith("anthropic/")
    fireworks = resolve_model({"FIREWORKS_AI_API_KEY": "k"})
    assert (fireworks.source, fireworks.key_var) == ("provider_key", "FIREWORKS_AI_API_KEY")
    assert fireworks.model.startswith("fireworks_ai/")
    assert resolve_model({"TOGETHERAI_API_KEY": "k"}).model.startswith("together_ai/")
    # Not LLM providers: a payment key, an observability tool LiteLLM lists without models.
    assert resolve_model({"STRIPE_API_KEY": "k", "LANGFUSE_API_KEY": "k", "HOME": "/root"}).demo
    assert resolve_model({}).model == DEMO_MODEL


def test_the_banner_names_the_model_and_base_url():
    from agentry.cli.devstack import DevStack

    local = DevStack(
        gateway_url="http://x",
        ports={},
        demo=False,
        llm_base_url="http://127.0.0.1:11434/v1",
        default_model="openai/llama3",
        model_source="base_url",
        model_var="OPENAI_API_BASE",
    )
    assert _model_line(local) == (
        "Model: openai/llama3 at http://127.0.0.1:11434/v1 (from OPENAI_API_BASE); a request's model_name overrides it."
    )
    demo = DevStack(
        gateway_url="http://x",
        ports={},
        demo=True,
        llm_base_url="http://127.0.0.1:5/v1",
        default_model=DEMO_MODEL,
        model_source="demo",
    )
    assert "scripted demo model" in _model_line(demo) and "http://127.0.0.1:5/v1" in _model_line(demo)


# -- ports ----------------------------------------------------------------------------------------


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_a_taken_gateway_port_is_one_line_naming_the_port_and_the_fix(taken_port, tmp_path):
    result = CliRunner().invoke(
        app,
        ["dev", "--port", str(taken_port), "--free-grpc-ports", "--data-dir", str(tmp_path)],
        env={"COLUMNS": "400"},
    )
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert f"port {taken_port} (gateway) is already in use" in lines[0]
    assert "--port" in lines[0] and "make run PORT=" in lines[0]
    assert "Traceback" not in result.output


def test_up_names_a_taken_gateway_port_before_starting_anything(taken_port, tmp_path):
    result = CliRunner().invoke(
        app, ["up", "--port", str(taken_port), "--free-grpc-ports", "--data-dir", str(tmp_path)], env={"COLUMNS": "400"}
    )
    assert result.exit_code == 1
    assert result.output.strip() == (
        f"port {taken_port} (gateway) is already in use on 127.0.0.1: stop what uses it, or choose another with "
        f"`agentry up --port {taken_port + 1}` (or `make up PORT={taken_port + 1}`)."
    )


def test_a_taken_grpc_port_is_named_before_anything_starts(taken_port):
    with pytest.raises(PortInUse) as caught:
        check_ports_free({"gateway": 0, "auth": taken_port})
    assert (caught.value.service, caught.value.port) == ("auth", taken_port)
    check_ports_free({"gateway": 0, "auth": 0})  # 0 is any free port: never in use
