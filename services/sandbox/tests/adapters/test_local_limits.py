"""The hardened local provider under attack: no network unless asked for, a fork bomb and a memory
hog contained by the sandbox's limits while the service and other sandboxes keep working, a disk quota."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from agentry.sandbox.adapters.local import LocalLimits, LocalSandboxProvider
from agentry.sandbox.domain import ExecOutcome, SandboxSpec
from agentry.sandbox.errors import IsolationUnavailable, NoNetwork, QuotaExceeded

from ..conftest import requires_bwrap, traversable  # noqa: TID252 - the shared helpers

requires_root = pytest.mark.skipif(os.geteuid() != 0, reason="per-sandbox users need root")


async def run(
    provider: LocalSandboxProvider, ref: str, command: str, timeout: float = 60.0
) -> tuple[bytes, ExecOutcome]:
    output, outcome = b"", None
    async for item in provider.exec(ref, command, timeout=timeout):
        if isinstance(item, ExecOutcome):
            outcome = item
        else:
            output += item
    assert outcome is not None
    return output, outcome


@pytest.fixture
async def hardened(tmp_path: Path):
    provider = LocalSandboxProvider(
        traversable(tmp_path) / "sandboxes",
        isolation="bwrap",
        max_output_bytes=100_000,
        limits=LocalLimits(cpu_seconds=20, memory_mb=256, processes=64, disk_mb=8, quota_check_seconds=0.2),
    )
    yield provider
    await provider.close()


@requires_bwrap
async def test_no_network_unless_the_sandbox_was_created_with_it(hardened) -> None:
    await hardened.create("sbx_offline", SandboxSpec())
    await hardened.create("sbx_online", SandboxSpec(network=True))
    probe = "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '"
    offline, _ = await run(hardened, "sbx_offline", probe)
    online, _ = await run(hardened, "sbx_online", probe)
    assert offline.split() == [b"lo"]  # only a loopback of its own
    assert len(online.split()) > 1
    # A connection out (to this host's loopback, where PostgreSQL and Redis listen) is refused.
    connect = (
        "python3 -c \"import socket; socket.create_connection(('127.0.0.1', 5432), timeout=3); print('CONNECTED')\""
    )
    output, outcome = await run(hardened, "sbx_offline", connect)
    assert b"CONNECTED" not in output and outcome.exit_code != 0
    with pytest.raises(NoNetwork):
        await hardened.preview_link("sbx_offline", 8080)
    assert (await hardened.preview_link("sbx_online", 8080)).upstream_url == "http://127.0.0.1:8080"


def _processes_of(uid: int) -> int:
    count = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                status = Path(f"/proc/{entry}/status").read_text()
            except OSError:
                continue
            real_uid = next(line.split()[1] for line in status.splitlines() if line.startswith("Uid:"))
            count += int(real_uid) == uid
    return count


@requires_bwrap
@requires_root
async def test_a_fork_bomb_is_contained_and_other_sandboxes_keep_working(hardened) -> None:
    assert hardened.dedicated_users
    await hardened.create("sbx_bomb", SandboxSpec())
    await hardened.create("sbx_bystander", SandboxSpec())
    uid = hardened._box("sbx_bomb").uid
    # The shell stays (sleep) while the bomb forks as fast as it can.
    bomb = asyncio.ensure_future(run(hardened, "sbx_bomb", "b() { b | b & }; b; sleep 4", timeout=8))
    loop = asyncio.get_running_loop()
    deadline, peak = loop.time() + 3, 0
    while loop.time() < deadline:
        peak = max(peak, _processes_of(uid))
        await asyncio.sleep(0.05)
    # Never more processes than its sandbox's limit (64). (Sampling every 50 ms may miss the
    # bomb's short-lived peak: that it ran into the limit is checked on its output below.)
    assert peak <= 64, peak
    # While it runs: another sandbox starts processes, and this process (the service) forks.
    output, outcome = await run(hardened, "sbx_bystander", "for i in 1 2 3 4 5; do sh -c 'echo ok' & done; wait")
    assert output.count(b"ok") == 5 and outcome.exit_code == 0
    host = await asyncio.create_subprocess_exec("true")
    assert await host.wait() == 0
    bomb_output, _ = await bomb
    assert peak > 10 or b"Cannot fork" in bomb_output, (peak, bomb_output[:200])
    # Nothing of the bomb outlives its command, and its sandbox works again.
    for _ in range(100):
        if _processes_of(uid) == 0:
            break
        await asyncio.sleep(0.05)
    assert _processes_of(uid) == 0  # (the last ones may still be exiting when the command returns)
    assert (await run(hardened, "sbx_bomb", "echo alive"))[0] == b"alive\n"


@requires_bwrap
async def test_a_memory_hog_is_contained(hardened) -> None:
    await hardened.create("sbx_hog", SandboxSpec())
    output, outcome = await run(hardened, "sbx_hog", "python3 -c \"x = bytearray(1 << 30); print('GOT IT')\"")
    assert b"MemoryError" in output and b"GOT IT" not in output and outcome.exit_code != 0
    # A sandbox may ask for more, up to the maximum.
    await hardened.create("sbx_big", SandboxSpec(memory_mb=1536))
    output, outcome = await run(hardened, "sbx_big", "python3 -c \"x = bytearray(1 << 30); print('GOT IT')\"")
    assert b"GOT IT" in output and outcome.exit_code == 0


@requires_bwrap
async def test_the_disk_quota_and_file_size_limit(hardened) -> None:
    await hardened.create("sbx_disk", SandboxSpec())
    output, outcome = await run(hardened, "sbx_disk", "head -c 20000000 /dev/zero > big.bin; echo exit=$?")
    assert b"exit=0" not in output  # RLIMIT_FSIZE at the quota stops one file
    output, outcome = await run(
        hardened,
        "sbx_disk",
        "for i in 1 2 3 4 5 6 7 8 9 10 11 12; do head -c 1000000 /dev/urandom > f$i; done; sleep 5",
    )
    assert b"disk quota" in output and not outcome.timed_out
    with pytest.raises(QuotaExceeded):
        await hardened.write_file("sbx_disk", "more.bin", b"x" * 4_000_000)


async def test_without_bubblewrap_commands_are_refused_unless_allowed(tmp_path) -> None:
    refusing = LocalSandboxProvider(tmp_path / "a", isolation="none")
    await refusing.create("sbx_1", SandboxSpec())
    with pytest.raises(IsolationUnavailable, match="ALLOW_UNISOLATED"):
        await run(refusing, "sbx_1", "echo hi")
    await refusing.write_file("sbx_1", "files.txt", b"still work")
    assert await refusing.read_file("sbx_1", "files.txt") == b"still work"
    allowing = LocalSandboxProvider(tmp_path / "a", isolation="none", allow_unisolated=True)
    assert (await run(allowing, "sbx_1", "cat files.txt"))[0] == b"still work"


async def test_100_mb_of_exec_output_streams_in_bounded_chunks(tmp_path) -> None:
    provider = LocalSandboxProvider(
        traversable(tmp_path) / "sandboxes", isolation="none", allow_unisolated=True, max_output_bytes=200 * 1024 * 1024
    )
    await provider.create("sbx_out", SandboxSpec())
    total, largest, chunks = 0, 0, 0
    async for item in provider.exec("sbx_out", "head -c 104857600 /dev/zero", timeout=120):
        if isinstance(item, ExecOutcome):
            assert item.exit_code == 0 and not item.truncated
        else:
            total, largest, chunks = total + len(item), max(largest, len(item)), chunks + 1
    assert total == 100 * 1024 * 1024
    # Never more than the pipe's high-water mark (plus one read) at a time: nothing is held whole.
    assert largest <= 512 * 1024 and chunks >= 200
    await provider.close()
