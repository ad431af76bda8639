"""In-memory adapters of the run ports, for tests and dev mode: stateful, not stubs."""

from __future__ import annotations

import asyncio
import math
import posixpath
import uuid
from collections.abc import Awaitable, Callable

from agentpress.events import Event
from agentpress.messages import Message
from agentpress.ports import ExecResult, FileEntry, ProcessState, Usage

ExecHandler = Callable[[str, float], Awaitable[ExecResult]]


class MemoryMessageStore:
    def __init__(self, messages: list[Message] | None = None) -> None:
        self.messages: list[Message] = list(messages or [])

    async def load(self) -> list[Message]:
        return list(self.messages)

    async def append(self, message: Message) -> None:
        self.messages.append(message)


class RecordingEventSink:
    def __init__(self) -> None:
        self.events: list[Event] = []

    async def emit(self, event: Event) -> None:
        self.events.append(event)

    def of_type(self, type_: str) -> list[Event]:
        return [e for e in self.events if e.type == type_]


class RecordingUsageSink:
    """Records every call; reports the budget spent once the total cost reaches `budget_usd`."""

    def __init__(self, budget_usd: float | None = None) -> None:
        self.records: list[Usage] = []
        self.budget_usd = budget_usd

    @property
    def total_cost(self) -> float:
        return sum(u.cost_usd for u in self.records if not math.isnan(u.cost_usd))  # NaN: unpriced

    async def record(self, usage: Usage) -> bool:
        self.records.append(usage)
        return self.budget_usd is None or self.total_cost < self.budget_usd


async def _echo(command: str, timeout: float) -> ExecResult:
    return ExecResult(exit_code=0, output=f"$ {command}\n")


class MemorySandbox:
    """Files in a dict under /workspace; commands go to `exec_handler` (default: echo)."""

    root = "/workspace"

    def __init__(self, exec_handler: ExecHandler = _echo) -> None:
        self.files: dict[str, bytes] = {}
        self.commands: list[str] = []
        self.processes: dict[str, dict[str, object]] = {}
        self._exec = exec_handler

    def _path(self, path: str) -> str:
        full = posixpath.normpath(posixpath.join(self.root, path))
        if full != self.root and not full.startswith(self.root + "/"):
            raise PermissionError(f"{path} is outside the sandbox workspace")
        return full

    async def exec(self, command: str, *, timeout: float, cwd: str | None = None) -> ExecResult:
        self.commands.append(command)
        try:
            return await asyncio.wait_for(self._exec(command, timeout), timeout)
        except TimeoutError:
            return ExecResult(exit_code=124, output="", timed_out=True)

    async def read_file(self, path: str) -> bytes:
        full = self._path(path)
        if full not in self.files:
            raise FileNotFoundError(f"no such file: {path}")
        return self.files[full]

    async def write_file(self, path: str, content: bytes) -> None:
        self.files[self._path(path)] = content

    async def delete_file(self, path: str) -> None:
        full = self._path(path)
        if self.files.pop(full, None) is None:
            raise FileNotFoundError(f"no such file: {path}")

    async def list_files(self, path: str) -> list[FileEntry]:
        base = self._path(path).rstrip("/") + "/"
        entries: dict[str, FileEntry] = {}
        for full, data in sorted(self.files.items()):
            if not full.startswith(base):
                continue
            head, _, rest = full[len(base) :].partition("/")
            rel = posixpath.relpath(base + head, self.root)
            entries.setdefault(head, FileEntry(name=head, path=rel, is_dir=bool(rest), size=0 if rest else len(data)))
        return list(entries.values())

    async def start_process(self, command: str) -> str:
        process_id = uuid.uuid4().hex[:12]
        self.processes[process_id] = {"command": command, "output": f"$ {command}\n", "running": True}
        return process_id

    async def read_process(self, process_id: str, offset: int) -> ProcessState:
        proc = self._process(process_id)
        output = str(proc["output"])
        return ProcessState(
            output=output[offset:],
            next_offset=len(output),
            running=bool(proc["running"]),
            exit_code=None if proc["running"] else -15,
        )

    async def stop_process(self, process_id: str) -> None:
        self._process(process_id)["running"] = False

    def _process(self, process_id: str) -> dict[str, object]:
        if process_id not in self.processes:
            raise KeyError(f"no such process: {process_id}")
        return self.processes[process_id]
