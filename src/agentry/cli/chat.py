"""`agentry chat`: sign in, start a run, and render its event stream as it arrives."""

from __future__ import annotations

import httpx
import orjson
from rich.console import Console
from rich.panel import Panel


class ChatError(Exception):
    pass


def _check(response: httpx.Response, what: str) -> dict:
    if response.is_success:
        return response.json()
    try:
        message = response.json()["error"]["message"]
    except Exception:  # noqa: BLE001 - any unparseable body: show the raw text
        message = response.text[:300]
    raise ChatError(f"{what} failed ({response.status_code}): {message}")


def sign_in(client: httpx.Client, email: str, password: str) -> str:
    """Signs in, signing up first if the account does not exist yet (dev convenience)."""
    response = client.post("/api/auth/token", json={"email": email, "password": password})
    if response.status_code == 401:
        signup = client.post("/api/auth/signup", json={"email": email, "password": password})
        if signup.status_code != 409:
            _check(signup, "sign-up")
        response = client.post("/api/auth/token", json={"email": email, "password": password})
    return _check(response, "sign-in")["access_token"]


def iter_sse(response: httpx.Response):
    """Yields (id, data) for each event of an SSE response; comments are skipped."""
    event_id, data = None, []
    for line in response.iter_lines():
        if not line:
            if data:
                yield event_id, "\n".join(data)
            event_id, data = None, []
        elif line.startswith("id:"):
            event_id = line[3:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip())


def run_chat(*, url: str, email: str, password: str, prompt: str, thread_id: str | None,
             model: str | None, console: Console) -> int:
    try:
        with httpx.Client(base_url=url, timeout=httpx.Timeout(30.0, read=None)) as client:
            token = sign_in(client, email, password)
            client.headers["Authorization"] = f"Bearer {token}"
            if thread_id is None:
                thread_id = _check(client.post("/api/threads", json={"name": prompt[:60]}), "create thread")["thread_id"]
            body = {"prompt": prompt} | ({"model_name": model} if model else {})
            run = _check(client.post(f"/api/threads/{thread_id}/agent/start", json=body), "start run")
            console.print(f"[dim]thread {thread_id} · run {run['agent_run_id']}[/]")
            with client.stream("GET", f"/api/agent-run/{run['agent_run_id']}/stream") as response:
                if not response.is_success:
                    response.read()
                    _check(response, "stream")
                run_id = run["agent_run_id"]
                return _render(iter_sse(response), console,
                               on_pending=lambda pending: _answer(client, run_id, pending, console))
    except (ChatError, httpx.HTTPError) as exc:
        console.print(f"[red]{exc}[/]")
        return 1


def _answer(client: httpx.Client, run_id: str, pending: dict, console: Console) -> None:
    """The run waits for the user: ask on the terminal, send the answer or decision, and let
    the (still open) stream go on. Without a terminal to ask on, the run stays paused."""
    if pending.get("kind") == "question":
        console.print(f"[bold yellow]The agent asks:[/] {pending.get('question', '')}")
        body = {"content": console.input("[bold]your answer> [/]")}
    else:
        arguments = orjson.dumps(pending.get("arguments", {})).decode()
        console.print(f"[bold yellow]The agent wants to run[/] {pending.get('tool')}({arguments[:300]})")
        approve = console.input("[bold]approve? [y/N]> [/]").strip().lower() in ("y", "yes")
        body = {"decision": "approve" if approve else "reject"}
        if not approve:
            body["content"] = console.input("[bold]why not (optional)> [/]")
    _check(client.post(f"/api/agent-run/{run_id}/resume", json=body), "resume")


def _render(events, console: Console, on_pending=None) -> int:
    at_line_start = True
    for _, data in events:
        event = orjson.loads(data)
        kind = event.get("type")
        if kind == "requires_action":
            if not at_line_start:
                console.print()
                at_line_start = True
            if on_pending is None:
                console.print("[yellow]the run waits for your input: POST /api/agent-run/{id}/resume[/]")
                return 0
            try:
                on_pending(event.get("pending") or {})
            except EOFError:
                console.print("[yellow]no answer given: the run stays paused (answer it with POST .../resume)[/]")
                return 0
            continue
        if kind == "text_delta":
            console.print(event["text"], end="", highlight=False, markup=False)
            at_line_start = event["text"].endswith("\n")
        elif kind == "tool_call_finished":
            if not at_line_start:
                console.print()
            output = (event.get("output") or "").strip()
            arguments = event.get("arguments", "")
            if not isinstance(arguments, str):
                arguments = orjson.dumps(arguments).decode()
            title = f"{event['name']}({arguments})"
            style = "red" if event.get("error") else "cyan"
            console.print(Panel(output[:2000] or "(no output)", title=title[:120], border_style=style))
            at_line_start = True
        elif kind == "run_finished":
            if not at_line_start:
                console.print()
            reason, error = event.get("reason"), event.get("error")
            colour = "green" if reason in ("completed", "asked_user") else "red"
            console.print(f"[{colour}]run finished: {reason}[/]" + (f" — {error}" if error else ""))
            return 0 if reason in ("completed", "asked_user", "step_limit") else 2
    console.print("[red]the stream ended without a terminal event[/]")
    return 1
