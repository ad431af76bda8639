"""What the runner plugs into an agent: message store, sandbox, usage and event sinks."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from agentpress.events import Event
from agentpress.messages import Message

if TYPE_CHECKING:
    from agentpress.observe import RunObserver


@dataclass(frozen=True, kw_only=True)
class ExecResult:
    exit_code: int
    output: str
    timed_out: bool = False


@dataclass(frozen=True, kw_only=True)
class FileEntry:
    name: str
    path: str
    is_dir: bool
    size: int


@dataclass(frozen=True, kw_only=True)
class ProcessState:
    output: str
    next_offset: int
    running: bool
    exit_code: int | None = None


@dataclass(frozen=True, kw_only=True)
class Usage:
    model: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    step: int


@runtime_checkable
class MessageStore(Protocol):
    async def load(self) -> list[Message]:
        """The whole thread history, oldest first."""
        ...

    async def append(self, message: Message) -> None: ...


@runtime_checkable
class SandboxPort(Protocol):
    async def exec(self, command: str, *, timeout: float, cwd: str | None = None) -> ExecResult: ...

    async def read_file(self, path: str) -> bytes: ...

    async def write_file(self, path: str, content: bytes) -> None: ...

    async def list_files(self, path: str) -> list[FileEntry]: ...

    async def delete_file(self, path: str) -> None: ...

    async def start_process(self, command: str) -> str: ...

    async def read_process(self, process_id: str, offset: int) -> ProcessState: ...

    async def stop_process(self, process_id: str) -> None: ...


@runtime_checkable
class UsageSink(Protocol):
    async def record(self, usage: Usage) -> bool:
        """Record one model call; False means the budget is spent."""
        ...


@runtime_checkable
class EventSink(Protocol):
    async def emit(self, event: Event) -> None: ...


@dataclass(kw_only=True)
class RunContext:
    """Everything one run may touch; tools receive it as their first parameter if they ask."""

    run_id: str
    thread_id: str
    messages: MessageStore
    sandbox: SandboxPort
    usage: UsageSink
    events: EventSink
    cancel: asyncio.Event = field(default_factory=asyncio.Event)
    # A tracer of the run's model and tool calls (agentpress.observe); None: nothing is observed.
    observer: RunObserver | None = None
