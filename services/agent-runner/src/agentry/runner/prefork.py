"""Prefork workers: import once, fork N worker processes, re-fork any that dies at once.

A worker process costs seconds of CPU to start (LiteLLM's import alone is 6-9 s on two cores),
so a worker that crashes - or is OOM-killed, or SIGKILLed by a chaos test - would otherwise
leave its share of the queue unserved for that long, and a machine whose workers die often
would spend its CPU importing. With `AGENTRY_RUNNER_PROCESSES=N` (worker role) the parent
imports everything once, holds no threads, sockets or event loop, and forks N children that
each run the ordinary worker (`main.start`); a child that dies is replaced within milliseconds
(with backoff if it keeps dying), sharing the parent's imported pages copy-on-write. The
first child serves gRPC health on the configured port, the others on free ports.
With AGENTRY_RUNNER_METRICS_PORT set, the children write their metrics to one directory
(prometheus-client's multiprocess mode) and slot 0 serves their sum on that port.
SIGTERM/SIGINT to the parent is forwarded to every child (each hands its runs back as on any
shutdown) and the parent exits once they have. Children die with the parent (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import time

logger = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def serve_prefork(processes: int, run_child, *, warm_up) -> int:
    """Runs `processes` children, each calling `run_child()`, until SIGTERM/SIGINT; returns the
    exit code. `warm_up()` runs once in the parent before the first fork (the expensive imports)."""
    warm_up()
    children: dict[int, int] = {}  # pid -> slot
    started: dict[int, float] = {}  # slot -> when its current child started
    delays: dict[int, float] = {}  # slot -> the wait before its next restart
    stopping = False

    def spawn(slot: int) -> None:
        pid = os.fork()
        if pid == 0:  # the child: the ordinary worker
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
                signal.signal(sig, signal.SIG_DFL)
            _die_with_parent()
            os.environ["AGENTRY_RUNNER_PROCESS_SLOT"] = str(slot)
            if slot:  # one process serves the configured health port; the others any free one
                os.environ["AGENTRY_RUNNER_PORT"] = "0"
                # and slot 0 serves /metrics for all (multiprocess mode sums every child's)
                os.environ.pop("AGENTRY_RUNNER_METRICS_PORT", None)
            code = 0
            try:
                run_child()
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException:
                logging.getLogger(__name__).exception("worker process crashed")
                code = 1
            finally:
                logging.shutdown()
                os._exit(code)
        children[pid] = slot
        started[slot] = time.monotonic()

    def on_signal(signum, _frame) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    for slot in range(processes):
        spawn(slot)
    logger.info("prefork: %d worker processes started", processes)
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        slot = children.pop(pid, None)
        from agentry.servicekit.metrics import mark_process_dead

        mark_process_dead(pid)  # its live gauges (runs it drove) stop counting
        if slot is None or stopping:
            continue
        uptime = time.monotonic() - started[slot]
        delay = 0.0 if uptime > 30 else min(max(delays.get(slot, 0.0) * 2, 0.05), 5.0)
        delays[slot] = delay
        logger.warning(
            "worker process %d (slot %d) ended (%s) after %.1fs; replacing it in %.2fs",
            pid,
            slot,
            _describe(status),
            uptime,
            delay,
        )
        if delay:
            time.sleep(delay)
        if not stopping:
            spawn(slot)
    return 0


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit code {os.WEXITSTATUS(status)}"
