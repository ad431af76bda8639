"""The service end to end: a real server from main.start() on port 0, called over gRPC."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from agentry.api.sandbox.v1 import sandbox_pb2, sandbox_pb2_grpc
from agentry.sandbox.config import SandboxSettings
from agentry.sandbox.main import start
from agentry.servicekit import DEV_INTERNAL_TOKEN, open_channel
from agentry.servicekit.errors import ERROR_CODE_KEY

from .conftest import traversable  # noqa: TID252 - the shared helper


@pytest.fixture
async def target(tmp_path: Path, sqlite_url: str) -> AsyncIterator[str]:
    settings = SandboxSettings(
        port=0,
        database_url=sqlite_url,
        root_dir=traversable(tmp_path) / "sandboxes",
        isolation="auto",
        allow_unisolated=True,
        grace_seconds=0.5,
        default_exec_timeout_seconds=10,
    )
    async with contextlib.AsyncExitStack() as stack:
        running = await start(settings, stack)
        yield running.target


@pytest.fixture
async def stub(target: str) -> AsyncIterator[sandbox_pb2_grpc.SandboxServiceStub]:
    async with open_channel(target, DEV_INTERNAL_TOKEN) as channel:
        yield sandbox_pb2_grpc.SandboxServiceStub(channel)


async def _sandbox(stub, account: str = "acct_a", project: str = "proj_1") -> sandbox_pb2.Sandbox:
    return await stub.CreateSandbox(sandbox_pb2.CreateSandboxRequest(account_id=account, project_id=project))


def _error_code(error: grpc.aio.AioRpcError) -> str | None:
    return dict(error.trailing_metadata() or ()).get(ERROR_CODE_KEY)


async def test_create_is_idempotent_per_project_and_get_returns_it(stub) -> None:
    first = await _sandbox(stub)
    assert first.sandbox_id and first.provider == "local" and first.state == "started"
    assert (first.account_id, first.project_id) == ("acct_a", "proj_1")
    assert await _sandbox(stub) == first
    assert (await _sandbox(stub, project="proj_2")).sandbox_id != first.sandbox_id
    got = await stub.GetSandbox(sandbox_pb2.GetSandboxRequest(account_id="acct_a", sandbox_id=first.sandbox_id))
    assert got == first


async def test_exec_streams_output_then_exit(stub) -> None:
    box = await _sandbox(stub)
    request = sandbox_pb2.ExecRequest(
        account_id="acct_a", sandbox_id=box.sandbox_id, command='echo "$WHO"; echo oops >&2; exit 2', env={"WHO": "me"}
    )
    chunks = [chunk async for chunk in stub.Exec(request)]
    assert all(c.WhichOneof("kind") == "output" for c in chunks[:-1])
    assert b"".join(c.output for c in chunks[:-1]) == b"me\noops\n"
    final = chunks[-1]
    assert final.WhichOneof("kind") == "exit"
    assert (final.exit.exit_code, final.exit.timed_out) == (2, False)
    assert final.exit.duration_seconds > 0


async def test_exec_timeout_is_reported(stub) -> None:
    box = await _sandbox(stub)
    request = sandbox_pb2.ExecRequest(
        account_id="acct_a", sandbox_id=box.sandbox_id, command="sleep 30", timeout_seconds=0.3
    )
    chunks = [chunk async for chunk in stub.Exec(request)]
    assert chunks[-1].exit.timed_out is True
    assert chunks[-1].exit.exit_code == 124


async def test_cancelling_exec_kills_the_command(stub, running, eventually) -> None:
    box = await _sandbox(stub)
    marker = f"{uuid.uuid4().int % 10**6 + 100}.625"
    call = stub.Exec(
        sandbox_pb2.ExecRequest(account_id="acct_a", sandbox_id=box.sandbox_id, command=f"echo go; sleep {marker}")
    )
    first = await call.read()
    assert first.output == b"go\n"
    await eventually(lambda: bool(running(f"sleep {marker}")), 5)
    call.cancel()
    await eventually(lambda: not running(f"sleep {marker}"), 10)


async def test_exec_deadline_kills_the_command(stub, running, eventually) -> None:
    box = await _sandbox(stub)
    marker = f"{uuid.uuid4().int % 10**6 + 100}.875"
    call = stub.Exec(
        sandbox_pb2.ExecRequest(account_id="acct_a", sandbox_id=box.sandbox_id, command=f"sleep {marker}"),
        timeout=1.0,
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for _ in call:
            pass
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    await eventually(lambda: not running(f"sleep {marker}"), 10)


async def test_write_read_list_delete(stub) -> None:
    box = await _sandbox(stub)
    ids = {"account_id": "acct_a", "sandbox_id": box.sandbox_id}
    written = await stub.WriteFile(sandbox_pb2.WriteFileRequest(**ids, path="docs/readme.md", content=b"# hi\n"))
    assert written.size == 5
    read = await stub.ReadFile(sandbox_pb2.ReadFileRequest(**ids, path="docs/readme.md"))
    assert read.content == b"# hi\n"
    listed = await stub.ListFiles(sandbox_pb2.ListFilesRequest(**ids, path="docs"))
    assert [(f.name, f.path, f.is_dir, f.size) for f in listed.files] == [("readme.md", "docs/readme.md", False, 5)]
    root = await stub.ListFiles(sandbox_pb2.ListFilesRequest(**ids))
    assert [(f.name, f.is_dir) for f in root.files] == [("docs", True)]
    await stub.DeleteFile(sandbox_pb2.DeleteFileRequest(**ids, path="docs", recursive=True))
    assert list((await stub.ListFiles(sandbox_pb2.ListFilesRequest(**ids))).files) == []
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.ReadFile(sandbox_pb2.ReadFileRequest(**ids, path="docs/readme.md"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert _error_code(err.value) == "file_not_found"


async def test_background_process_over_grpc(stub, eventually) -> None:
    box = await _sandbox(stub)
    ids = {"account_id": "acct_a", "sandbox_id": box.sandbox_id}
    started = await stub.StartProcess(sandbox_pb2.StartProcessRequest(**ids, command="echo ready; sleep 60"))
    assert started.running and not started.HasField("exit_code")
    output = b""
    offset = 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while b"ready" not in output:
        assert loop.time() < deadline
        read = await stub.ReadProcess(
            sandbox_pb2.ReadProcessRequest(**ids, process_id=started.process_id, offset=offset)
        )
        output += read.output
        offset = read.next_offset
        await asyncio.sleep(0.02)
    assert output == b"ready\n" and offset == 6
    stopped = await stub.StopProcess(sandbox_pb2.StopProcessRequest(**ids, process_id=started.process_id))
    assert not stopped.running and stopped.HasField("exit_code")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.ReadProcess(sandbox_pb2.ReadProcessRequest(**ids, process_id="nope"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_another_account_gets_not_found_for_everything(stub) -> None:
    box = await _sandbox(stub)
    theirs = {"account_id": "acct_b", "sandbox_id": box.sandbox_id}
    unknown = {"account_id": "acct_b", "sandbox_id": "sbx_does_not_exist"}
    for ids in (theirs, unknown):
        calls = [
            stub.GetSandbox(sandbox_pb2.GetSandboxRequest(**ids)),
            stub.ReadFile(sandbox_pb2.ReadFileRequest(**ids, path="a")),
            stub.WriteFile(sandbox_pb2.WriteFileRequest(**ids, path="a", content=b"x")),
            stub.ListFiles(sandbox_pb2.ListFilesRequest(**ids)),
            stub.DeleteFile(sandbox_pb2.DeleteFileRequest(**ids, path="a")),
            stub.StartProcess(sandbox_pb2.StartProcessRequest(**ids, command="true")),
            stub.StartSandbox(sandbox_pb2.SandboxRequest(**ids)),
            stub.StopSandbox(sandbox_pb2.SandboxRequest(**ids)),
            stub.ArchiveSandbox(sandbox_pb2.SandboxRequest(**ids)),
            stub.DeleteSandbox(sandbox_pb2.SandboxRequest(**ids)),
            stub.GetPreviewLink(sandbox_pb2.GetPreviewLinkRequest(**ids, port=8080)),
            stub.MakeDirectory(sandbox_pb2.MakeDirectoryRequest(**ids, path="d")),
            stub.MoveFile(sandbox_pb2.MoveFileRequest(**ids, source="a", destination="b")),
            stub.ListProcesses(sandbox_pb2.ListProcessesRequest(**ids)),
            stub.SendProcessInput(sandbox_pb2.SendProcessInputRequest(**ids, process_id="p", data=b"x")),
            stub.KillRunProcesses(sandbox_pb2.KillRunProcessesRequest(**ids, run_id="r")),
            stub.UploadFile(_upload(ids, "a", [b"x"])),
        ]
        messages = set()
        for call in calls:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
            assert _error_code(err.value) == "sandbox_not_found"
            messages.add(err.value.details().replace(ids["sandbox_id"], "<id>"))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for _ in stub.Exec(sandbox_pb2.ExecRequest(**ids, command="echo hi")):
                pass
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for _ in stub.DownloadFile(sandbox_pb2.ReadFileRequest(**ids, path="a")):
                pass
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        assert messages == {"sandbox '<id>' not found"}


@pytest.mark.parametrize("path", ["../outside.txt", "/etc/passwd", "a/../../outside.txt"])
async def test_path_escape_is_invalid_argument(stub, path: str) -> None:
    box = await _sandbox(stub)
    ids = {"account_id": "acct_a", "sandbox_id": box.sandbox_id}
    for call in (
        stub.WriteFile(sandbox_pb2.WriteFileRequest(**ids, path=path, content=b"x")),
        stub.ReadFile(sandbox_pb2.ReadFileRequest(**ids, path=path)),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert _error_code(err.value) == "path_outside_sandbox"


@pytest.mark.parametrize("token", [None, "wrong-token"])
async def test_missing_internal_credential_is_unauthenticated(target: str, token: str | None) -> None:
    async with open_channel(target, token) as channel:
        stub = sandbox_pb2_grpc.SandboxServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.CreateSandbox(sandbox_pb2.CreateSandboxRequest(account_id="a", project_id="p"))
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for _ in stub.Exec(sandbox_pb2.ExecRequest(account_id="a", sandbox_id="s", command="true")):
                pass
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_empty_account_is_invalid_argument(stub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.CreateSandbox(sandbox_pb2.CreateSandboxRequest(account_id="", project_id="p"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def _upload(ids: dict, path: str, parts: list[bytes]):
    yield sandbox_pb2.UploadFileChunk(header=sandbox_pb2.UploadFileHeader(**ids, path=path))
    for part in parts:
        yield sandbox_pb2.UploadFileChunk(data=part)


async def test_upload_and_download_stream_in_chunks(stub) -> None:
    box = await _sandbox(stub)
    ids = {"account_id": "acct_a", "sandbox_id": box.sandbox_id}
    parts = [bytes([i]) * 700_000 for i in range(5)]
    written = await stub.UploadFile(_upload(ids, "big/blob.bin", parts))
    assert written.size == 3_500_000
    chunks = [c.data async for c in stub.DownloadFile(sandbox_pb2.ReadFileRequest(**ids, path="big/blob.bin"))]
    assert len(chunks) > 1 and b"".join(chunks) == b"".join(parts)
    moved = await stub.MoveFile(sandbox_pb2.MoveFileRequest(**ids, source="big/blob.bin", destination="b.bin"))
    assert (moved.path, moved.size, moved.is_dir) == ("b.bin", 3_500_000, False)
    made = await stub.MakeDirectory(sandbox_pb2.MakeDirectoryRequest(**ids, path="x/y"))
    assert (made.path, made.is_dir) == ("x/y", True)
    listed = await stub.ListFiles(sandbox_pb2.ListFilesRequest(**ids))
    assert [(f.name, f.mode) for f in listed.files] == [("b.bin", 0o644), ("big", 0o755), ("x", 0o755)]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for _ in stub.DownloadFile(sandbox_pb2.ReadFileRequest(**ids, path="../../etc/passwd")):
            pass
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_lifecycle_over_grpc(stub) -> None:
    lazy = await stub.CreateSandbox(
        sandbox_pb2.CreateSandboxRequest(
            account_id="acct_a",
            project_id="proj_9",
            lazy=True,
            spec=sandbox_pb2.SandboxSpec(memory_mb=256, env={"A": "1"}, labels={"k": "v"}),
        )
    )
    assert lazy.state == "creating" and lazy.spec.memory_mb == 256
    ids = {"account_id": "acct_a", "sandbox_id": lazy.sandbox_id}
    assert (await stub.StartSandbox(sandbox_pb2.SandboxRequest(**ids))).state == "started"
    assert (await stub.StopSandbox(sandbox_pb2.SandboxRequest(**ids))).state == "stopped"
    assert (await stub.ArchiveSandbox(sandbox_pb2.SandboxRequest(**ids))).state == "archived"
    listed = await stub.ListSandboxes(sandbox_pb2.ListSandboxesRequest(account_id="acct_a", project_id="proj_9"))
    assert [(b.sandbox_id, b.state, dict(b.spec.labels)) for b in listed.sandboxes] == [
        (lazy.sandbox_id, "archived", {"k": "v"})
    ]
    await stub.DeleteSandbox(sandbox_pb2.SandboxRequest(**ids))
    assert list((await stub.ListSandboxes(sandbox_pb2.ListSandboxesRequest(account_id="acct_a"))).sandboxes) == []
