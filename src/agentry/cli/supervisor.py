"""Keeps `agentry up`'s processes running: one that dies is started again, with backoff, as a kubelet would.

A child that exits while the supervisor runs is restarted after a delay that starts at 0.5 s and
doubles with each consecutive crash up to 30 s; a child that stayed up for 60 s starts again from
0.5 s. Every exit and restart is reported to `on_event` (the console) and appended to
`supervisor.log` and to the child's own log. The others keep running throughout.

Children die with the launcher: each is started with PR_SET_PDEATHSIG, so Linux sends it SIGTERM
when the thread that started it ends, even if the launcher is SIGKILLed. That is a *thread*, not
the process: restarts are therefore spawned by the monitor thread, which lives until `stop()`.
The child sets it itself, first thing (a small trampoline that then execs the service), not in a
`preexec_fn`: with one, Popen forks instead of vforking, and gRPC's fork handlers then run in the
child while the launcher has live channels (its health probes) -- which now and then crashed the
child before its exec or left `epoll_ctl failed: Bad file descriptor` in its log (grpc/grpc#43055).
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class RestartPolicy:
    initial_delay: float = 0.5
    max_delay: float = 30.0
    # A child that stayed up this long is healthy again: its next crash waits `initial_delay`.
    reset_after: float = 60.0

    def next_delay(self, previous: float | None, uptime: float) -> float:
        """The wait before restarting a child that exited after `uptime` seconds."""
        if previous is None or uptime >= self.reset_after:
            return self.initial_delay
        return min(previous * 2, self.max_delay)


@dataclass
class ProcessSpec:
    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    # True once the process serves (its health check answers); polled only while waiting for it.
    healthy: Callable[[], bool] = lambda: True
    # The working directory (a container's workingDir in the manifest-driven launch test).
    cwd: Path | None = None


@dataclass
class _Child:
    spec: ProcessSpec
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    last_delay: float | None = None
    restarts: int = 0
    exited: threading.Event = field(default_factory=threading.Event)


_STOP = object()


class Supervisor:
    def __init__(
        self,
        specs: Iterable[ProcessSpec],
        *,
        log_path: Path,
        policy: RestartPolicy = RestartPolicy(),
        on_event: Callable[[str], None] | None = None,
    ) -> None:
        self.children = {spec.name: _Child(spec) for spec in specs}
        self.policy = policy
        self.log_path = log_path
        self._on_event = on_event
        self._exits: queue.Queue[object] = queue.Queue()
        self._monitor: threading.Thread | None = None
        self._stopping = False
        self._lock = threading.Lock()

    # -- the caller's side -------------------------------------------------------------------

    def start(self) -> None:
        """Starts every child from the calling thread (which must outlive them: see the module doc)."""
        for child in self.children.values():
            self._spawn(child)

    def supervise(self) -> None:
        """From now on, a child that exits is restarted."""
        if self._monitor is None:
            self._monitor = threading.Thread(target=self._run, name="agentry-supervisor", daemon=True)
            self._monitor.start()

    @property
    def procs(self) -> dict[str, subprocess.Popen[bytes]]:
        return {name: child.proc for name, child in self.children.items() if child.proc is not None}

    def pid(self, name: str) -> int | None:
        proc = self.children[name].proc
        return proc.pid if proc is not None and proc.returncode is None else None

    def restarts(self, name: str) -> int:
        return self.children[name].restarts

    def kill(self, name: str, sig: int = signal.SIGKILL, *, wait: float | None = 30.0) -> int:
        """Sends `sig` to the child's process group (as a node kills a pod's containers) and, with
        `wait`, returns once that process has exited. The supervisor restarts it as any crash."""
        child = self.children[name]
        proc, exited = child.proc, child.exited
        if proc is None or proc.returncode is not None:
            raise RuntimeError(f"{name} is not running")
        os.killpg(proc.pid, sig)
        if wait is not None and not exited.wait(wait):
            raise TimeoutError(f"{name} (pid {proc.pid}) did not exit within {wait:.0f}s of signal {sig}")
        return proc.pid

    def wait_healthy(
        self,
        names: Iterable[str] | None = None,
        *,
        timeout: float = 90.0,
        on_exit: Callable[[str, int], None] | None = None,
    ) -> float:
        """Waits until each named child (all by default) runs and passes its health check; returns
        the seconds waited. Raises TimeoutError, naming the children that are not healthy.
        `on_exit(name, returncode)` is called for a child found exited (it may raise)."""
        pending = list(names if names is not None else self.children)
        started = time.monotonic()
        while pending:
            if on_exit is not None:
                for name in pending:
                    proc = self.children[name].proc
                    if proc is not None and proc.poll() is not None:
                        on_exit(name, proc.returncode)
            pending = [name for name in pending if not self._is_healthy(self.children[name])]
            if not pending:
                break
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"not healthy within {timeout:.0f}s: {', '.join(pending)}")
            time.sleep(0.1)  # the children are starting: nothing to be woken by but their ports
        return time.monotonic() - started

    def stop(self, timeout: float = 15.0) -> None:
        """Stops supervising, then SIGTERMs every child and waits; SIGKILLs what outlives `timeout`."""
        with self._lock:
            self._stopping = True
        if self._monitor is not None:
            self._exits.put(_STOP)
            self._monitor.join(timeout)
        procs = [c.proc for c in self.children.values() if c.proc is not None]
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    # -- internals ---------------------------------------------------------------------------

    def _is_healthy(self, child: _Child) -> bool:
        proc = child.proc
        if proc is None or proc.poll() is not None:
            return False
        try:
            return child.spec.healthy()
        except Exception:  # noqa: BLE001 - a probe that fails is a child that is not ready
            return False

    def _spawn(self, child: _Child, before_publish: Callable[[int], None] | None = None) -> None:
        """Starts the child's process and makes it the child's: `before_publish(pid)` runs first,
        so what it records (a restart's count and event) is there before anyone can see the new
        process running (wait_healthy)."""
        spec = child.spec
        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(spec.log_path, "ab") as log:
            proc = subprocess.Popen(
                _dying_with_this_thread(spec.argv),
                env=spec.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=spec.cwd,
                start_new_session=True,
            )
        if before_publish is not None:
            before_publish(proc.pid)
        exited = threading.Event()
        child.proc, child.exited, child.started_at = proc, exited, time.monotonic()
        threading.Thread(
            target=self._await_exit, args=(child, proc, exited), daemon=True, name=f"wait-{spec.name}-{proc.pid}"
        ).start()

    def _await_exit(self, child: _Child, proc: subprocess.Popen[bytes], exited: threading.Event) -> None:
        proc.wait()
        exited.set()
        self._exits.put((child, proc))

    def _run(self) -> None:
        due: dict[str, float] = {}  # child name -> when to start it again
        while True:
            now = time.monotonic()
            timeout = max(0.0, min(due.values()) - now) if due else None
            try:
                item = self._exits.get(timeout=timeout)
            except queue.Empty:
                item = None
            if item is _STOP:
                return
            with self._lock:
                if self._stopping:
                    return
                if item is not None:
                    child, proc = item  # type: ignore[misc]
                    if child.proc is proc:
                        self._schedule(child, proc, due)
                now = time.monotonic()
                for name, when in sorted(due.items(), key=lambda kv: kv[1]):
                    if when <= now:
                        del due[name]
                        self._restart(self.children[name], due)

    def _schedule(self, child: _Child, proc: subprocess.Popen[bytes], due: dict[str, float]) -> None:
        uptime = time.monotonic() - child.started_at
        delay = self.policy.next_delay(child.last_delay, uptime)
        child.last_delay = delay
        due[child.spec.name] = time.monotonic() + delay
        self._event(
            f"{child.spec.name} (pid {proc.pid}) {_describe_exit(proc.returncode)} after "
            f"{uptime:.1f}s; restarting it in {delay:.1f}s",
            child,
        )

    def _restart(self, child: _Child, due: dict[str, float]) -> None:
        def restarted(pid: int) -> None:
            child.restarts += 1
            self._event(f"{child.spec.name} restarted (pid {pid}, restart {child.restarts})", child)

        try:
            self._spawn(child, before_publish=restarted)
        except OSError as exc:
            child.last_delay = self.policy.next_delay(child.last_delay, 0.0)
            due[child.spec.name] = time.monotonic() + child.last_delay
            self._event(
                f"{child.spec.name} could not be started ({exc}); trying again in {child.last_delay:.1f}s", child
            )
            return

    def _event(self, message: str, child: _Child) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        line = f"{stamp} {message}\n"
        for path in (self.log_path, child.spec.log_path):
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a", encoding="utf-8") as log:
                log.write(line if path == self.log_path else f"---- agentry up: {line}")
        if self._on_event is not None:
            self._on_event(message)


def _describe_exit(returncode: int | None) -> str:
    if returncode is not None and returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with {returncode}"


# Run by the child's own interpreter before the service: the parent-death signal (SIGTERM), a
# check that the launcher did not die before it was set, then the service's own argv, exec'd in
# place (same pid). argv[1] is the launcher's pid, argv[2:] the service's command.
_TRAMPOLINE = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    os._exit(1)\n"
    "os.execvp(sys.argv[2], sys.argv[2:])\n"
)


def _dying_with_this_thread(argv: list[str]) -> list[str]:
    """`argv`, started so that it gets SIGTERM when the calling thread ends (Linux; elsewhere
    `argv` as it is). No preexec_fn: see the module docstring."""
    if not sys.platform.startswith("linux"):
        return list(argv)
    return [sys.executable, "-S", "-c", _TRAMPOLINE, str(os.getpid()), *argv]
