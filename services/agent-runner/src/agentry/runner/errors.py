"""Runner domain errors; the servicekit interceptor maps them to gRPC status codes."""

from agentry.servicekit.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unavailable,
)


class ThreadNotFound(NotFound):
    code = "thread_not_found"


class RunNotFound(NotFound):
    code = "run_not_found"


class MessageNotFound(NotFound):
    code = "message_not_found"


class RunAlreadyActive(FailedPrecondition):
    code = "run_active"


class TooManyActiveRuns(ResourceExhausted):
    """The account has as many active runs as it may (AGENTRY_RUNNER_MAX_ACTIVE_RUNS_PER_ACCOUNT).
    The gRPC API sends `retry_after_seconds` as the `retry-after` trailer (HTTP Retry-After)."""

    code = "too_many_active_runs"

    def __init__(self, message: str, *, retry_after_seconds: int = 1) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


class RunRefusedByBilling(PermissionDenied):
    """Billing will not let this run start (balance used up, model not on the plan). `code` is
    billing's reason (insufficient_credits: the gateway answers 402; model_not_allowed: 403)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.code = reason or "billing_refused"


class RunNotWaiting(FailedPrecondition):
    code = "run_not_waiting"


class InvalidInput(InvalidArgument):
    code = "invalid_argument"


class BillingUnavailable(Unavailable):
    code = "billing_unavailable"


class RunQueueUnavailable(Unavailable):
    code = "queue_unavailable"


class LeaseLost(Exception):
    """This worker no longer holds the run's lease (another worker took it over, or the run
    ended): it must stop driving the run and write nothing more for it. Not a client error."""
