"""Settings come from AGENTRY_SANDBOX_*; isolation falls back only when asked to choose."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from agentry.sandbox.adapters import isolation as isolation_module
from agentry.sandbox.adapters.isolation import choose_isolation
from agentry.sandbox.config import SandboxSettings


def test_settings_read_their_own_prefix(monkeypatch) -> None:
    monkeypatch.setenv("AGENTRY_SANDBOX_ROOT_DIR", "/srv/sandboxes")
    monkeypatch.setenv("AGENTRY_SANDBOX_ISOLATION", "none")
    monkeypatch.setenv("AGENTRY_SANDBOX_PORT", "7005")
    monkeypatch.setenv("AGENTRY_SANDBOX_MAX_OUTPUT_BYTES", "1234")
    settings = SandboxSettings()
    assert settings.root_dir == Path("/srv/sandboxes")
    assert settings.isolation == "none"
    assert settings.port == 7005
    assert settings.max_output_bytes == 1234


def test_default_timeout_may_not_exceed_the_maximum() -> None:
    with pytest.raises(ValidationError):
        SandboxSettings(default_exec_timeout_seconds=100, max_exec_timeout_seconds=10)


def test_choose_isolation_without_bwrap(monkeypatch) -> None:
    monkeypatch.setattr(isolation_module.shutil, "which", lambda name: None)
    assert choose_isolation("auto") == ("none", "")
    assert choose_isolation("none") == ("none", "")
    with pytest.raises(RuntimeError, match="bwrap is not installed"):
        choose_isolation("bwrap")


def test_daytona_is_chosen_with_its_own_variables(monkeypatch) -> None:
    monkeypatch.setenv("AGENTRY_SANDBOX_PROVIDER", "daytona")
    with pytest.raises(ValidationError, match="DAYTONA_API_KEY"):
        SandboxSettings()
    monkeypatch.setenv("DAYTONA_API_KEY", "dtn_secret")
    monkeypatch.setenv("DAYTONA_API_URL", "http://127.0.0.1:9999/api")
    monkeypatch.setenv("DAYTONA_TARGET", "eu")
    settings = SandboxSettings()
    assert (settings.provider, settings.daytona_api_url, settings.daytona_target) == (
        "daytona",
        "http://127.0.0.1:9999/api",
        "eu",
    )
    assert "dtn_secret" not in repr(settings)


def test_lifecycle_and_limit_settings(monkeypatch) -> None:
    monkeypatch.setenv("AGENTRY_SANDBOX_AUTO_STOP_MINUTES", "5")
    monkeypatch.setenv("AGENTRY_SANDBOX_AUTO_ARCHIVE_MINUTES", "0")
    monkeypatch.setenv("AGENTRY_SANDBOX_MAX_PROCESSES", "64")
    monkeypatch.setenv("AGENTRY_SANDBOX_ALLOW_UNISOLATED", "true")
    settings = SandboxSettings()
    assert (settings.auto_stop_minutes, settings.auto_archive_minutes, settings.max_processes) == (5, 0, 64)
    assert settings.allow_unisolated is True
    assert SandboxSettings(allow_unisolated=False).allow_unisolated is False
