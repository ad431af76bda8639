"""Settings of the runner service (api and worker roles)."""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import SettingsConfigDict

from agentry.servicekit.settings import ServiceSettings

DEFAULT_SYSTEM_PROMPT = (
    "You are Agentry, an autonomous agent with a sandboxed Linux computer. Use the tools to run "
    "commands and manage files in the workspace. Be concise; when the task is done, say so."
)


class RunnerSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="AGENTRY_RUNNER_", extra="ignore")

    database_url: str = "sqlite+aiosqlite:///./var/runner.db"
    # "api" serves gRPC, "worker" consumes run jobs, "all" does both in one process.
    role: Literal["api", "worker", "all"] = "all"
    queue: Literal["memory", "rabbitmq"] = "memory"
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    # A quorum queue with a delivery limit, dead-lettering into "<queue_name>.dead".
    queue_name: str = "agentry.run-jobs"
    events: Literal["memory", "redis"] = "memory"
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_prefix: str = "agentry:run:"
    sandbox_target: str = "127.0.0.1:50053"
    billing_target: str = "127.0.0.1:50052"
    # Ask billing (CheckRun, with the model the run will really use) before creating a run, and
    # cap the account's active runs at its plan's max_concurrent_runs.
    check_billing: bool = True
    default_model: str = "openai/agentry-demo"
    # When set, LiteLLM calls go to this OpenAI-compatible base URL (the fake server in dev).
    llm_api_base: str | None = None
    llm_api_key: str | None = None
    # When set, every run uses this model whatever the request asks (the offline demo).
    force_model: str | None = None
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    max_steps: int = 25
    # "native" uses the provider's tool calling; "xml" describes the tools in the system prompt
    # and parses <function_calls> blocks (for models without native tool calling).
    tool_calling: Literal["native", "xml"] = "native"
    # "on_stream" starts each tool as soon as its call is complete; "after_turn" waits for the reply.
    tool_execution: Literal["on_stream", "after_turn"] = "on_stream"
    parallel_tools: bool = False
    # Tried in order when the run's model keeps failing (rate limits, 5xx, timeouts).
    fallback_models: list[str] = []
    # Larger-context models tried when a prompt does not fit the run's model even after compressing it.
    context_fallback_models: list[str] = []
    # Model-call retries (agentpress.retries): transient errors only (rate limit, overload, 5xx,
    # timeout, connection), at most model_max_attempts attempts per call (the first included),
    # waiting what the provider's Retry-After / retry-after-ms asks, unless it asks for more than
    # model_max_retry_after_seconds (then the call fails at once); model_retry_budget retries per run.
    model_max_attempts: int = Field(default=3, ge=1, le=20)
    model_retry_budget: int = Field(default=10, ge=0, le=1000)
    model_max_retry_after_seconds: float = Field(default=60.0, ge=0)
    model_retry_initial_wait_seconds: float = Field(default=1.0, ge=0)
    # The (cheaper) model that summarises old turns when a thread outgrows the context window.
    summary_model: str = ""
    # Runs one worker process drives at once, at most (also the broker prefetch). Runs wait on
    # the model nearly all the time, so the ceiling is high; new runs are admitted only while the
    # process is under its memory budget and its event loop keeps up (runner/admission.py).
    worker_concurrency: int = Field(default=1000, ge=1, le=100_000)
    memory_budget_mb: float = Field(default=1536.0, ge=0)
    max_loop_lag_ms: float = Field(default=200.0, ge=0)
    max_admissions_per_second: float = Field(default=500.0, ge=0)  # 0: no pacing
    # Human in the loop: the ask tool pauses the run (status requires_action) until
    # POST /api/agent-run/{id}/resume answers it; tools named here (e.g. ["run_command"]) wait for
    # the user's approval before every call. A run waiting longer than pause_ttl_seconds ends
    # `cancelled` with reason `expired`.
    pause_on_ask: bool = True
    approval_tools: list[str] = []
    pause_ttl_seconds: float = Field(default=86_400.0, gt=0)
    # Worker role: this many worker processes forked from one parent that imports once; a
    # process that dies is replaced in milliseconds instead of seconds (see prefork.py).
    processes: int = Field(default=1, ge=1, le=64)
    # Durable runs. A worker holds a lease on each run it drives, renewed every third of it; a run
    # whose lease lapses (its worker died) is taken over and resumed by another worker, at most
    # `max_attempts` times in all.
    lease_seconds: float = Field(default=10.0, ge=1.0, le=300.0)
    max_attempts: int = Field(default=3, ge=1, le=100)
    # A run that runs longer than this in all, or sends no event for max_idle_seconds, ends
    # `failed` with reason `timeout`.
    max_run_seconds: float = Field(default=3600.0, gt=0)
    max_idle_seconds: float = Field(default=600.0, gt=0)
    # The sweeper (one elected runner process) re-publishes jobs that never reached the broker
    # and hands over runs whose lease lapsed, every sweep_interval_seconds; a queued run whose
    # job is older than redispatch_after_seconds gets a fresh one (a lost job is replaced; a
    # duplicate is harmless: a run is claimed once).
    sweep_interval_seconds: float = Field(default=2.0, gt=0)
    redispatch_after_seconds: float = Field(default=120.0, gt=0)
    # Runs of one account that may be active at once (waiting for their thread, queued, running,
    # cancelling); a start beyond it answers 429 too_many_active_runs with Retry-After of
    # active_runs_retry_after_seconds. 0 = unlimited.
    max_active_runs_per_account: int = Field(default=100, ge=0)
    # Durable events (phases, completed messages) reach the database this long after they were
    # streamed, batched: a run that ends sooner stores them with its end, in one transaction.
    # They are in the live stream at once either way; a tool call that is not idempotent is
    # stored before it runs regardless. 0 writes each batch at once.
    event_write_delay_ms: float = Field(default=200.0, ge=0, le=5000)
    # Text, reasoning and tool-call deltas that follow the previous delta event within this many
    # milliseconds are merged into one event (one stream entry, one SSE frame), written at the
    # next tick of a clock of this period that all of the process's runs share (so at most this
    # long later, and all runs' merged deltas in one batch); a delta after a quiet spell (a
    # reply's first token) goes at once. 0 = one event per model chunk.
    delta_coalesce_ms: float = Field(default=20.0, ge=0, le=1000)
    active_runs_retry_after_seconds: int = Field(default=5, ge=1, le=3600)
    # How often the runner api samples the queue's depth and oldest waiting run for /metrics.
    queue_sample_seconds: float = Field(default=5.0, gt=0)
    event_ttl_seconds: int = 3600
    event_maxlen: int = 10_000
    # Langfuse: every run is traced when both keys are set (the SDK's own variable names,
    # unprefixed); off, at no cost, when either is missing. LANGFUSE_HOST is accepted for the URL.
    langfuse_public_key: str | None = Field(
        default=None, validation_alias=AliasChoices("LANGFUSE_PUBLIC_KEY", "langfuse_public_key")
    )
    langfuse_secret_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("LANGFUSE_SECRET_KEY", "langfuse_secret_key")
    )
    langfuse_base_url: str = Field(
        default="https://cloud.langfuse.com",
        validation_alias=AliasChoices("LANGFUSE_BASE_URL", "LANGFUSE_HOST", "langfuse_base_url"),
    )
    # Every string sent to Langfuse (messages, tool arguments and outputs) is cut to this length,
    # after known secrets and secret-looking values are redacted; then the operator's masking hook
    # ("package.module:function", called with the value, returning the value to send) runs.
    langfuse_max_field_chars: int = Field(default=4000, ge=100, le=1_000_000)
    langfuse_mask: str = ""
    # Export runs on a background thread: a slow or dead Langfuse never delays a run; a batch that
    # cannot be sent within the timeout is dropped (counted).
    langfuse_export_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    langfuse_flush_interval_seconds: float = Field(default=1.0, gt=0, le=60)
