from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from agentry.sandbox.adapters.isolation import choose_isolation
from agentry.sandbox.adapters.local import LocalSandboxProvider
from agentry.servicekit import testing


def bwrap_available() -> bool:
    if shutil.which("bwrap") is None:
        return False
    try:
        return choose_isolation("auto")[0] == "bwrap"
    except RuntimeError:
        return False


requires_bwrap = pytest.mark.skipif(not bwrap_available(), reason="bubblewrap is not installed or cannot run here")


@pytest.fixture(params=["none", pytest.param("bwrap", marks=requires_bwrap)])
def isolation(request) -> str:
    return request.param


def traversable(path: Path) -> Path:
    """`path`, with every directory above it made o+x so a sandbox's own user can reach its workspace
    (pytest's temporary directories are 0700)."""
    for directory in [path, *path.parents]:
        mode = directory.stat().st_mode
        if not mode & 0o001:
            directory.chmod(mode | 0o001)
    return path


@pytest.fixture
async def provider(tmp_path: Path, isolation: str) -> AsyncIterator[LocalSandboxProvider]:
    provider = LocalSandboxProvider(
        traversable(tmp_path) / "sandboxes", isolation=isolation, allow_unisolated=True, max_output_bytes=10_000
    )
    yield provider
    await provider.close()


@pytest.fixture
def eventually() -> Callable[[Callable[[], bool], float], Awaitable[None]]:
    """Waits until a condition holds, failing after `timeout` seconds."""
    return testing.eventually


def processes_running(marker: str) -> list[int]:
    """Host pids whose command line mentions `marker` (works whether or not bwrap is used)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\x00", b" ")
            state = Path(f"/proc/{entry}/stat").read_text().split(") ", 1)[1][0]
        except OSError:
            continue
        if marker.encode() in cmdline and state != "Z":
            pids.append(int(entry))
    return pids


@pytest.fixture
def running() -> Callable[[str], list[int]]:
    return processes_running
