"""Runs the calls of one turn: during the stream or after it, one by one or all at once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from agentpress.events import PhaseChanged, ToolCallFinished
from agentpress.messages import ToolCall
from agentpress.observe import _guard
from agentpress.ports import RunContext
from agentpress.processor import Emit, PendingCall
from agentpress.tools import ToolOutcome, ToolRegistry

# Decides whether a call waits for the user: the pending description, or None to run it now.
NeedsInput = Callable[[ToolCall], "dict[str, Any] | None"]


@dataclass(frozen=True)
class ToolExecution:
    """When tools run: "on_stream" starts each call as soon as it is complete, while the model is
    still writing; "after_turn" waits for the end of the reply. `parallel` lets calls overlap;
    results are always reported in call order."""

    when: Literal["on_stream", "after_turn"] = "on_stream"
    parallel: bool = False


class ToolExecutor:
    def __init__(
        self,
        registry: ToolRegistry,
        ctx: RunContext,
        emit: Emit,
        config: ToolExecution,
        needs_input: NeedsInput | None = None,
    ) -> None:
        self._registry = registry
        self._needs_input = needs_input
        # The first call of the turn that waits for the user; it and every later call of the
        # turn are left unrun (the run pauses after the turn; see Agent.resolve_pending).
        self.paused: dict[str, Any] | None = None
        self._ctx = ctx
        self._emit = emit
        self._config = config
        self._calls: list[PendingCall] = []
        self._tasks: dict[str, asyncio.Task[ToolOutcome]] = {}
        self.results: dict[str, ToolOutcome] = {}

    def submit(self, pending: PendingCall) -> None:
        self._calls.append(pending)
        if self._config.when == "on_stream":
            self._start(pending)

    def _start(self, pending: PendingCall) -> None:
        previous = None if self._config.parallel or not self._tasks else list(self._tasks.values())[-1]
        self._tasks[pending.call.call_id] = asyncio.create_task(
            self._run(pending, previous), name=f"tool:{pending.call.name}"
        )

    async def _run(self, pending: PendingCall, after: asyncio.Task[ToolOutcome] | None) -> ToolOutcome:
        if after is not None:
            await asyncio.wait({after})  # sequential: wait for the previous call, whatever its fate
        call = pending.call
        if self.paused is None and pending.parse_error is None and self._needs_input is not None:
            self.paused = self._needs_input(call)
        if self.paused is not None:
            return None  # type: ignore[return-value] - not run: the user decides first
        if pending.parse_error is not None:
            outcome = ToolOutcome(pending.parse_error, "invalid_call", {}, 0.0)
        else:
            # Announced before it runs: a host that must never run a call twice stores this
            # first, so a run resumed elsewhere knows the call may have had its effect.
            await self._emit(PhaseChanged(phase="running_tool", tool=call.name, call=call))
            observer = self._ctx.observer
            observation = (
                None
                if observer is None
                else _guard("tool_call", observer.tool_call, call.name, call.call_id, call.arguments)
            )
            try:
                outcome = await self._registry.execute(self._ctx, call.name, call.arguments, call.format)
            except asyncio.CancelledError:
                if observation is not None:
                    _guard("tool finish", observation.finish, ToolOutcome("cancelled", "cancelled", {}, 0.0))
                raise
            if observation is not None:
                _guard("tool finish", observation.finish, outcome)
        self.results[call.call_id] = outcome
        await self._emit(
            ToolCallFinished(
                call_id=call.call_id,
                name=call.name,
                arguments=outcome.arguments,
                output=outcome.output,
                error=outcome.error,
                duration_ms=round(outcome.duration_ms, 3),
            )
        )
        return outcome

    async def finish(self) -> list[tuple[PendingCall, ToolOutcome]]:
        """Run what has not started, wait for everything, return outcomes in call order (calls
        left unrun because the turn paused for the user have none and are left out)."""
        for pending in self._calls:
            if pending.call.call_id not in self._tasks:
                self._start(pending)
        if self._tasks:
            await asyncio.gather(*self._tasks.values())
        return [(p, self.results[p.call.call_id]) for p in self._calls if p.call.call_id in self.results]

    async def cancel(self) -> None:
        """Stop running tools promptly; what finished stays in `results`."""
        for task in self._tasks.values():
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)
