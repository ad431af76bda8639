"""What each image's build does, without a container engine: the Dockerfile's own `uv sync` line
for the target, into a fresh virtualenv (so a service missing a dependency it only gets through
another package fails here), then the image's ENTRYPOINT with `--help`, as a non-root user, with
nothing but that virtualenv on its path and its working directory read-only."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from .manifests import ROOT, dockerfile_targets

BUILD_STAGE_OF = {
    "gateway": "build-gateway",
    "auth": "build-auth",
    "billing": "build-billing",
    "sandbox": "build-sandbox",
    "runner-api": "build-runner",
    "runner-worker": "build-runner",
    "fake-llm": "build-fake-llm",
}


def sync_command(stage: str) -> list[str]:
    text = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())  # continued lines joined
    match = re.search(rf"FROM build AS {re.escape(stage)}\nRUN (?:--mount=\S+ )*(uv sync [^\n]+)", text)
    assert match, f"no uv sync line in stage {stage}"
    env = dict(re.findall(r'(\w+)="([^"]*)"', "\n".join(re.findall(r"^ENV (.+)$", text, re.MULTILINE))))
    return re.sub(r"\$(\w+)", lambda m: env[m.group(1)], match.group(1)).split()


def without_rebuild_flags(command: list[str]) -> list[str]:
    out = []
    for i, word in enumerate(command):
        if word == "--reinstall-package" or (i and command[i - 1] == "--reinstall-package"):
            continue
        out.append(word)
    return out


@pytest.fixture(scope="module")
def uv():
    """uv, with its cache's builds of every workspace package fresh: what the Dockerfile's
    --reinstall-package flags do in each stage, done once here for all the targets."""
    # `uv run` names itself in UV; a uv bootstrapped into .tools/ (make setup) is not on PATH.
    path = os.environ.get("UV") or shutil.which("uv")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("uv is not installed (UV unset and no uv on PATH)")
        pytest.skip("uv is not installed")
    command = sync_command("build-gateway")
    rebuild = [
        w
        for i, w in enumerate(command)
        if w == "--reinstall-package" or (i and command[i - 1] == "--reinstall-package")
    ]
    assert rebuild, "the Dockerfile rebuilds the workspace packages"
    with tempfile.TemporaryDirectory(prefix="agentry-image-") as scratch:
        done = subprocess.run(
            [path, "sync", "--frozen", "--no-dev", "--no-editable", "--all-packages", "--quiet", *rebuild],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
            env={
                **os.environ,
                "UV_PROJECT_ENVIRONMENT": f"{scratch}/venv",
                "UV_PYTHON": sys.executable,
                "UV_PYTHON_DOWNLOADS": "never",
            },
        )
    assert done.returncode == 0, done.stderr[-3000:]
    return path


@pytest.mark.parametrize("target", ["gateway", "auth", "billing", "sandbox", "runner-worker", "fake-llm"])
def test_target_installs_from_the_lockfile_and_starts_with_help_as_non_root(target, uv):
    # As root, the non-root user must reach the interpreter: a system Python (the image's is
    # /usr/local/bin/python), in a directory under /tmp rather than pytest's private one.
    as_nobody = os.geteuid() == 0 and Path("/usr/bin/python3.11").exists()
    tmp_path = Path(tempfile.mkdtemp(prefix="agentry-image-"))
    try:
        _build_and_start(uv, target, tmp_path, "/usr/bin/python3.11" if as_nobody else sys.executable, as_nobody)
    finally:
        shutil.rmtree(tmp_path, ignore_errors=True)


def _build_and_start(uv: str, target: str, tmp_path: Path, python: str, as_nobody: bool) -> None:
    venv = tmp_path / "venv"
    command = without_rebuild_flags(sync_command(BUILD_STAGE_OF[target]))
    assert command[:4] == ["uv", "sync", "--frozen", "--no-dev"]
    env = {**os.environ, "UV_PROJECT_ENVIRONMENT": str(venv), "UV_PYTHON": python, "UV_PYTHON_DOWNLOADS": "never"}
    done = subprocess.run([uv, *command[1:], "--quiet"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    entrypoint = dockerfile_targets()[target].entrypoint
    workdir = tmp_path / "ro"
    workdir.mkdir()
    argv = [str(venv / "bin" / entrypoint[0]), *entrypoint[1:], "--help"]
    if as_nobody:  # as the image: an unprivileged user that cannot write where it runs
        tmp_path.chmod(0o755)
        argv = [shutil.which("runuser") or "/usr/sbin/runuser", "-u", "nobody", "--", *argv]
    workdir.chmod(0o555)
    run_env = {
        "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
        "HOME": str(workdir),
        "PYTHONDONTWRITEBYTECODE": "1",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    }
    started = subprocess.run(argv, cwd=workdir, env=run_env, capture_output=True, text=True, timeout=120)
    assert started.returncode == 0, started.stderr[-3000:]
    assert "usage:" in started.stdout
