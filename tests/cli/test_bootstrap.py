"""`make test` from a fresh clone on a PEP 668 system Python with no uv: setup bootstraps uv into
.tools/ (never into the system Python), uv uses that Python (it downloads none), and the tests run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SYSTEM_PYTHON = Path("/usr/bin/python3")
CLEAN_PATH = "/usr/bin:/bin"


def _unavailable(reason: str) -> None:
    # CI runs on the Debian 12 machine this proves the setup on: there, a missing piece is a failure.
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def test_make_test_sets_up_from_a_fresh_clone_without_uv_on_a_pep668_python(tmp_path):
    if not SYSTEM_PYTHON.exists():
        _unavailable(f"{SYSTEM_PYTHON} is missing")
    info = subprocess.run([str(SYSTEM_PYTHON), "-c", "import sys, sysconfig; print(sys.version_info >= (3, 11)); "
                           "print(sysconfig.get_path('stdlib'))"], capture_output=True, text=True, check=True)
    new_enough, stdlib = info.stdout.split()
    if new_enough != "True":
        _unavailable(f"{SYSTEM_PYTHON} is older than 3.11")
    if not (Path(stdlib) / "EXTERNALLY-MANAGED").exists():
        _unavailable(f"{SYSTEM_PYTHON} is not marked EXTERNALLY-MANAGED (PEP 668)")
    if shutil.which("git") is None or shutil.which("make", path=CLEAN_PATH) is None:
        _unavailable("git and make are needed")
    assert shutil.which("uv", path=CLEAN_PATH) is None, "the premise: no uv on the clean PATH"

    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
    # The environment of a new user: /usr/bin first, no uv, no virtualenv, no pyenv.
    env = {k: v for k, v in os.environ.items()
           if k != "UV" and not k.startswith(("UV_", "VIRTUAL_ENV", "PYENV", "PYTHON", "CONDA"))}
    env["PATH"] = CLEAN_PATH
    result = subprocess.run(
        ["make", "test", "PYTEST_ARGS=tests/cli/test_cli_client.py::test_version -q -p no:cacheprovider"],
        cwd=clone, env=env, capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    sys.stdout.write(output[-3000:])
    assert result.returncode == 0, output[-3000:]
    local_uv = f"{clone}/.tools/uv/bin/uv"
    assert "setup: uv is not on PATH" in output
    assert f"{local_uv} sync --frozen" in output
    assert f"{local_uv} run --frozen pytest" in output
    assert "Using CPython 3.11" in output and "/usr/bin/python3" in output
    assert "1 passed" in output
    assert Path(os.path.realpath(clone / ".venv/bin/python")).parent == Path("/usr/bin")
    assert not (clone / ".venv/bin/uv").exists()
