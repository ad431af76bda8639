"""The `agentry` command: `chat` against a running embedded stack, and its argument errors."""

from __future__ import annotations

import asyncio
import contextlib
import io

import pytest
from rich.console import Console
from typer.testing import CliRunner

from agentry.cli.chat import run_chat
from agentry.cli.devstack import start_dev_stack
from agentry.cli.main import app

from .conftest import TOOL_MARKER

pytestmark = pytest.mark.integration


async def test_chat_signs_in_starts_a_run_and_renders_the_stream(fake_llm, tmp_path):
    async with contextlib.AsyncExitStack() as stack:
        dev = await start_dev_stack(
            stack,
            data_dir=tmp_path,
            llm_api_base=fake_llm.base_url,
            ports={"auth": 0, "billing": 0, "sandbox": 0, "runner": 0, "gateway": 0},
        )
        out = io.StringIO()
        console = Console(file=out, width=200, color_system=None)

        def chat(prompt: str) -> int:
            return run_chat(
                url=dev.gateway_url,
                email="cli@example.com",
                password="a long password",
                prompt=prompt,
                thread_id=None,
                model="openai/it-script",
                console=console,
            )

        # The first call signs the user up; the second signs in to the existing account.
        assert await asyncio.to_thread(chat, "first") == 0
        assert await asyncio.to_thread(chat, "second") == 0
    text = out.getvalue()
    assert text.count("run finished: completed") == 2
    assert "Let me check the sandbox." in text
    assert TOOL_MARKER in text  # the tool's output, rendered in its panel
    assert "create_file" in text


def test_chat_reports_an_unreachable_gateway():
    out = io.StringIO()
    code = run_chat(
        url="http://127.0.0.1:9",
        email="a@b.c",
        password="x" * 10,
        prompt="hi",
        thread_id=None,
        model=None,
        console=Console(file=out, color_system=None),
    )
    assert code == 1
    assert out.getvalue().strip()


def test_serve_refuses_an_unknown_service():
    result = CliRunner().invoke(app, ["serve", "nonsense"])
    assert result.exit_code != 0
    assert "unknown service" in result.output
