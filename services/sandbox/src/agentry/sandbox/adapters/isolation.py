"""How a sandboxed command is launched: inside bubblewrap with resource limits, or plainly on the host."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..domain import valid_env_name
from ..errors import InvalidSandboxRequest
from .workspace import SANDBOX_MOUNT

logger = logging.getLogger(__name__)

Isolation = Literal["bwrap", "none"]
SEARCH_PATH = "/usr/local/bin:/usr/bin:/bin"


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-process resource limits (hard and soft), set with prlimit before bubblewrap starts.

    `processes` counts every process of the sandbox's user, so it bounds a sandbox only when the
    sandbox runs as a user of its own (`uid`); 0 leaves a limit unset.
    """

    cpu_seconds: int = 0
    memory_bytes: int = 0
    processes: int = 0
    file_bytes: int = 0
    open_files: int = 0

    def prlimit_args(self, prlimit: str) -> list[str]:
        args = [
            f"--{name}={value}:{value}"
            for name, value in (
                ("cpu", self.cpu_seconds),
                ("as", self.memory_bytes),
                ("nproc", self.processes),
                ("fsize", self.file_bytes),
                ("nofile", self.open_files),
            )
            if value
        ]
        return [prlimit, *args, "--"] if args else []


@dataclass(frozen=True, slots=True)
class Launch:
    argv: list[str]
    cwd: Path  # the host directory the launcher starts in
    env: dict[str, str]
    uid: int | None = None  # the host user the command runs as (None: this process's)


def launch(
    isolation: Isolation,
    command: str,
    *,
    workspace: Path,
    cwd: Path,
    env: Mapping[str, str] | None,
    bwrap: str = "bwrap",
    network: bool = False,
    limits: Limits | None = None,
    uid: int | None = None,
    prlimit: str = "prlimit",
    setpriv: str = "setpriv",
) -> Launch:
    """The argv, host cwd and environment that run `/bin/sh -c command` in the workspace.

    The host's environment is never passed on: it holds the service's own secrets.

    bubblewrap gets its own user, pid, ipc, uts, cgroup, mount and (unless `network`) network
    namespaces; the system is mounted read-only and only the workspace (and a private /tmp) is
    writable. No `--new-session`: the launcher already starts a new session without a terminal,
    and keeping bwrap's in-namespace init in the launcher's process group lets one killpg end the
    whole sandboxed tree (bwrap's die-with-parent alone was seen to leave it running).
    """
    for name, value in (env or {}).items():
        if not valid_env_name(name) or "\x00" in value:
            raise InvalidSandboxRequest(f"invalid environment variable {name!r}")
    wrap = (limits or Limits()).prlimit_args(prlimit)
    if uid is not None:
        # Switched by setpriv rather than Popen(user=): Popen would then fork instead of vfork,
        # and gRPC's fork handlers were seen to crash the child (SIGSEGV) before it ran anything.
        wrap = [setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--", *wrap]
    if isolation == "none":
        base = {"PATH": SEARCH_PATH, "HOME": str(workspace), "LANG": "C.UTF-8", "TERM": "dumb"}
        return Launch([*wrap, "/bin/sh", "-c", command], cwd, {**base, **(env or {})}, uid)

    inside = SANDBOX_MOUNT / cwd.relative_to(workspace)
    base = {"PATH": SEARCH_PATH, "HOME": str(SANDBOX_MOUNT), "LANG": "C.UTF-8", "TERM": "dumb"}
    argv = [
        *wrap,
        bwrap,
        "--unshare-all",
        *(["--share-net"] if network else []),
        "--die-with-parent",
        "--ro-bind", "/usr", "/usr",
        "--symlink", "usr/bin", "/bin",
        "--symlink", "usr/sbin", "/sbin",
        "--symlink", "usr/lib", "/lib",
        "--symlink", "usr/lib64", "/lib64",
        "--ro-bind", "/etc", "/etc",
        "--proc", "/proc",
        "--dev", "/dev",
        "--tmpfs", "/tmp",
        "--bind", str(workspace), str(SANDBOX_MOUNT),
        "--chdir", str(inside),
        "/bin/sh", "-c", command,
    ]  # fmt: skip
    return Launch(argv, workspace, {**base, **(env or {})}, uid)


def choose_isolation(setting: Literal["auto", "bwrap", "none"]) -> tuple[Isolation, str]:
    """The isolation to use and the bwrap binary; "auto" falls back to none when bwrap cannot run."""
    if setting == "none":
        return "none", ""
    binary = shutil.which("bwrap")
    problem = "bwrap is not installed" if binary is None else _probe(binary)
    if problem is None and binary is not None:
        return "bwrap", binary
    if setting == "bwrap":
        raise RuntimeError(f"sandbox isolation 'bwrap' was requested but {problem}")
    logger.warning("bubblewrap cannot isolate sandbox commands here: %s", problem)
    return "none", ""


def _probe(binary: str) -> str | None:
    """None when bubblewrap can start a sandbox here, else why not."""
    workspace = Path(os.path.realpath("/tmp"))
    probe = launch("bwrap", "true", workspace=workspace, cwd=workspace, env=None, bwrap=binary)
    try:
        result = subprocess.run(probe.argv, env=probe.env, capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bwrap failed to start: {exc}"
    if result.returncode != 0:
        return f"bwrap cannot create a sandbox here: {result.stderr.decode(errors='replace').strip()}"
    return None
