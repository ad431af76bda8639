"""The fake model server in a process of its own, for load tests and benchmarks.

A test that drives hundreds of streams keeps its own event loop (and GIL) busy; a model served
from a thread of that process would make every run wait on the test itself.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import orjson


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class FakeLLMProcess:
    """`python -m agentry.fakellm` on a free loopback port with `scripts` (model name -> the JSON
    form of a Script: a list of turns, or {"turns", "ttft_seconds", "tokens_per_second"}).
    `base_url` is the OpenAI-compatible base (…/v1). A context manager; `stop()` ends it."""

    def __init__(
        self,
        scripts: Mapping[str, Any],
        *,
        ttft_seconds: float = 0.05,
        tokens_per_second: float | None = None,
        data_dir: Path | None = None,
        start_timeout: float = 30.0,
        strict: bool = False,
    ) -> None:
        self._dir = data_dir or Path(tempfile.mkdtemp(prefix="fakellm-"))
        self._dir.mkdir(parents=True, exist_ok=True)
        script_file = self._dir / "scripts.json"
        script_file.write_bytes(orjson.dumps(dict(scripts)))
        self.port = _free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        argv = [
            sys.executable,
            "-m",
            "agentry.fakellm",
            "--port",
            str(self.port),
            "--scripts",
            str(script_file),
            "--ttft",
            str(ttft_seconds),
            "--log-level",
            "warning",
        ]
        if tokens_per_second is not None:
            argv += ["--tps", str(tokens_per_second)]
        if strict:
            argv.append("--strict")
        self._log = open(self._dir / "fakellm.log", "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self._wait_ready(start_timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the fake LLM exited ({self.proc.returncode}); see {self._dir / 'fakellm.log'}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"the fake LLM did not start within {timeout:.0f}s")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    def __enter__(self) -> FakeLLMProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
