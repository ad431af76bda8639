"""Runs, threads and messages as the runner sees them, and the rules for run status changes."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class RunStatus(str, enum.Enum):
    PENDING = "pending"  # waiting for its thread: another run holds it (multitask enqueue/interrupt/rollback)
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
# The statuses of the one run that holds its thread (a partial unique index allows one per thread).
THREAD_HOLDING_STATUSES = frozenset(
    {RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.CANCELLING, RunStatus.REQUIRES_ACTION}
)
# Every run that has not ended, waiting ones included: what the per-account cap counts.
ACTIVE_STATUSES = THREAD_HOLDING_STATUSES | {RunStatus.PENDING}


class MultitaskStrategy(str, enum.Enum):
    """What a start does when its thread already has an active run (LangGraph's names)."""

    REJECT = "reject"  # refuse: run_active
    ENQUEUE = "enqueue"  # wait (pending) until the runs ahead of it on the thread have ended, FIFO
    INTERRUPT = "interrupt"  # stop the active run, keep what it wrote, then start (first in line)
    ROLLBACK = "rollback"  # as interrupt, and delete what the stopped run added after its prompt

    @classmethod
    def parse(cls, value: str) -> MultitaskStrategy | None:
        """The strategy named `value` ("" is reject), or None when there is no such strategy."""
        try:
            return cls(value or cls.REJECT.value)
        except ValueError:
            return None


# agentpress finish reason -> (run status, error shown to the user)
FINISH_TO_STATUS: dict[str, tuple[RunStatus, str]] = {
    "completed": (RunStatus.COMPLETED, ""),
    "asked_user": (RunStatus.COMPLETED, ""),
    "step_limit": (RunStatus.COMPLETED, ""),
    "cancelled": (RunStatus.CANCELLED, ""),
    "budget_exceeded": (RunStatus.FAILED, "credit balance used up"),
    "error": (RunStatus.FAILED, "agent error"),
    "empty_response": (RunStatus.FAILED, "the model returned an empty reply"),
    "timeout": (RunStatus.FAILED, "the run exceeded its time limit"),
    "expired": (RunStatus.CANCELLED, "the run waited for the user longer than allowed"),
}


def final_status(reason: str, error: str | None) -> tuple[RunStatus, str]:
    """The run's status and the error shown to the user for a terminal event's reason."""
    status, default_error = FINISH_TO_STATUS.get(reason, (RunStatus.FAILED, "agent error"))
    if status is RunStatus.FAILED:
        return status, error or default_error
    return status, error or ""


# Event types whose effect is durable: also written to the database with their sequence number.
# `phase` events are durable too: the run's row shows the latest one (GET /api/agent-run/{id}),
# and a running_tool phase carries the call a resumed run must not repeat.
DURABLE_EVENT_TYPES = frozenset(
    {
        "run_started",
        "message_completed",
        "tool_call_finished",
        "phase",
        "run_resumed",
        "requires_action",
        "run_finished",
    }
)


# Run phases (the `phase` event and the run's `phase` field). agentpress emits calling_model and
# running_tool; the runner adds the rest.
class Phase(str, enum.Enum):
    WAITING_FOR_THREAD = "waiting_for_thread"  # pending: another run holds the thread
    WAITING_FOR_WORKER = "waiting_for_worker"
    STARTING = "starting"
    STARTING_SANDBOX = "starting_sandbox"
    CALLING_MODEL = "calling_model"
    RUNNING_TOOL = "running_tool"
    RESUMED = "resumed"
    WAITING_FOR_USER = "waiting_for_user"
    FINISHED = "finished"


# Why a run continues on another worker (the run_resumed event's `reason`).
RESUME_WORKER_LOST = "worker_lost"
RESUME_HANDED_BACK = "handed_back"
RESUME_USER_INPUT = "user_input"  # a paused run continues with the user's answer or decision

REASONING_EFFORTS = ("", "low", "medium", "high")
MAX_MESSAGE_CHARS = 100_000
MAX_THREAD_NAME_CHARS = 200
MAX_MODEL_CHARS = 200
MAX_ACCOUNT_ID_CHARS = 64  # the width of the account_id columns
DEFAULT_PAGE = 20  # threads, runs or messages per page when the caller names no limit
MAX_PAGE = 100  # threads or runs per page
MAX_MESSAGE_PAGE = 1000  # messages per page


@dataclass(frozen=True, slots=True)
class Thread:
    thread_id: str
    project_id: str
    account_id: str
    name: str
    created_at: float
    # Filled by the listing queries (ListThreads, and GetThread's answer); 0 / "" elsewhere.
    updated_at: float = 0.0  # the newest of created_at, its last message, its last run's creation
    message_count: int = 0
    last_run_status: str = ""  # of its newest run; "" when it has none


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
    attempt: int = 0  # how many times a worker has taken the run; > 1 means it was resumed
    phase: str = "waiting_for_worker"
    phase_detail: str = ""  # the tool's name while running_tool
    phase_since: float | None = None
    lease_epoch: int = 0
    worker_id: str | None = None
    lease_expires_at: float | None = None
    pending: dict | None = None  # requires_action: {"kind": "question"|"approval", ...}
    resolution: dict | None = None  # the user's answer/decision, until a worker has applied it
    multitask_strategy: str = "reject"
    # interrupt/rollback: the run that held the thread when this one was started (it is stopped;
    # with rollback, what it added after its prompt is deleted when this run takes the thread).
    interrupts_run_id: str | None = None
    # The run's place on its thread (1, 2, ...: the order runs got the thread, or ended without
    # getting it); None while it waits. A thread's event stream follows runs in this order.
    thread_seq: int | None = None
    user_id: str = ""  # who started it (tracing only)


@dataclass(frozen=True, slots=True)
class ClaimedRun:
    """A run a worker has just taken (from queued, or over from a worker whose lease lapsed),
    with what it needs to drive it."""

    run: Run
    project_id: str  # of the run's thread: the sandbox is per project
    resume_reason: str = ""  # RESUME_WORKER_LOST or RESUME_HANDED_BACK when run.attempt > 1
    # The thread's messages as the claim found them, oldest first (claim_run(with_history=True));
    # None when they were not read.
    history: tuple[StoredMessage, ...] | None = None


@dataclass(frozen=True, slots=True)
class DispatchJob:
    """A run the sweeper hands to the broker again (its job is missing or its lease lapsed)."""

    run_id: str
    thread_id: str
    account_id: str


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A message a run adds to its thread, written with the run's durable events."""

    message_id: str
    thread_id: str
    account_id: str
    type: str
    content_json: str
    created_at: float


@dataclass(frozen=True, slots=True)
class StoredEvent:
    seq: int
    data: bytes
    terminal: bool
