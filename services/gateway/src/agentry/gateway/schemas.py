"""Request and response bodies of the HTTP API (they are the OpenAPI schema at /docs)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


def unstorable(value: Any) -> str | None:
    """Why a value (or a string inside it) cannot be stored or sent on, else None."""
    if isinstance(value, str):
        if "\x00" in value:
            return "must not contain NUL characters"
        # Encoding a lone surrogate to UTF-8 fails deep in protobuf or the database driver (a 500).
        if any("\ud800" <= ch <= "\udfff" for ch in value):
            return "must be valid Unicode (no lone surrogates)"
    elif isinstance(value, dict):
        return next((p for item in value.items() for p in map(unstorable, item) if p), None)
    elif isinstance(value, (list, tuple)):
        return next((p for p in map(unstorable, value) if p), None)
    return None


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Every field of every request body: a NUL or a lone surrogate is a 422 naming the field.
    @field_validator("*", mode="after")
    @classmethod
    def _storable(cls, value: Any) -> Any:
        problem = unstorable(value)
        if problem:
            raise ValueError(problem)
        return value


class Credentials(_Body):
    email: str = Field(min_length=3, max_length=320)
    password: str = Field(min_length=1, max_length=1024)


class SignUpAnswer(BaseModel):
    user_id: str
    account_id: str


class TokenAnswer(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int
    refresh_token: str = Field(description="Single use: POST it to /api/auth/refresh for the next pair.")


class NewThread(_Body):
    name: str | None = Field(default=None, max_length=200)


class ThreadAnswer(BaseModel):
    thread_id: str
    project_id: str
    sandbox_id: str | None = Field(
        default=None,
        description=(
            "The project's sandbox (reserved with the thread, made on its first use); null until it exists, "
            "or when the sandbox service could not be reached."
        ),
    )
    name: str = ""
    created_at: datetime | None = None
    updated_at: datetime | None = Field(
        default=None, description=("The newest of: its creation, its last message, its last run's start.")
    )
    last_run_status: str | None = Field(default=None, description="Status of its newest run; null with no run.")
    message_count: int = 0


class ThreadList(BaseModel):
    threads: list[ThreadAnswer]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page.")


class RenameThread(_Body):
    name: str = Field(min_length=1, max_length=200, description="Leading and trailing spaces are trimmed.")


class NewMessage(_Body):
    content: str = Field(min_length=1, max_length=100_000)


class MessageCreated(BaseModel):
    message_id: str


class MessageOut(BaseModel):
    message_id: str
    type: str
    content: Any = Field(description="The message as agentpress stores it (an object with a `kind`).")
    created_at: datetime


class MessageList(BaseModel):
    messages: list[MessageOut]
    next_cursor: str | None = Field(
        default=None, description=("Pass as `cursor` (with the same `order`) for the next page; null on the last page.")
    )


class StartRun(_Body):
    model_name: str | None = Field(
        default=None, max_length=200, description="A LiteLLM model string; the deployment's default when absent."
    )
    prompt: str | None = Field(
        default=None, max_length=100_000, description="Added to the thread as a user message before the run starts."
    )
    reasoning_effort: Literal["low", "medium", "high"] | None = Field(
        default=None, description="How hard a reasoning model thinks (passed to the provider through LiteLLM)."
    )
    multitask_strategy: Literal["reject", "enqueue", "interrupt", "rollback"] | None = Field(
        default=None,
        description=(
            "What to do when the thread already has an active run: `reject` (the default) answers 409 "
            "`run_active`; `enqueue` stores the run `pending` until the runs ahead of it have ended, its "
            "prompt joining the thread when it starts; `interrupt` stops the active run (keeping what it "
            "wrote) and starts this one once it has ended; `rollback` does the same and deletes the "
            "messages the stopped run added after its prompt."
        ),
    )


class RunStarted(BaseModel):
    agent_run_id: str
    status: str


class ResumeRun(_Body):
    """The user's input to a run waiting for it (status requires_action)."""

    content: str | None = Field(
        default=None,
        max_length=100_000,
        description=("The answer to the run's question (pending.kind `question`), or a note with a decision."),
    )
    decision: Literal["approve", "reject"] | None = Field(
        default=None,
        description=(
            "For a call waiting for approval (pending.kind `approval`): run it, or refuse it (the model is "
            "told it was rejected, with `content` as the reason)."
        ),
    )


class RunOut(BaseModel):
    agent_run_id: str
    thread_id: str
    status: str
    error: str | None
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    finish_reason: str | None = Field(
        default=None,
        description="Why the run ended (completed, cancelled, error, budget_exceeded, timeout, expired, ...).",
    )
    phase: str = Field(
        default="",
        description=(
            "What the run is doing now: waiting_for_worker, waiting_for_thread, starting, starting_sandbox, "
            "calling_model, running_tool (phase_detail: the tool), resumed, waiting_for_user, finished."
        ),
    )
    phase_detail: str | None = None
    phase_since: datetime | None = None
    attempt: int = Field(
        default=0, description="How many times a worker took the run; 2 and more: resumed after its worker was lost."
    )
    pending: dict[str, Any] | None = Field(
        default=None,
        description=(
            'While requires_action: {"kind": "question", "question", "call_id"} or '
            '{"kind": "approval", "tool", "arguments", "call_id"}; answer with POST /resume.'
        ),
    )


class RunList(BaseModel):
    runs: list[RunOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page.")


class Initiated(BaseModel):
    thread_id: str
    project_id: str
    agent_run_id: str
    sandbox_id: str | None
    files: list[str] = Field(
        default_factory=list,
        description=("Where the uploaded files are in the sandbox, in the order sent (the first message lists them)."),
    )


class UserOut(BaseModel):
    id: str
    email: str


class ActiveAccount(BaseModel):
    id: str
    role: str = Field(description='owner, admin or member; "api_key" for a caller using an API key.')


class SandboxOut(BaseModel):
    sandbox_id: str
    project_id: str
    provider: str
    state: str = Field(description="creating, started, stopped, archived or error.")
    network: bool = False
    error: str | None = None
    created_at: float | None = None
    last_used_at: float | None = None


class SandboxList(BaseModel):
    sandboxes: list[SandboxOut]


class FileOut(BaseModel):
    name: str
    path: str
    is_dir: bool
    size: int
    mode: int = Field(description="Permission bits.")
    modified_at: float


class FileList(BaseModel):
    files: list[FileOut]


class FileWritten(BaseModel):
    path: str
    size: int


class PreviewOut(BaseModel):
    url: str
    token: str | None = None
