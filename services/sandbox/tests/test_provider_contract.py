"""One contract for every sandbox provider: the local one (bubblewrap when it works here) and the
Daytona one, through the real `daytona` SDK against a fake Daytona API + toolbox started on port 0."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agentry.sandbox.adapters.isolation import choose_isolation
from agentry.sandbox.adapters.local import LocalSandboxProvider
from agentry.sandbox.domain import ExecOutcome, SandboxSpec
from agentry.sandbox.errors import (
    FileExists,
    FileNotFound,
    FileTooLarge,
    InvalidSandboxRequest,
    PathOutsideSandbox,
    ProcessNotFound,
    SandboxNotFound,
)
from agentry.sandbox.fake_daytona import API_KEY, FakeDaytona

from .conftest import traversable  # noqa: TID252 - the shared helper


@pytest.fixture(params=["local", "daytona"])
async def provider(request, tmp_path: Path) -> AsyncIterator:
    if request.param == "local":
        provider = LocalSandboxProvider(
            traversable(tmp_path) / "sandboxes",
            isolation=choose_isolation("auto")[0],
            allow_unisolated=True,
            max_file_bytes=1_000_000,
        )
        yield provider
        await provider.close()
        return
    from agentry.sandbox.adapters.daytona import DaytonaSandboxProvider

    fake = FakeDaytona(tmp_path / "daytona")
    await fake.start()
    provider = DaytonaSandboxProvider(api_key=API_KEY, api_url=fake.base_url, target="us", max_file_bytes=1_000_000)
    try:
        yield provider
    finally:
        await provider.close()
        await fake.stop()


async def run(provider, ref: str, command: str, **kwargs) -> tuple[bytes, ExecOutcome]:
    kwargs.setdefault("timeout", 20.0)
    output, outcome = b"", None
    async for item in provider.exec(ref, command, **kwargs):
        if isinstance(item, ExecOutcome):
            outcome = item
        else:
            output += item
    assert outcome is not None
    return output, outcome


async def chunks(*parts: bytes):
    for part in parts:
        yield part


@pytest.fixture
async def box(provider) -> str:
    return await provider.create("sbx_contract", SandboxSpec(env={"FROM_SPEC": "spec"}))


async def test_create_is_idempotent_and_exec_reports_output_and_exit(provider, box) -> None:
    assert await provider.create("sbx_contract", SandboxSpec()) == box
    output, outcome = await run(provider, box, 'echo "out $GREETING"; echo err >&2; exit 3', env={"GREETING": "hi"})
    assert b"out hi" in output and b"err" in output
    assert (outcome.exit_code, outcome.timed_out) == (3, False)


async def test_exec_runs_in_the_workspace_and_cwd(provider, box) -> None:
    await provider.make_dir(box, "src")
    output, outcome = await run(provider, box, "echo made > made.txt && ls", cwd="src")
    assert outcome.exit_code == 0 and output == b"made.txt\n"
    assert await provider.read_file(box, "src/made.txt") == b"made\n"


async def test_a_command_past_its_timeout_is_reported(provider, box) -> None:
    _, outcome = await run(provider, box, "sleep 30", timeout=1.0)
    assert outcome.timed_out and outcome.exit_code == 124


async def test_files_round_trip(provider, box) -> None:
    assert await provider.write_file(box, "docs/a.txt", b"hello") == 5
    assert await provider.read_file(box, "docs/a.txt") == b"hello"
    assert await provider.read_file(box, "/workspace/docs/a.txt") == b"hello"
    listed = await provider.list_files(box, "docs")
    assert [(f.name, f.path, f.is_dir, f.size) for f in listed] == [("a.txt", "docs/a.txt", False, 5)]
    assert [(f.name, f.is_dir) for f in await provider.list_files(box, "")] == [("docs", True)]
    big = [bytes([i]) * 300_000 for i in range(7)]
    assert await provider.upload(box, "big/blob.bin", chunks(*big)) == 2_100_000
    assert b"".join([c async for c in provider.download(box, "big/blob.bin")]) == b"".join(big)
    with pytest.raises(FileTooLarge):
        await provider.read_file(box, "big/blob.bin")  # whole-file reads are bounded; download it instead
    moved = await provider.move(box, "big/blob.bin", "blob.bin")
    assert (moved.path, moved.size) == ("blob.bin", 2_100_000)
    with pytest.raises(FileExists):
        await provider.move(box, "docs/a.txt", "blob.bin")
    made = await provider.make_dir(box, "x/y")
    assert (made.path, made.is_dir) == ("x/y", True)
    await provider.delete_file(box, "blob.bin")
    await provider.delete_file(box, "docs", recursive=True)
    assert sorted(f.name for f in await provider.list_files(box, "")) == ["big", "x"]
    with pytest.raises(FileNotFound):
        await provider.read_file(box, "docs/a.txt")
    with pytest.raises(FileNotFound):
        [c async for c in provider.download(box, "missing.bin")]


@pytest.mark.parametrize("path", ["../outside.txt", "/etc/passwd", "a/../../outside.txt", "/workspace/../etc/passwd"])
async def test_paths_outside_the_workspace_are_refused(provider, box, path) -> None:
    with pytest.raises(PathOutsideSandbox):
        await provider.write_file(box, path, b"x")
    with pytest.raises(PathOutsideSandbox):
        await provider.read_file(box, path)
    with pytest.raises(PathOutsideSandbox):
        await provider.list_files(box, path)
    with pytest.raises(PathOutsideSandbox):
        await provider.delete_file(box, path)
    with pytest.raises(PathOutsideSandbox):
        await provider.upload(box, path, chunks(b"x"))
    with pytest.raises(PathOutsideSandbox):
        [c async for c in provider.download(box, path)]
    with pytest.raises(PathOutsideSandbox):
        await run(provider, box, "true", cwd=path)


async def test_background_processes(provider, box) -> None:
    started = await provider.start_process(box, "echo ready; sleep 60", run_id="run_1")
    other = await provider.start_process(box, "sleep 60", run_id="run_2")
    assert started.running and started.run_id == "run_1"
    output, offset = b"", 0
    for _ in range(200):
        read = await provider.read_process(box, started.process_id, offset)
        output, offset = output + read.output, read.next_offset
        if b"ready" in output:
            break
        await asyncio.sleep(0.05)
    assert output == b"ready\n" and offset == 6
    listed = {p.process_id: p.run_id for p in await provider.list_processes(box)}
    assert listed == {started.process_id: "run_1", other.process_id: "run_2"}
    assert await provider.kill_run_processes(box, "run_2") == 1
    stopped = await provider.stop_process(box, started.process_id)
    assert not stopped.running and stopped.exit_code is not None
    with pytest.raises(ProcessNotFound):
        await provider.read_process(box, "nope", 0)


async def test_stop_start_keeps_files_and_destroy_removes_the_sandbox(provider, box) -> None:
    await provider.write_file(box, "keep.txt", b"kept")
    await provider.stop(box)
    await provider.start(box)
    assert await provider.read_file(box, "keep.txt") == b"kept"
    await provider.stop(box)
    await provider.archive(box)
    await provider.start(box)
    assert (await run(provider, box, 'cat keep.txt; echo " $FROM_SPEC"'))[0] == b"kept spec\n"
    await provider.destroy(box)
    with pytest.raises(SandboxNotFound):
        await provider.read_file(box, "keep.txt")
    await provider.destroy(box)  # idempotent


async def test_bad_input_is_invalid(provider, box) -> None:
    with pytest.raises(InvalidSandboxRequest):
        await run(provider, box, "   ")
    with pytest.raises(InvalidSandboxRequest):
        await provider.read_file(box, "a\x00b")
