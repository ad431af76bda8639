"""How the CLI shows a run: for people (rich, live) or for scripts (`--json`, one JSON object a line).

Nothing the model or a tool produced is ever read as rich markup: text, tool arguments and tool
output go through `rich.text.Text`, so `[/bold]` or `[exit code 1]` print as written.
"""

from __future__ import annotations

import re
import sys
from typing import IO, Any

import orjson
from rich.console import Console
from rich.panel import Panel
from rich.status import Status
from rich.text import Text

_EXIT_LINE = re.compile(r"^\[(exit code (-?\d+)|timed out)\]")
OK_REASONS = frozenset({"completed", "asked_user", "step_limit"})


def exit_status(output: str) -> tuple[str | None, bool]:
    """The `[exit code N]` / `[timed out]` header run_command puts first: (label, failed)."""
    match = _EXIT_LINE.match(output)
    if match is None:
        return None, False
    if match.group(2) is None:
        return "timed out", True
    return f"exit code {match.group(2)}", match.group(2) != "0"


def money(usd: float) -> str:
    return f"${usd:.4f}" if usd < 1 else f"${usd:.2f}"


class JsonLines:
    """`--json`: every record is one line of JSON on stdout, flushed at once (a pipe sees each
    event as it happens). Records: the run's events unchanged (with their `seq`), and the CLI's
    own, whose `type` starts with `cli.` (cli.run, cli.stopping, cli.detached, cli.error)."""

    json = True

    def __init__(self, out: IO[str] | None = None) -> None:
        self.out = out or sys.stdout

    def record(self, data: dict[str, Any]) -> None:
        self.out.write(orjson.dumps(data).decode() + "\n")
        self.out.flush()

    def event(self, seq: int | None, event: dict[str, Any]) -> None:
        self.record(event if seq is None or "seq" in event else {"seq": seq, **event})

    def note(self, kind: str, message: str, **fields: Any) -> None:
        self.record({"type": f"cli.{kind}", "message": message, **fields})

    def close(self) -> None:
        pass


class Human:
    """Live rendering on a terminal: streamed text, a spinner while a tool runs, each tool call
    in a panel (arguments in the title, the exit code under it, red when it failed), the tokens
    and cost of each model call, and the run's total at the end."""

    json = False

    def __init__(self, console: Console) -> None:
        self.console = console
        self._at_line_start = True
        self._status: Status | None = None
        self._tokens_in = self._tokens_out = 0
        self._cost = 0.0

    # -- the CLI's own lines -----------------------------------------------------------------

    def note(self, kind: str, message: str, **fields: Any) -> None:
        self._newline()
        style = {"error": "red", "stopping": "yellow", "detached": "yellow", "reconnect": "dim", "run": "dim"}
        self.console.print(Text(message, style=style.get(kind, "")))

    # -- events --------------------------------------------------------------------------------

    def event(self, seq: int | None, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "text_delta":
            self._spin(None)
            text = str(event.get("text", ""))
            self.console.print(Text(text), end="")
            if text:
                self._at_line_start = text.endswith("\n")
        elif kind == "phase":
            if event.get("phase") == "running_tool":
                self._spin(f"running {event.get('tool') or 'a tool'}…")
            elif event.get("phase") == "calling_model":
                self._spin(None)
        elif kind == "tool_call_started":
            self._spin(f"running {event.get('name') or 'a tool'}…")
        elif kind == "tool_call_finished":
            self._spin(None)
            self._tool_panel(event)
        elif kind == "usage":
            self._usage(event)
        elif kind == "run_resumed":
            self.note(
                "reconnect",
                f"the run continues on another worker (attempt {event.get('attempt')}, {event.get('reason')})",
            )
        elif kind == "run_finished":
            self._spin(None)
            self._newline()
            reason, error = str(event.get("reason")), event.get("error")
            line = Text(f"run finished: {reason}", style="green" if reason in OK_REASONS else "red")
            if error:
                line.append(f" — {error}")
            if self._tokens_in or self._tokens_out or self._cost:
                line.append(
                    f"  ({self._tokens_in} tokens in, {self._tokens_out} out, {money(self._cost)})", style="dim"
                )
            self.console.print(line)

    def close(self) -> None:
        self._spin(None)
        self._newline()

    # -- pieces ----------------------------------------------------------------------------------

    def _newline(self) -> None:
        if not self._at_line_start:
            self.console.print()
            self._at_line_start = True

    def _spin(self, message: str | None) -> None:
        """Shows `message` with a spinner (None: stops it). Only on a terminal; elsewhere the
        panel that follows says the same."""
        if message is None:
            if self._status is not None:
                self._status.stop()
                self._status = None
            return
        if not self.console.is_terminal:
            return
        self._newline()
        if self._status is None:
            self._status = self.console.status(Text(message), spinner="dots")
            self._status.start()
        else:
            self._status.update(Text(message))

    def _tool_panel(self, event: dict[str, Any]) -> None:
        self._newline()
        output = str(event.get("output") or "")
        arguments = event.get("arguments", "")
        if not isinstance(arguments, str):
            arguments = orjson.dumps(arguments).decode()
        label, failed = exit_status(output)
        failed = failed or bool(event.get("error"))
        title = f"{event.get('name')}({arguments})"
        if len(title) > 120:
            title = title[:119] + "…"
        body = output.strip()
        if len(body) > 4000:
            body = body[:4000] + f"\n… ({len(output) - 4000} more characters)"
        subtitle_parts = [p for p in (label, event.get("error") and f"error: {event['error']}") if p]
        duration = event.get("duration_ms")
        if isinstance(duration, int | float):
            subtitle_parts.append(f"{duration / 1000:.1f}s")
        self.console.print(
            Panel(
                Text(body or "(no output)"),
                title=Text(title),
                title_align="left",
                subtitle=Text(" · ".join(subtitle_parts)) if subtitle_parts else None,
                subtitle_align="right",
                border_style="red" if failed else "cyan",
            )
        )

    def _usage(self, event: dict[str, Any]) -> None:
        tokens_in, tokens_out = int(event.get("prompt_tokens") or 0), int(event.get("completion_tokens") or 0)
        cost = float(event.get("cost_usd") or 0.0)
        self._tokens_in += tokens_in
        self._tokens_out += tokens_out
        self._cost += cost
        self._newline()
        self.console.print(
            Text(f"· {event.get('model')}: {tokens_in} tokens in, {tokens_out} out, {money(cost)}", style="dim")
        )
