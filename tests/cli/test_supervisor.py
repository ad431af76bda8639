"""The supervisor behind `agentry up`, on small stand-in processes: restarts, backoff, stopping."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from agentry.cli.supervisor import ProcessSpec, RestartPolicy, Supervisor

SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]
CRASHER = [sys.executable, "-c", "import sys; sys.exit(3)"]


def spec(tmp_path: Path, name: str, argv: list[str]) -> ProcessSpec:
    return ProcessSpec(name=name, argv=argv, env=dict(os.environ), log_path=tmp_path / f"{name}.log")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is dead for our purposes.
    status = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    return status != "Z"


def test_restart_policy_doubles_to_the_cap_and_resets_after_a_long_uptime() -> None:
    policy = RestartPolicy()
    delays, previous = [], None
    for _ in range(9):
        previous = policy.next_delay(previous, uptime=1.0)
        delays.append(previous)
    assert delays == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]
    assert policy.next_delay(30, uptime=59.9) == 30
    assert policy.next_delay(30, uptime=60.0) == 0.5


def test_a_killed_child_is_restarted_and_the_others_keep_running(tmp_path: Path) -> None:
    events: list[str] = []
    supervisor = Supervisor(
        [spec(tmp_path, "a", SLEEPER), spec(tmp_path, "b", SLEEPER)],
        log_path=tmp_path / "supervisor.log",
        on_event=events.append,
    )
    supervisor.start()
    supervisor.supervise()
    try:
        supervisor.wait_healthy(timeout=10)
        b_pid = supervisor.pid("b")
        started = time.monotonic()
        old = supervisor.kill("a")
        supervisor.wait_healthy(["a"], timeout=10)
        took = time.monotonic() - started

        assert supervisor.pid("a") not in (None, old)
        assert supervisor.restarts("a") == 1
        assert supervisor.pid("b") == b_pid and supervisor.restarts("b") == 0
        assert 0.5 <= took < 5, "waited the initial backoff, then started it"
        assert not alive(old)
        assert events[0].startswith(f"a (pid {old}) was killed by SIGKILL after")
        assert "restarting it in 0.5s" in events[0]
        assert events[1] == f"a restarted (pid {supervisor.pid('a')}, restart 1)"
        assert "was killed by SIGKILL" in (tmp_path / "supervisor.log").read_text()
        assert "---- agentry up: " in (tmp_path / "a.log").read_text()
    finally:
        supervisor.stop()
    assert all(proc.poll() is not None for proc in supervisor.procs.values())


def test_a_crash_looping_child_backs_off(tmp_path: Path) -> None:
    events: list[str] = []
    policy = RestartPolicy(initial_delay=0.1, max_delay=0.4)
    supervisor = Supervisor(
        [spec(tmp_path, "crasher", CRASHER)],
        log_path=tmp_path / "supervisor.log",
        policy=policy,
        on_event=events.append,
    )
    supervisor.start()
    supervisor.supervise()
    try:
        deadline = time.monotonic() + 20
        while supervisor.restarts("crasher") < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        supervisor.stop()
    delays = [e.rsplit("restarting it in ", 1)[1] for e in events if "restarting it in" in e]
    assert delays[:5] == ["0.1s", "0.2s", "0.4s", "0.4s", "0.4s"]
    assert "exited with 3" in events[0]


def test_nothing_is_restarted_once_stopped(tmp_path: Path) -> None:
    events: list[str] = []
    supervisor = Supervisor(
        [spec(tmp_path, "a", SLEEPER)],
        log_path=tmp_path / "supervisor.log",
        policy=RestartPolicy(initial_delay=0.05),
        on_event=events.append,
    )
    supervisor.start()
    supervisor.supervise()
    pid = supervisor.pid("a")
    assert pid is not None
    supervisor.stop(timeout=5)
    time.sleep(0.3)
    assert not alive(pid)
    assert supervisor.restarts("a") == 0 and events == []


def test_children_die_with_a_killed_launcher_restarted_ones_too(tmp_path: Path) -> None:
    # PR_SET_PDEATHSIG follows the thread that forked: a restart spawned by the monitor thread
    # must die with the launcher as surely as the first children did.
    launcher = textwrap.dedent(f"""
        import os, sys, time
        from pathlib import Path
        from agentry.cli.supervisor import ProcessSpec, Supervisor
        tmp = Path({str(tmp_path)!r})
        sleeper = [sys.executable, "-c", "import time; time.sleep(120)"]
        sup = Supervisor([ProcessSpec(n, sleeper, dict(os.environ), tmp / (n + ".log")) for n in ("a", "b")],
                         log_path=tmp / "supervisor.log")
        sup.start(); sup.supervise(); sup.wait_healthy(timeout=10)
        sup.kill("a"); sup.wait_healthy(["a"], timeout=10)
        print(sup.pid("a"), sup.pid("b"), flush=True)
        time.sleep(120)
    """)
    proc = subprocess.Popen([sys.executable, "-c", launcher], stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        pids = [int(pid) for pid in line.split()]
        assert len(pids) == 2 and all(alive(pid) for pid in pids)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(pid) for pid in pids)


def test_kill_of_a_child_that_is_not_running_is_an_error(tmp_path: Path) -> None:
    supervisor = Supervisor([spec(tmp_path, "a", SLEEPER)], log_path=tmp_path / "supervisor.log")
    with pytest.raises(RuntimeError):
        supervisor.kill("a")
