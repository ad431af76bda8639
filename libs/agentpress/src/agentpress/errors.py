"""The three failures agentpress keeps apart: tool retry, broken model contract, developer misuse."""

from __future__ import annotations


class AgentpressError(Exception):
    """Root of every error agentpress raises on purpose."""


class UserError(AgentpressError):
    """The developer misused the library (bad tool definition, duplicate names, bad config).

    Raised at definition time so it never reaches a running agent.
    """


class ModelRetry(AgentpressError):
    """Raised by a tool to ask the model to try again; the message is shown to the model."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ToolCallError(AgentpressError):
    """The model broke its contract: unknown tool, arguments that do not validate, bad XML.

    Never escapes the loop: it becomes a tool result the model can read and correct.
    """


class ModelCallError(AgentpressError):
    """A model call failed for good (after retries and fallbacks, or a non-retryable error).

    `kind`: the error class (see agentpress.retries.ErrorKind: rate_limit, overloaded, timeout,
    server_error, connection, context_window, auth, bad_request, content_filter, unknown);
    `retry_after`: seconds the provider asked us to wait (Retry-After / retry-after-ms), if any.
    """

    default_kind = "unknown"

    def __init__(
        self, message: str = "", *, kind: str | None = None, retry_after: float | None = None, status: int | None = None
    ) -> None:
        super().__init__(message)
        self.kind = kind or self.default_kind
        self.retry_after = retry_after
        self.status = status


class ModelTransientError(ModelCallError):
    """A model call failed in a way worth retrying: rate limit, timeout, 5xx, dropped connection."""

    default_kind = "server_error"
