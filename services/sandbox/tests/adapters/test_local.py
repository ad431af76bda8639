"""The local provider: commands, isolation, files and background processes, with and without bwrap."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from pathlib import Path

import pytest

from agentry.sandbox.adapters.local import LocalSandboxProvider
from agentry.sandbox.domain import TIMEOUT_EXIT_CODE, ExecOutcome, SandboxSpec
from agentry.sandbox.errors import (
    DirectoryNotEmpty,
    FileNotFound,
    FileTooLarge,
    InvalidSandboxRequest,
    IsADirectory,
    NotADirectory,
    PathOutsideSandbox,
    ProcessNotFound,
    SandboxNotFound,
)

from ..conftest import requires_bwrap  # noqa: TID252 - the shared skip marker

SID = "sbx_test"


async def run(provider: LocalSandboxProvider, command: str, **kwargs) -> tuple[bytes, ExecOutcome]:
    kwargs.setdefault("timeout", 20.0)
    output = b""
    outcome = None
    async for item in provider.exec(SID, command, **kwargs):
        if isinstance(item, ExecOutcome):
            outcome = item
        else:
            assert outcome is None, "output after the outcome"
            output += item
    assert outcome is not None
    return output, outcome


@pytest.fixture
async def sandbox(provider: LocalSandboxProvider) -> Path:
    await provider.create(SID, SandboxSpec())
    return provider.root_dir / SID / "workspace"


async def test_create_is_idempotent_and_unknown_sandboxes_are_not_found(provider, sandbox) -> None:
    assert await provider.create(SID, SandboxSpec()) == SID
    with pytest.raises(SandboxNotFound):
        await provider.read_file("sbx_other", "a.txt")
    with pytest.raises(SandboxNotFound):
        await provider.create("../escape", SandboxSpec())


async def test_exec_merges_stdout_and_stderr_and_reports_the_exit_code(provider, sandbox) -> None:
    output, outcome = await run(provider, "echo out; echo err >&2; exit 3")
    assert output == b"out\nerr\n"
    assert (outcome.exit_code, outcome.timed_out, outcome.truncated) == (3, False, False)
    assert outcome.duration_seconds > 0


async def test_exec_runs_in_the_workspace_and_writes_land_there(provider, sandbox) -> None:
    await provider.make_dir(SID, "src")  # as the sandbox's user, like its commands
    output, outcome = await run(provider, "echo hi > made.txt && ls", cwd="src")
    assert outcome.exit_code == 0
    assert (sandbox / "src" / "made.txt").read_text() == "hi\n"
    assert output == b"made.txt\n"


async def test_exec_passes_env_but_not_the_host_environment(provider, sandbox, monkeypatch) -> None:
    monkeypatch.setenv("AGENTRY_SECRET_FOR_TEST", "leak")
    output, _ = await run(provider, 'echo "$GREETING/$AGENTRY_SECRET_FOR_TEST"', env={"GREETING": "hello"})
    assert output == b"hello/\n"
    with pytest.raises(InvalidSandboxRequest):
        await run(provider, "true", env={"BAD=NAME": "x"})


async def test_exec_streams_output_as_it_is_produced(provider, sandbox) -> None:
    stream = provider.exec(SID, "echo first; sleep 30; echo never", timeout=20.0)
    async with contextlib.aclosing(stream):
        first = await asyncio.wait_for(stream.__anext__(), 10)
    assert first == b"first\n"


async def test_timeout_kills_the_whole_process_group(provider, sandbox, running, eventually) -> None:
    marker = f"{uuid.uuid4().int % 10**6 + 100}.25"
    output, outcome = await run(provider, f"echo start; sleep {marker} & sleep {marker}; echo never", timeout=0.5)
    assert outcome.timed_out is True
    assert outcome.exit_code == TIMEOUT_EXIT_CODE
    assert output == b"start\n"
    assert 0.5 <= outcome.duration_seconds < 5
    await eventually(lambda: not running(f"sleep {marker}"), 5)


async def test_background_children_do_not_outlive_the_command(provider, sandbox, running, eventually) -> None:
    marker = f"{uuid.uuid4().int % 10**6 + 100}.5"
    _, outcome = await run(provider, f"sleep {marker} & echo started", timeout=10)
    assert outcome.exit_code == 0 and not outcome.timed_out
    assert outcome.duration_seconds < 5
    await eventually(lambda: not running(f"sleep {marker}"), 5)


async def test_closing_the_stream_early_kills_the_command(provider, sandbox, running, eventually) -> None:
    marker = f"{uuid.uuid4().int % 10**6 + 100}.75"
    stream = provider.exec(SID, f"echo go; sleep {marker}", timeout=60)
    assert await stream.__anext__() == b"go\n"
    assert running(f"sleep {marker}")
    await stream.aclose()
    await eventually(lambda: not running(f"sleep {marker}"), 5)


async def test_output_beyond_the_limit_is_truncated_with_a_marker(provider, sandbox) -> None:
    output, outcome = await run(provider, "head -c 50000 /dev/zero | tr '\\0' x; echo; echo done")
    assert outcome.truncated is True
    assert outcome.exit_code == 0
    assert output.startswith(b"x" * 10_000)
    assert output.endswith(b"[output truncated: more than 10000 bytes]\n")
    assert b"done" not in output


async def test_exec_in_a_missing_or_escaping_cwd_is_refused(provider, sandbox) -> None:
    with pytest.raises(FileNotFound):
        await run(provider, "true", cwd="nope")
    with pytest.raises(PathOutsideSandbox):
        await run(provider, "true", cwd="..")
    with pytest.raises(InvalidSandboxRequest):
        await run(provider, "   ")


@requires_bwrap
async def test_bwrap_has_no_network(sandbox, tmp_path) -> None:
    provider = LocalSandboxProvider(sandbox.parent.parent, isolation="bwrap")
    output, outcome = await run(
        provider,
        "python3 -c 'import socket; socket.create_connection((\"1.1.1.1\", 53), timeout=2)' 2>&1; "
        "cat /proc/net/dev | tail -n +3 | cut -d: -f1",
    )
    assert b"Network is unreachable" in output
    assert output.strip().splitlines()[-1].strip() == b"lo"


@requires_bwrap
async def test_bwrap_hides_the_host_and_maps_the_workspace(sandbox) -> None:
    provider = LocalSandboxProvider(sandbox.parent.parent, isolation="bwrap")
    output, outcome = await run(provider, "pwd; ls /root 2>&1; echo x > /usr/x 2>&1; ls /home 2>&1; echo note > n.txt")
    lines = output.decode().splitlines()
    assert lines[0] == "/workspace"
    assert "No such file or directory" in lines[1]
    assert "Read-only file system" in output.decode()
    assert (sandbox / "n.txt").read_text() == "note\n"
    # The private processes directory beside the workspace is not reachable from inside.
    output, _ = await run(provider, "ls ../processes 2>&1 || true")
    assert b"No such file" in output


async def test_file_round_trip_list_and_delete(provider, sandbox) -> None:
    assert await provider.write_file(SID, "notes/a.txt", b"alpha") == 5
    await provider.write_file(SID, "/workspace/notes/b.txt", b"be")
    assert (sandbox / "notes" / "a.txt").read_bytes() == b"alpha"
    assert await provider.read_file(SID, "notes/b.txt") == b"be"

    root = await provider.list_files(SID)
    assert [(f.name, f.path, f.is_dir) for f in root] == [("notes", "notes", True)]
    notes = await provider.list_files(SID, "notes")
    assert [(f.name, f.path, f.is_dir, f.size) for f in notes] == [
        ("a.txt", "notes/a.txt", False, 5),
        ("b.txt", "notes/b.txt", False, 2),
    ]
    assert notes[0].modified_at > 0

    with pytest.raises(DirectoryNotEmpty):
        await provider.delete_file(SID, "notes")
    await provider.delete_file(SID, "notes/a.txt")
    assert [f.name for f in await provider.list_files(SID, "notes")] == ["b.txt"]
    await provider.delete_file(SID, "notes", recursive=True)
    assert await provider.list_files(SID) == []


async def test_file_errors(provider, sandbox) -> None:
    await provider.write_file(SID, "f.txt", b"x")
    with pytest.raises(FileNotFound):
        await provider.read_file(SID, "missing.txt")
    with pytest.raises(FileNotFound):
        await provider.list_files(SID, "missing")
    with pytest.raises(FileNotFound):
        await provider.delete_file(SID, "missing")
    with pytest.raises(NotADirectory):
        await provider.list_files(SID, "f.txt")
    with pytest.raises(NotADirectory):
        await provider.write_file(SID, "f.txt/inner", b"x")
    (sandbox / "d").mkdir()
    with pytest.raises(IsADirectory):
        await provider.read_file(SID, "d")
    with pytest.raises(IsADirectory):
        await provider.write_file(SID, "d", b"x")
    with pytest.raises(InvalidSandboxRequest):
        await provider.delete_file(SID, "")
    small = LocalSandboxProvider(provider.root_dir, max_file_bytes=3, allow_unisolated=True)
    with pytest.raises(FileTooLarge):
        await small.write_file(SID, "big.txt", b"four")
    await provider.write_file(SID, "big.txt", b"four")
    with pytest.raises(FileTooLarge):
        await small.read_file(SID, "big.txt")


@pytest.mark.parametrize("path", ["../escape.txt", "/etc/passwd", "/tmp/x", "sub/../../escape.txt", "link/x", "link"])
async def test_file_operations_refuse_paths_outside(provider, sandbox, tmp_path, path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x").write_text("host")
    os.symlink(outside, sandbox / "link")
    with pytest.raises(PathOutsideSandbox):
        await provider.write_file(SID, path, b"pwned")
    with pytest.raises(PathOutsideSandbox):
        await provider.read_file(SID, path)
    with pytest.raises(PathOutsideSandbox):
        await provider.list_files(SID, path)
    assert (outside / "x").read_text() == "host"
    assert not (tmp_path / "escape.txt").exists()


async def test_a_symlink_made_inside_the_sandbox_cannot_reach_out(provider, sandbox, tmp_path) -> None:
    (tmp_path / "host.txt").write_text("host secret")
    _, outcome = await run(provider, f"ln -s {tmp_path / 'host.txt'} leak.txt; ln -s / rootlink")
    assert outcome.exit_code == 0
    with pytest.raises(PathOutsideSandbox):
        await provider.read_file(SID, "leak.txt")
    with pytest.raises(PathOutsideSandbox):
        await provider.read_file(SID, "rootlink/etc/passwd")
    with pytest.raises(PathOutsideSandbox):
        await provider.write_file(SID, "leak.txt", b"overwrite")
    assert (tmp_path / "host.txt").read_text() == "host secret"
    # Deleting the link removes the link, never its target.
    await provider.delete_file(SID, "leak.txt")
    assert not (sandbox / "leak.txt").is_symlink()
    assert (tmp_path / "host.txt").read_text() == "host secret"


async def test_background_process_lifecycle(provider, sandbox, eventually) -> None:
    started = await provider.start_process(SID, "echo one; sleep 0.2; echo two; exit 7")
    assert started.running is True and started.exit_code is None
    assert len(started.process_id) >= 16

    async def finished() -> None:
        await eventually(lambda: not provider._processes.processes[started.process_id].running, 10)

    await finished()
    result = await provider.read_process(SID, started.process_id)
    assert result.output == b"one\ntwo\n"
    assert result.next_offset == 8
    assert (result.process.running, result.process.exit_code) == (False, 7)
    tail = await provider.read_process(SID, started.process_id, offset=4)
    assert (tail.output, tail.next_offset) == (b"two\n", 8)
    assert (await provider.read_process(SID, started.process_id, offset=8)).output == b""


async def test_stopping_a_background_process_kills_its_group(provider, sandbox, running, eventually) -> None:
    marker = f"{uuid.uuid4().int % 10**6 + 100}.125"
    started = await provider.start_process(SID, f"echo up; sleep {marker} & sleep {marker}")
    await eventually(lambda: (sandbox.parent / "processes" / f"{started.process_id}.log").read_bytes() == b"up\n", 10)
    await eventually(lambda: len(running(f"sleep {marker}")) >= 2, 10)
    stopped = await provider.stop_process(SID, started.process_id)
    assert stopped.running is False
    assert stopped.exit_code is not None
    await eventually(lambda: not running(f"sleep {marker}"), 5)
    result = await provider.read_process(SID, started.process_id)
    assert result.output == b"up\n"
    assert result.process == stopped


async def test_processes_are_private_to_their_sandbox(provider, sandbox) -> None:
    await provider.create("sbx_other", SandboxSpec())
    started = await provider.start_process(SID, "true")
    with pytest.raises(ProcessNotFound):
        await provider.read_process("sbx_other", started.process_id)
    with pytest.raises(ProcessNotFound):
        await provider.stop_process(SID, "no-such-process")
    with pytest.raises(InvalidSandboxRequest):
        await provider.read_process(SID, started.process_id, offset=-1)
    # Process logs live outside the workspace.
    assert [f.name for f in await provider.list_files(SID)] == []


async def test_destroy_stops_processes_and_removes_files(provider, sandbox, running, eventually) -> None:
    marker = f"{uuid.uuid4().int % 10**6 + 100}.375"
    await provider.start_process(SID, f"sleep {marker}")
    await eventually(lambda: bool(running(f"sleep {marker}")), 10)
    await provider.destroy(SID)
    await eventually(lambda: not running(f"sleep {marker}"), 5)
    assert not sandbox.exists()
    with pytest.raises(SandboxNotFound):
        await provider.list_files(SID)
