"""`agentry threads`, `runs`, `stop` and `files`: look at what the account has, for people or scripts.

Lists come from the gateway as `{"threads" | "runs": [...], "next_cursor": str | null}` (the
gateway's ThreadList and RunList; `items` is read too, the issue's name for the list), newest first;
`--cursor` asks for the next page and the human output ends with the command that shows it.
With `--json` each item is one line of JSON (the gateway's object unchanged), and a last line
`{"type": "cli.page", "next_cursor": ...}` tells a script whether there is more.
"""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table
from rich.text import Text

from .client import CliError, Gateway, api_error, unreachable
from .render import JsonLines


def _when(value: Any) -> str:
    if not value:
        return ""
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return str(value)


def _table(console: Console, columns: list[str], rows: list[list[Any]]) -> None:
    table = Table(*columns, box=None, pad_edge=False, header_style="bold")
    for row in rows:
        table.add_row(*(Text("" if cell is None else str(cell)) for cell in row))
    console.print(table)


def _page(console: Console, json_out: JsonLines | None, page: dict[str, Any], more: str) -> None:
    cursor = page.get("next_cursor")
    if json_out is not None:
        json_out.record({"type": "cli.page", "next_cursor": cursor})
    elif cursor:
        console.print(Text(f"more: {more} --cursor {cursor}", style="dim"))


def _items(page: dict[str, Any], key: str) -> list[dict[str, Any]]:
    items = page.get(key, page.get("items"))
    if not isinstance(items, list):
        raise CliError(f"the gateway's answer has no {key!r} list: is it older than this CLI?")
    return items


def list_threads(gw: Gateway, console: Console, json_out: JsonLines | None, *, limit: int, cursor: str | None) -> int:
    """GET /api/threads: id, name, last run's status, message count, last update."""
    page = gw.get("/api/threads", "list threads", limit=limit, cursor=cursor)
    items = _items(page, "threads")
    if json_out is not None:
        for item in items:
            json_out.record(item)
    elif not items:
        console.print('no threads yet: start one with `agentry chat "..."`')
    else:
        _table(
            console,
            ["thread", "name", "last run", "messages", "updated"],
            [
                [
                    t.get("thread_id"),
                    t.get("name"),
                    t.get("last_run_status") or "-",
                    t.get("message_count"),
                    _when(t.get("updated_at") or t.get("created_at")),
                ]
                for t in items
            ],
        )
    _page(console, json_out, page, "agentry threads")
    return 0


def list_runs(
    gw: Gateway, console: Console, json_out: JsonLines | None, thread_id: str, *, limit: int, cursor: str | None
) -> int:
    """GET /api/threads/{id}/runs: id, status, how it ended, when."""
    page = gw.get(f"/api/threads/{thread_id}/runs", "list runs", limit=limit, cursor=cursor)
    items = _items(page, "runs")
    if json_out is not None:
        for item in items:
            json_out.record(item)
    elif not items:
        console.print(f"thread {thread_id} has no runs yet")
    else:
        _table(
            console,
            ["run", "status", "finish", "created", "completed"],
            [
                [
                    r.get("agent_run_id"),
                    r.get("status"),
                    r.get("finish_reason") or r.get("error") or "",
                    _when(r.get("created_at")),
                    _when(r.get("completed_at")),
                ]
                for r in items
            ],
        )
    _page(console, json_out, page, f"agentry runs {thread_id}")
    return 0


def stop_run(gw: Gateway, console: Console, json_out: JsonLines | None, run_id: str) -> int:
    """POST /api/agent-run/{id}/stop; the run ends `cancelled` once its worker sees the request."""
    answer = gw.post(f"/api/agent-run/{run_id}/stop", "stop")
    if json_out is not None:
        json_out.record(answer)
    else:
        console.print(Text(f"run {run_id}: {answer.get('status')}"))
    return 0


def _sandbox(gw: Gateway, thread_id: str) -> str:
    thread = gw.get(f"/api/threads/{thread_id}", "get thread")
    sandbox_id = thread.get("sandbox_id")
    if not sandbox_id:
        raise CliError(f"thread {thread_id} has no sandbox (yet): it gets one on its first run")
    return sandbox_id


def files(
    gw: Gateway, console: Console, json_out: JsonLines | None, thread_id: str, path: str, *, output: str | None
) -> int:
    """Lists the directory `path` of the thread's sandbox workspace ("" is its root), or, when
    `path` names a file, downloads it: to `output` ("-" is stdout), else to its name in the
    current directory (an existing file is not overwritten unless `output` names it)."""
    sandbox_id = _sandbox(gw, thread_id)
    clean = str(PurePosixPath(path)) if path.strip("/") else ""
    clean = clean.lstrip("/")
    entry: dict[str, Any] | None = None
    if clean:
        parent = str(PurePosixPath(clean).parent)
        listing = gw.get(f"/api/sandboxes/{sandbox_id}/files", "list files", path="" if parent == "." else parent)
        name = PurePosixPath(clean).name
        entry = next((f for f in listing.get("files", []) if f.get("name") == name), None)
        if entry is None:
            raise CliError(f"no such file or directory in the workspace: {clean}")
    if entry is None or entry.get("is_dir"):
        listing = gw.get(f"/api/sandboxes/{sandbox_id}/files", "list files", path=clean)
        entries = listing.get("files", [])
        if json_out is not None:
            for item in entries:
                json_out.record(item)
        elif not entries:
            console.print(Text(f"{clean or 'the workspace'} is empty"))
        else:
            _table(
                console,
                ["path", "size", "modified"],
                [
                    [
                        f.get("path", f.get("name")) + ("/" if f.get("is_dir") else ""),
                        "" if f.get("is_dir") else f.get("size"),
                        _when(datetime.fromtimestamp(f["modified_at"]).isoformat()) if f.get("modified_at") else "",
                    ]
                    for f in entries
                ],
            )
        return 0
    return _download(gw, console, json_out, sandbox_id, clean, output)


def _download(
    gw: Gateway, console: Console, json_out: JsonLines | None, sandbox_id: str, path: str, output: str | None
) -> int:
    target = output or PurePosixPath(path).name
    if target != "-" and output is None and Path(target).exists():
        raise CliError(f"{target} exists here: pass --output {target} to overwrite it, or another name")
    written = 0
    try:
        written = _copy(gw, sandbox_id, path, target)
    except httpx.TransportError as exc:
        raise unreachable(gw.url, exc) from None
    if target != "-":
        if json_out is not None:
            json_out.record({"type": "cli.downloaded", "path": path, "output": target, "bytes": written})
        else:
            console.print(Text(f"downloaded {path} → {target} ({written} bytes)"))
    return 0


def _copy(gw: Gateway, sandbox_id: str, path: str, target: str) -> int:
    written = 0
    with gw.http.stream("GET", f"/api/sandboxes/{sandbox_id}/files/content", params={"path": path}) as response:
        if not response.is_success:
            response.read()
            raise api_error(response, "download")
        sink = sys.stdout.buffer if target == "-" else open(target, "wb")  # noqa: SIM115 - closed below
        try:
            for chunk in response.iter_bytes():
                sink.write(chunk)
                written += len(chunk)
        finally:
            if target == "-":
                sink.flush()
            else:
                sink.close()
    return written
