"""Setup on a PEP 668 system Python with no uv: scripts/bootstrap-uv.sh puts uv into .tools/ (never
into the system Python), and that uv uses the system Python (it downloads none)."""

from __future__ import annotations

import os
import shutil
import subprocess
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


def test_setup_bootstraps_uv_into_tools_without_touching_a_pep668_system_python(tmp_path):
    if not SYSTEM_PYTHON.exists():
        _unavailable(f"{SYSTEM_PYTHON} is missing")
    info = subprocess.run(
        [
            str(SYSTEM_PYTHON),
            "-c",
            "import sys, sysconfig; print(sys.version_info >= (3, 11)); print(sysconfig.get_path('stdlib'))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    new_enough, stdlib = info.stdout.split()
    if new_enough != "True":
        _unavailable(f"{SYSTEM_PYTHON} is older than 3.11")
    if not (Path(stdlib) / "EXTERNALLY-MANAGED").exists():
        _unavailable(f"{SYSTEM_PYTHON} is not marked EXTERNALLY-MANAGED (PEP 668)")
    if shutil.which("git") is None or shutil.which("make", path=CLEAN_PATH) is None:
        _unavailable("git and make are needed")
    assert shutil.which("uv", path=CLEAN_PATH) is None, "the premise: no uv on the clean PATH"

    # The full proof, `make test` from a fresh clone, is .ci/run itself: CI runs the whole suite that
    # way (a new user's PATH, with /usr/bin first and no uv). Here: the bootstrap step alone, from
    # a copy of the script in an empty directory, so it is quick (the wheel path: ~10 s).
    (tmp_path / "scripts").mkdir()
    shutil.copy(REPO / "scripts/bootstrap-uv.sh", tmp_path / "scripts/bootstrap-uv.sh")
    env = {
        k: v
        for k, v in os.environ.items()
        if k != "UV" and not k.startswith(("UV_", "VIRTUAL_ENV", "PYENV", "PYTHON", "CONDA"))
    }
    env["PATH"] = CLEAN_PATH
    result = subprocess.run(
        ["sh", str(tmp_path / "scripts/bootstrap-uv.sh")], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    local_uv = tmp_path / ".tools/uv/bin/uv"
    assert result.stdout.strip() == str(local_uv)
    assert "setup: uv is not on PATH" in result.stderr
    assert f"nothing is installed into {SYSTEM_PYTHON}" in result.stderr
    # The bootstrapped uv works and, downloading no Python, picks the system one.
    found = subprocess.run(
        [str(local_uv), "python", "find", "--no-project", ">=3.11"],
        env={**env, "UV_PYTHON_DOWNLOADS": "never"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert found.stdout.strip().startswith("/usr/bin/python3")
    # And the system Python did not change: no uv there.
    assert subprocess.run([str(SYSTEM_PYTHON), "-c", "import uv"], capture_output=True).returncode != 0
    # A second run reuses it.
    again = subprocess.run(
        ["sh", str(tmp_path / "scripts/bootstrap-uv.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert again.stdout.strip() == str(local_uv) and again.stderr == ""
