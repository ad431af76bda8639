"""The CLI against a running embedded stack (one per module, in a thread): tool output that looks
like markup prints verbatim with its exit code; Ctrl-C on a real `agentry chat` process stops the
run; `attach` resumes a cut stream without gap or duplicate; `--json` is valid JSON lines."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from rich.console import Console
from typer.testing import CliRunner

from agentry.cli.chat import run_attach, run_chat
from agentry.cli.client import Gateway
from agentry.cli.main import app
from agentry.fakellm import Script, ScriptedToolCall, ThreadedFakeLLMServer, Turn

pytestmark = pytest.mark.integration

HOSTILE = "[/bold] [red]not red[/red] [exit code 9] [link=x]y[/link]"
MARKUP_SCRIPT = Script(
    turns=(
        Turn(
            text="Printing [bold]markup[/bold].",
            tool_calls=(
                ScriptedToolCall(name="run_command", arguments={"command": f"echo '{HOSTILE}' | tee note.txt; exit 3"}),
            ),
        ),
        Turn(text="Done [/]."),
    )
)
WORDS = [f"w{i}" for i in range(60)]
STREAM_SCRIPT = Script(turns=(Turn(text=" ".join(WORDS)),), tokens_per_second=60)
LONG_SCRIPT = Script(turns=(Turn(text=" ".join(f"token{i}" for i in range(600))),), tokens_per_second=30)
EMAIL, PASSWORD = "cli-runs@example.com", "a long password"


@dataclass
class Live:
    url: str


@pytest.fixture(scope="module")
def live(tmp_path_factory) -> Iterator[Live]:
    from agentry.cli.devstack import start_dev_stack

    data_dir = tmp_path_factory.mktemp("cli-live")
    llm = ThreadedFakeLLMServer({"cli-markup": MARKUP_SCRIPT, "cli-stream": STREAM_SCRIPT, "cli-long": LONG_SCRIPT})
    llm.start()
    started = threading.Event()
    box: dict = {}

    async def main() -> None:
        box["loop"] = asyncio.get_running_loop()
        box["stop"] = asyncio.Event()
        try:
            async with contextlib.AsyncExitStack() as stack:
                dev = await start_dev_stack(
                    stack,
                    data_dir=data_dir,
                    llm_api_base=llm.base_url,
                    ports={"auth": 0, "billing": 0, "sandbox": 0, "runner": 0, "gateway": 0},
                )
                box["url"] = dev.gateway_url
                started.set()
                await box["stop"].wait()
        except BaseException as exc:
            box["error"] = exc
            started.set()
            raise

    thread = threading.Thread(target=asyncio.run, args=(main(),), name="cli-live-stack", daemon=True)
    thread.start()
    assert started.wait(120), "the embedded stack did not start"
    try:
        if "error" in box:
            raise box["error"]
        yield Live(box["url"])
    finally:
        if "stop" in box:
            box["loop"].call_soon_threadsafe(box["stop"].set)
        thread.join(30)
        llm.stop()


def _records(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_chat_json_is_valid_json_lines_and_files_lists_and_downloads(live, capsys, tmp_path):
    console = Console(file=io.StringIO())
    # First in the module, with an account of its own: main's runner (before the fix on the "api"
    # branch, fc74774) ran every claimed run in the first project's sandbox.
    email = "cli-files@example.com"
    code = run_chat(
        url=live.url,
        email=email,
        password=PASSWORD,
        prompt="markup again",
        thread_id=None,
        model="openai/cli-markup",
        console=console,
        json_out=True,
    )
    assert code == 0
    records = _records(capsys.readouterr().out)  # every line parses, or this fails
    assert records[0]["type"] == "cli.run" and records[0]["run_id"]
    seqs = [r["seq"] for r in records if "seq" in r]
    assert seqs == list(range(1, len(seqs) + 1))
    assert records[-1]["type"] == "run_finished"
    finished = next(r for r in records if r["type"] == "tool_call_finished")
    assert HOSTILE in finished["output"] and finished["output"].startswith("[exit code 3]")

    # The file the tool wrote, through `agentry files THREAD [PATH]`.
    thread_id = records[0]["thread_id"]
    auth = ["--url", live.url, "--email", email, "--password", PASSWORD]
    listed = CliRunner().invoke(app, ["files", thread_id, "--json", *auth])
    assert listed.exit_code == 0, listed.output
    note = next(f for f in _records(listed.output) if f.get("name") == "note.txt")
    assert note["path"] == "note.txt" and note["is_dir"] is False and note["size"] == len(HOSTILE) + 1
    target = tmp_path / "downloaded.txt"
    fetched = CliRunner().invoke(app, ["files", thread_id, "note.txt", "-o", str(target), *auth])
    assert fetched.exit_code == 0, fetched.output
    assert target.read_text() == HOSTILE + "\n"
    missing = CliRunner().invoke(app, ["files", thread_id, "nope/none.txt", *auth])
    assert missing.exit_code == 1


def test_markup_like_tool_output_renders_verbatim_with_its_exit_code(live):
    out = io.StringIO()
    console = Console(file=out, width=250, color_system=None)
    code = run_chat(
        url=live.url,
        email=EMAIL,
        password=PASSWORD,
        prompt="print markup",
        thread_id=None,
        model="openai/cli-markup",
        console=console,
    )
    text = out.getvalue()
    assert code == 0, text
    assert "Printing [bold]markup[/bold]." in text
    assert HOSTILE in text  # the tool's output, as the shell printed it
    assert "[exit code 3]" in text and "exit code 3 ·" in text
    assert "Done [/]." in text
    assert "tokens in" in text and "run finished: completed" in text


class _CutFirstStream(httpx.BaseTransport):
    """httpx's own transport, except that the first run stream breaks (a reset connection) in the
    middle of its `cut_at`-th event: what a proxy restart or a network blip does."""

    def __init__(self, cut_at: int) -> None:
        self.inner = httpx.HTTPTransport()
        self.cut_at = cut_at
        self.last_event_ids: list[str | None] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if not request.url.path.endswith("/stream"):
            return response
        self.last_event_ids.append(request.headers.get("last-event-id"))
        if len(self.last_event_ids) > 1:
            return response
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=_CutStream(response.stream, self.cut_at),
            extensions=response.extensions,
        )

    def close(self) -> None:
        self.inner.close()


class _CutStream(httpx.SyncByteStream):
    def __init__(self, inner, cut_at: int) -> None:
        self.inner, self.cut_at, self.seen = inner, cut_at, 0

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.inner:
            start = 0
            while (found := chunk.find(b"id: ", start)) != -1:
                self.seen += 1
                if self.seen == self.cut_at:
                    yield chunk[: found + 6]  # half of the event's first line
                    raise httpx.ReadError("connection reset by peer")
                start = found + 1
            yield chunk

    def close(self) -> None:
        self.inner.close()


def test_attach_resumes_after_a_disconnect_without_gap_or_duplicate(live, capsys):
    with Gateway(live.url) as gw:
        gw.sign_in(EMAIL, PASSWORD)
        thread_id = gw.post("/api/threads", "thread", {"name": "attach"})["thread_id"]
        run_id = gw.post(
            f"/api/threads/{thread_id}/agent/start", "start", {"prompt": "stream", "model_name": "openai/cli-stream"}
        )["agent_run_id"]
    transport = _CutFirstStream(cut_at=12)
    code = run_attach(
        url=live.url,
        email=EMAIL,
        password=PASSWORD,
        run_id=run_id,
        after=0,
        console=Console(file=io.StringIO()),
        json_out=True,
        transport=transport,
    )
    assert code == 0
    records = _records(capsys.readouterr().out)
    events = [r for r in records if "seq" in r]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))  # no gap, no duplicate
    assert events[-1]["type"] == "run_finished" and events[-1]["reason"] == "completed"
    text = "".join(e["text"] for e in events if e["type"] == "text_delta")
    assert text == " ".join(WORDS)
    # The second request resumed from the last whole event the first one delivered.
    assert transport.last_event_ids == [None, "11"]
    assert any(r["type"] == "cli.reconnect" for r in records)

    # `agentry stop` on the finished run: the gateway's answer, as one JSON line.
    stopped = CliRunner().invoke(
        app, ["stop", run_id, "--json", "--url", live.url, "--email", EMAIL, "--password", PASSWORD]
    )
    assert stopped.exit_code == 0, stopped.output
    assert _records(stopped.output) == [{"agent_run_id": run_id, "status": "completed"}]


def test_ctrl_c_on_a_real_chat_process_stops_the_run(live):
    env = {**os.environ, "AGENTRY_URL": live.url, "AGENTRY_EMAIL": EMAIL, "AGENTRY_PASSWORD": PASSWORD}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "agentry.cli.main",
            "chat",
            "--json",
            "--model",
            "openai/cli-long",
            "count for a long time",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        for line in proc.stdout:  # wait until the model is talking
            lines.append(line)
            if '"text_delta"' in line:
                break
        else:
            pytest.fail(f"no text from the run: {lines} {proc.stderr.read() if proc.stderr else ''}")
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    records = _records("".join(lines) + rest)
    assert proc.returncode == 130, err
    run_id = records[0]["run_id"]
    assert any(r["type"] == "cli.stopping" for r in records)
    assert records[-1] == {**records[-1], "type": "run_finished", "reason": "cancelled"}
    with Gateway(live.url) as gw:
        gw.sign_in(EMAIL, PASSWORD)
        assert gw.get(f"/api/agent-run/{run_id}", "run")["status"] == "cancelled"
    # Far fewer than the script's 600 tokens were streamed: the run stopped, not finished.
    assert sum(1 for r in records if r.get("type") == "text_delta") < 300
