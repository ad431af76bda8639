"""Every built-in tool through the in-memory sandbox port."""

from __future__ import annotations

import pytest

from agentpress import ExecResult, MemorySandbox, ToolRegistry, UserError, default_tools


@pytest.fixture
def reg() -> ToolRegistry:
    return ToolRegistry(default_tools())


def test_exact_names():
    assert sorted(t.name for t in default_tools()) == sorted(
        [
            "run_command",
            "start_process",
            "read_process_output",
            "stop_process",
            "create_file",
            "read_file",
            "replace_in_file",
            "delete_file",
            "list_files",
            "ask",
            "complete",
        ]
    )
    assert [t.name for t in default_tools(include=["ask", "complete"], exclude=["ask"])] == ["complete"]
    with pytest.raises(UserError):
        default_tools(include=["browse"])


async def test_run_command_reports_exit_code_and_timeout(make_harness):
    async def handler(command: str, timeout: float) -> ExecResult:
        return ExecResult(exit_code=3, output="bad\n", timed_out=command == "slow")

    h = make_harness(sandbox=MemorySandbox(handler))
    reg = ToolRegistry(default_tools())
    assert (await reg.execute(h.ctx, "run_command", '{"command": "x"}', "native")).output == "[exit code 3]\nbad\n"
    assert (
        await reg.execute(h.ctx, "run_command", '{"command": "slow", "timeout_seconds": 5}', "native")
    ).output.startswith("[timed out]")


async def test_file_tools(harness, reg):
    ctx = harness.ctx

    async def run(name: str, **args):
        import orjson

        return await reg.execute(ctx, name, orjson.dumps(args).decode(), "native")

    assert (await run("create_file", path="src/a.txt", content="one\ntwo\nthree\n")).error is None
    assert (await run("read_file", path="src/a.txt")).output == "one\ntwo\nthree\n"
    assert (await run("read_file", path="src/a.txt", start_line=2, end_line=3)).output == "two\nthree\n"
    assert (await run("read_file", path="src/a.txt", start_line=9)).error == "retry"
    assert (await run("replace_in_file", path="src/a.txt", old="two", new="2")).error is None
    assert harness.sandbox.files["/workspace/src/a.txt"] == b"one\n2\nthree\n"
    missing = await run("replace_in_file", path="src/a.txt", old="zzz", new="")
    assert missing.error == "retry" and "does not occur" in missing.output
    await run("create_file", path="dup.txt", content="x x")
    assert "occurs 2 times" in (await run("replace_in_file", path="dup.txt", old="x", new="y")).output
    listing = (await run("list_files")).output
    assert listing == "dup.txt  (3 bytes)\nsrc/"
    assert (await run("list_files", path="src")).output == "src/a.txt  (12 bytes)"
    assert (await run("delete_file", path="dup.txt")).error is None
    gone = await run("read_file", path="dup.txt")
    assert gone.error == "tool_failed" and "FileNotFoundError" in gone.output
    outside = await run("create_file", path="../../etc/passwd", content="")
    assert outside.error == "tool_failed" and "outside the sandbox" in outside.output


async def test_process_tools_read_only_new_output(harness, reg):
    started = await reg.execute(harness.ctx, "start_process", '{"command": "serve"}', "native")
    pid = started.output.removeprefix("started process ")
    assert (
        await reg.execute(harness.ctx, "read_process_output", f'{{"process_id": "{pid}"}}', "native")
    ).output == "[running]\n$ serve\n"
    harness.sandbox.processes[pid]["output"] = "$ serve\nlistening\n"
    assert (
        await reg.execute(harness.ctx, "read_process_output", f'{{"process_id": "{pid}"}}', "native")
    ).output == "[running]\nlistening\n"
    assert (await reg.execute(harness.ctx, "stop_process", f'{{"process_id": "{pid}"}}', "native")).error is None
    assert harness.sandbox.processes[pid]["running"] is False
    unknown = await reg.execute(harness.ctx, "stop_process", '{"process_id": "nope"}', "native")
    assert unknown.error == "tool_failed"


async def test_huge_output_is_clipped_head_and_tail(make_harness):
    async def handler(command: str, timeout: float) -> ExecResult:
        return ExecResult(exit_code=0, output="H" + "x" * 200_000 + "T")

    h = make_harness(sandbox=MemorySandbox(handler))
    out = (await ToolRegistry(default_tools()).execute(h.ctx, "run_command", '{"command": "x"}', "native")).output
    assert len(out) < 51_000 and "H" in out[:20] and out.endswith("T") and "characters omitted" in out
