"""The standard tool set: shell, processes and files through the sandbox port, plus ask/complete."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from agentpress.errors import ModelRetry, UserError
from agentpress.ports import RunContext
from agentpress.tools import Tool, tool

MAX_OUTPUT_CHARS = 50_000


def _clip(text: str, limit: int = MAX_OUTPUT_CHARS) -> str:
    """Keep head and tail of huge outputs: errors are usually at the end, context at the start."""
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}\n[... {len(text) - 2 * half} characters omitted ...]\n{text[-half:]}"


@tool
async def run_command(ctx: RunContext, command: str, timeout_seconds: int = 60) -> str:
    """Run a shell command in the sandbox and return its exit code and combined output.

    Args:
        command: The shell command line to run.
        timeout_seconds: Give up after this many seconds.
    """
    result = await ctx.sandbox.exec(command, timeout=float(timeout_seconds))
    status = "timed out" if result.timed_out else f"exit code {result.exit_code}"
    return f"[{status}]\n{_clip(result.output)}"


@tool
async def create_file(ctx: RunContext, path: str, content: str) -> str:
    """Create a file (or overwrite it) with the given content.

    Args:
        path: File path, relative to the workspace.
        content: The full text of the file.
    """
    data = content.encode()
    await ctx.sandbox.write_file(path, data)
    return f"wrote {len(data)} bytes to {path}"


@tool(idempotent=True)
async def read_file(ctx: RunContext, path: str, start_line: int | None = None, end_line: int | None = None) -> str:
    """Read a text file, optionally only lines start_line..end_line (1-based, inclusive).

    Args:
        path: File path, relative to the workspace.
        start_line: First line to return.
        end_line: Last line to return.
    """
    text = (await ctx.sandbox.read_file(path)).decode(errors="replace")
    if start_line is None and end_line is None:
        return _clip(text)
    lines = text.splitlines(keepends=True)
    first = max(1, start_line or 1)
    last = min(len(lines), end_line or len(lines))
    if first > last:
        raise ModelRetry(f"{path} has {len(lines)} lines; lines {first}..{last} are empty")
    return _clip("".join(lines[first - 1 : last]))


@tool
async def replace_in_file(ctx: RunContext, path: str, old: str, new: str) -> str:
    """Replace one exact occurrence of `old` with `new` in a file.

    Args:
        path: File path, relative to the workspace.
        old: Text to replace; must occur exactly once in the file.
        new: Replacement text.
    """
    text = (await ctx.sandbox.read_file(path)).decode()
    count = text.count(old) if old else 0
    if count != 1:
        found = "does not occur" if count == 0 else f"occurs {count} times"
        raise ModelRetry(f"`old` {found} in {path}; it must match exactly one place, include more context")
    await ctx.sandbox.write_file(path, text.replace(old, new, 1).encode())
    return f"replaced 1 occurrence in {path}"


@tool
async def delete_file(ctx: RunContext, path: str) -> str:
    """Delete a file.

    Args:
        path: File path, relative to the workspace.
    """
    await ctx.sandbox.delete_file(path)
    return f"deleted {path}"


@tool(idempotent=True)
async def list_files(ctx: RunContext, path: str = ".") -> str:
    """List the entries of a directory.

    Args:
        path: Directory path, relative to the workspace.
    """
    entries = await ctx.sandbox.list_files(path)
    if not entries:
        return f"{path} is empty"
    return "\n".join(f"{e.path}/" if e.is_dir else f"{e.path}  ({e.size} bytes)" for e in entries)


@tool
async def start_process(ctx: RunContext, command: str) -> str:
    """Start a long-running command in the background (a server, a watcher) and return its id.

    Args:
        command: The shell command line to start.
    """
    process_id = await ctx.sandbox.start_process(command)
    return f"started process {process_id}"


_process_tool_definitions: list[Tool] = []


def _process_tools() -> list[Tool]:
    # Offsets per process id, per tool set: each read returns only output not shown before.
    offsets: dict[str, int] = {}

    async def read_process_output(ctx: RunContext, process_id: str) -> str:
        """Return the output a background process produced since the last read, and whether it runs.

        Args:
            process_id: The id start_process returned.
        """
        state = await ctx.sandbox.read_process(process_id, offsets.get(process_id, 0))
        offsets[process_id] = state.next_offset
        status = "running" if state.running else f"exited with code {state.exit_code}"
        return f"[{status}]\n{_clip(state.output)}"

    async def stop_process(ctx: RunContext, process_id: str) -> str:
        """Stop a background process.

        Args:
            process_id: The id start_process returned.
        """
        await ctx.sandbox.stop_process(process_id)
        offsets.pop(process_id, None)
        return f"stopped process {process_id}"

    functions = [read_process_output, stop_process]
    # Building a Tool makes a pydantic model (~1 ms each); every tool set gets the same
    # definitions, only bound to its own closures, so they are built once per process.
    if not _process_tool_definitions:
        _process_tool_definitions.extend(tool(f) for f in functions)
    return [dataclasses.replace(t, function=f) for t, f in zip(_process_tool_definitions, functions, strict=True)]


@tool(terminates="asked_user")
async def ask(question: str) -> str:
    """Ask the user a question and end the run until they answer.

    Args:
        question: What you need to know.
    """
    return question


@tool(terminates="completed")
async def complete(summary: str) -> str:
    """Declare the task finished and end the run.

    Args:
        summary: What was done, for the user.
    """
    return summary


def default_tools(*, include: Iterable[str] | None = None, exclude: Iterable[str] = ()) -> list[Tool]:
    """A fresh list of the built-in tools (optionally a subset) for one agent."""
    tools = [
        run_command,
        start_process,
        *_process_tools(),
        create_file,
        read_file,
        replace_in_file,
        delete_file,
        list_files,
        ask,
        complete,
    ]
    names = {t.name for t in tools}
    wanted = set(include) if include is not None else names
    unknown = (wanted | set(exclude)) - names
    if unknown:
        raise UserError(f"unknown built-in tools: {sorted(unknown)}")
    return [t for t in tools if t.name in wanted and t.name not in set(exclude)]
