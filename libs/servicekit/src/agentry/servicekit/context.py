"""Request, run and account ids that travel in gRPC metadata and appear in every log line, with
the trace id of the current span."""

from __future__ import annotations

import logging
import uuid
from contextvars import ContextVar

REQUEST_ID_KEY = "x-request-id"
RUN_ID_KEY = "x-agentry-run-id"
ACCOUNT_ID_KEY = "x-agentry-account-id"

request_id_var: ContextVar[str] = ContextVar("request_id", default="-")
run_id_var: ContextVar[str] = ContextVar("run_id", default="-")
account_id_var: ContextVar[str] = ContextVar("account_id", default="-")


def new_request_id() -> str:
    return uuid.uuid4().hex


def _trace_id() -> str:
    """The current OpenTelemetry trace id (32 hex digits), or "-" outside a trace."""
    from .tracing import current_trace_id

    return current_trace_id() or "-"


class ContextFilter(logging.Filter):
    """Adds request_id, run_id, account_id and trace_id to every record so formatters print them."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        record.run_id = run_id_var.get()
        record.account_id = account_id_var.get()
        record.trace_id = _trace_id()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts (ISO 8601, UTC), level, logger, msg, the four ids, and
    `exc` with the traceback when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        import datetime

        import orjson

        line = {
            "ts": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            "request_id": getattr(record, "request_id", "-"),
            "run_id": getattr(record, "run_id", "-"),
            "account_id": getattr(record, "account_id", "-"),
            "trace_id": getattr(record, "trace_id", "-"),
        }
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc"] = record.exc_text
        return orjson.dumps(line, default=str).decode()


def adopt_library_loggers(prefix: str = "LiteLLM") -> None:
    """Libraries that print through handlers of their own (LiteLLM's, added when it is imported)
    go through ours instead, so their lines are JSON too; their INFO chatter is dropped (WARNING
    and above kept). Call after importing the library."""
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if name.startswith(prefix) and isinstance(logger, logging.Logger):
            logger.handlers[:] = []
            logger.propagate = True
            logger.setLevel(max(logging.WARNING, logging.getLogger().level))


def configure_logging(level: str = "INFO", *, json: bool = False) -> None:
    """Configures the root logger once, in a process's entry point: JSON lines (production,
    AGENTRY_LOG_FORMAT=json) or readable text (`agentry dev`)."""
    handler = logging.StreamHandler()
    handler.addFilter(ContextFilter())
    if json:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter(
                "%(asctime)s %(levelname)-7s %(name)s [req=%(request_id)s run=%(run_id)s "
                "acct=%(account_id)s trace=%(trace_id)s] %(message)s"
            )
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
