"""Runs, threads and messages as the runner sees them, and the rules for run status changes."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class RunStatus(str, enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    REQUIRES_ACTION = "requires_action"
    CANCELLING = "cancelling"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATUSES

    @property
    def active(self) -> bool:
        return self in ACTIVE_STATUSES


TERMINAL_STATUSES = frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED})
ACTIVE_STATUSES = frozenset({RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.CANCELLING})

# agentpress finish reason -> (run status, error shown to the user)
FINISH_TO_STATUS: dict[str, tuple[RunStatus, str]] = {
    "completed": (RunStatus.COMPLETED, ""),
    "asked_user": (RunStatus.COMPLETED, ""),
    "step_limit": (RunStatus.COMPLETED, ""),
    "cancelled": (RunStatus.CANCELLED, ""),
    "budget_exceeded": (RunStatus.FAILED, "credit balance used up"),
    "error": (RunStatus.FAILED, "agent error"),
}

# Event types whose effect is durable: also written to the database with their sequence number.
DURABLE_EVENT_TYPES = frozenset({"run_started", "message_completed", "tool_call_finished", "run_finished"})

REASONING_EFFORTS = ("", "low", "medium", "high")
MAX_MESSAGE_CHARS = 100_000
MAX_THREAD_NAME_CHARS = 200
MAX_MODEL_CHARS = 200
MAX_ACCOUNT_ID_CHARS = 64  # the width of the account_id columns


@dataclass(frozen=True, slots=True)
class Thread:
    thread_id: str
    project_id: str
    account_id: str
    name: str
    created_at: float


@dataclass(frozen=True, slots=True)
class StoredMessage:
    message_id: str
    thread_id: str
    type: str
    content_json: str
    created_at: float


@dataclass(frozen=True, slots=True)
class Run:
    run_id: str
    thread_id: str
    account_id: str
    status: RunStatus
    model: str
    error: str
    finish_reason: str
    created_at: float
    started_at: float | None
    completed_at: float | None
    reasoning_effort: str = ""


@dataclass(frozen=True, slots=True)
class ClaimedRun:
    """A run a worker has just moved from queued to running, with what it needs to start it."""

    run: Run
    project_id: str  # of the run's thread: the sandbox is per project


@dataclass(frozen=True, slots=True)
class StoredEvent:
    seq: int
    data: bytes
    terminal: bool
