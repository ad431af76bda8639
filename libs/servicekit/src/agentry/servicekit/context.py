"""Request and run ids that travel in gRPC metadata and appear in every log line."""

from __future__ import annotations

import logging
import uuid
from contextvars import ContextVar

REQUEST_ID_KEY = "x-request-id"
RUN_ID_KEY = "x-agentry-run-id"

request_id_var: ContextVar[str] = ContextVar("request_id", default="-")
run_id_var: ContextVar[str] = ContextVar("run_id", default="-")


def new_request_id() -> str:
    return uuid.uuid4().hex


class ContextFilter(logging.Filter):
    """Adds request_id and run_id to every record so formatters can print them."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        record.run_id = run_id_var.get()
        return True


def configure_logging(level: str = "INFO", *, json: bool = False) -> None:
    """Configures the root logger once, in a process's entry point."""
    handler = logging.StreamHandler()
    handler.addFilter(ContextFilter())
    if json:
        fmt = (
            '{"ts":"%(asctime)s","level":"%(levelname)s","logger":"%(name)s",'
            '"request_id":"%(request_id)s","run_id":"%(run_id)s","msg":%(message)r}'
        )
    else:
        fmt = "%(asctime)s %(levelname)-7s %(name)s [req=%(request_id)s run=%(run_id)s] %(message)s"
    handler.setFormatter(logging.Formatter(fmt))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
