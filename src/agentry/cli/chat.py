"""`agentry chat` and `agentry attach`: start or find a run, and follow its event stream.

Following survives a dropped connection: it reconnects with `Last-Event-ID` set to the last
sequence number shown, and the gateway answers with the events after it, so nothing is skipped
or shown twice (an event at or below the last number is dropped, should a server resend one).

Ctrl-C asks the gateway to stop the run (POST /api/agent-run/{id}/stop) and keeps following it
to its `run_finished: cancelled`; a second Ctrl-C leaves the run going and prints how to
re-attach. Exit status: 0 when the run completed (or waits for the user), 2 when it ended
otherwise, 1 on an error, 130 after Ctrl-C.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
from rich.console import Console
from rich.text import Text

from .client import CliError, Gateway, RunOver
from .render import OK_REASONS, Human, JsonLines

INTERRUPTED = 130


@dataclass
class Cursor:
    """The last event shown: where a reconnect resumes."""

    seq: int = 0


Renderer = Human | JsonLines


def follow(
    gw: Gateway,
    run_id: str,
    out: Renderer,
    cursor: Cursor,
    *,
    on_pending: Callable[[dict[str, Any]], None] | None = None,
    max_reconnects: int = 8,
) -> int:
    """Renders the run's events after `cursor.seq` until its terminal event; returns the exit
    status (0 completed or waiting for the user, 2 any other end). Reconnects after a broken
    connection, at most `max_reconnects` times in a row without an event in between."""
    failures = 0
    while True:
        problem = "the stream ended before the run did"
        try:
            with gw.stream(run_id, cursor.seq) as events:
                for seq, data in events:
                    event = orjson.loads(data)
                    if seq is not None:
                        if seq <= cursor.seq:
                            continue
                        cursor.seq = seq
                    failures = 0
                    out.event(seq, event)
                    kind = event.get("type")
                    if kind == "requires_action":
                        if on_pending is None:
                            out.note(
                                "waiting",
                                f"run {run_id} waits for your input: answer it with "
                                f"POST /api/agent-run/{run_id}/resume",
                                run_id=run_id,
                            )
                            return 0
                        try:
                            on_pending(event.get("pending") or {})
                        except EOFError:
                            out.note(
                                "waiting",
                                "no answer given: the run stays paused "
                                f"(answer it with POST /api/agent-run/{run_id}/resume)",
                                run_id=run_id,
                            )
                            return 0
                    elif kind == "run_finished":
                        return 0 if event.get("reason") in OK_REASONS else 2
        except RunOver:
            run = gw.get(f"/api/agent-run/{run_id}", "get run")
            out.note(
                "over",
                f"run {run_id} is over ({run.get('status')}, {run.get('finish_reason') or 'no reason'}) "
                f"and has no events after {cursor.seq}",
                run_id=run_id,
                status=run.get("status"),
                finish_reason=run.get("finish_reason"),
            )
            return 0 if run.get("finish_reason") in OK_REASONS else 2
        except httpx.TransportError as exc:
            problem = f"the connection broke ({type(exc).__name__})"
        failures += 1
        if failures > max_reconnects:
            raise CliError(
                f"{problem}, {max_reconnects} times in a row; re-attach later with `agentry attach {run_id}`"
            )
        out.note("reconnect", f"{problem}: resuming after event {cursor.seq}", run_id=run_id, after=cursor.seq)
        time.sleep(min(0.1 * 2 ** (failures - 1), 3.0))


def watch(
    gw: Gateway,
    run_id: str,
    out: Renderer,
    cursor: Cursor,
    *,
    on_pending: Callable[[dict[str, Any]], None] | None = None,
) -> int:
    """`follow`, with Ctrl-C: the first stops the run (and follows it to its end), the second
    leaves it running."""
    try:
        return follow(gw, run_id, out, cursor, on_pending=on_pending)
    except KeyboardInterrupt:
        pass
    try:
        out.note("stopping", f"stopping run {run_id}… (press Ctrl-C again to leave it running)", run_id=run_id)
        gw.post(f"/api/agent-run/{run_id}/stop", "stop")
        follow(gw, run_id, out, cursor)
        return INTERRUPTED
    except KeyboardInterrupt:
        out.note(
            "detached",
            f"left run {run_id} running; re-attach with: agentry attach {run_id} --url {gw.url}",
            run_id=run_id,
        )
        return INTERRUPTED


def run_chat(
    *,
    url: str,
    email: str,
    password: str,
    prompt: str,
    thread_id: str | None,
    model: str | None,
    console: Console,
    json_out: bool = False,
    token: str | None = None,
    transport: httpx.BaseTransport | None = None,
) -> int:
    """Signs in, creates a thread (unless `thread_id`), starts a run with `prompt` and follows it.
    Returns the exit status (see the module docstring)."""
    out: Renderer = JsonLines() if json_out else Human(console)
    try:
        with Gateway(url, transport=transport) as gw:
            gw.sign_in(email, password, token)
            if thread_id is None:
                thread_id = gw.post("/api/threads", "create thread", {"name": prompt[:60]})["thread_id"]
            body = {"prompt": prompt} | ({"model_name": model} if model else {})
            run = gw.post(f"/api/threads/{thread_id}/agent/start", "start run", body)
            run_id = run["agent_run_id"]
            out.note("run", f"thread {thread_id} · run {run_id}", thread_id=thread_id, run_id=run_id)
            pending = None if json_out else (lambda p: _answer(gw, run_id, p, console))
            return watch(gw, run_id, out, Cursor(), on_pending=pending)
    except CliError as exc:
        out.note("error", str(exc))
        return exc.code
    finally:
        out.close()


def run_attach(
    *,
    url: str,
    email: str,
    password: str,
    run_id: str,
    after: int,
    console: Console,
    json_out: bool = False,
    token: str | None = None,
    transport: httpx.BaseTransport | None = None,
) -> int:
    """Follows an existing run from just after event `after` (0: from its first event)."""
    out: Renderer = JsonLines() if json_out else Human(console)
    try:
        with Gateway(url, transport=transport) as gw:
            gw.sign_in(email, password, token)
            pending = None if json_out else (lambda p: _answer(gw, run_id, p, console))
            return watch(gw, run_id, out, Cursor(after), on_pending=pending)
    except CliError as exc:
        out.note("error", str(exc))
        return exc.code
    finally:
        out.close()


def _answer(gw: Gateway, run_id: str, pending: dict, console: Console) -> None:
    """The run waits for the user: ask on the terminal, send the answer or decision, and let
    the (still open) stream go on. Without a terminal to ask on, the run stays paused."""
    if pending.get("kind") == "question":
        console.print(Text.assemble(("The agent asks: ", "bold yellow"), str(pending.get("question", ""))))
        body: dict[str, Any] = {"content": console.input("[bold]your answer> [/]")}
    else:
        arguments = orjson.dumps(pending.get("arguments", {})).decode()
        console.print(
            Text.assemble(("The agent wants to run ", "bold yellow"), f"{pending.get('tool')}({arguments[:300]})")
        )
        approve = console.input("[bold]approve? [y/N]> [/]").strip().lower() in ("y", "yes")
        body = {"decision": "approve" if approve else "reject"}
        if not approve:
            body["content"] = console.input("[bold]why not (optional)> [/]")
    gw.post(f"/api/agent-run/{run_id}/resume", "resume", body)
