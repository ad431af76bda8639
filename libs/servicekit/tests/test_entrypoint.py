"""A service's command line: `--help` lists its settings, `migrate` upgrades its tables and exits,
anything unknown is refused; and the database pooling mode is read from settings or the URL."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from pydantic_settings import SettingsConfigDict

from agentry.servicekit.db import resolve_pool_mode
from agentry.servicekit.entrypoint import Migrations, service_command, settings_env
from agentry.servicekit.settings import ServiceSettings


class DemoSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="AGENTRY_DEMO_", extra="ignore")


def test_settings_env_names_every_variable_read():
    env = settings_env(DemoSettings)
    assert env["AGENTRY_DEMO_DATABASE_URL"] == "database_url"
    assert env["AGENTRY_INTERNAL_TOKEN"] == "internal_token"  # shared, whatever the prefix
    assert env["AGENTRY_DATABASE_POOL_MODE"] == "database_pool_mode"
    assert "AGENTRY_DEMO_INTERNAL_TOKEN" not in env


def test_help_lists_settings_without_secrets(capsys):
    assert service_command(["--help"], DemoSettings, prog="demo") == 0
    out = capsys.readouterr().out
    assert "usage: demo" in out and "AGENTRY_DEMO_PORT" in out
    assert "agentry-dev-internal-token" not in out


def test_no_argument_serves_and_unknown_ones_are_refused(capsys):
    assert service_command([], DemoSettings) is None
    assert service_command(["serve", "--now"], DemoSettings) == 2
    assert "unexpected arguments" in capsys.readouterr().err


def test_migrate_brings_tables_to_head_and_exits(tmp_path, monkeypatch):
    migrations = Path(__import__("agentry.billing.main", fromlist=["x"]).__file__).parent / "migrations"
    db = tmp_path / "billing.db"
    monkeypatch.setenv("AGENTRY_DEMO_DATABASE_URL", f"sqlite+aiosqlite:///{db}")
    assert service_command(["migrate"], DemoSettings, migrations=Migrations(migrations, "alembic_version_billing")) == 0
    with sqlite3.connect(db) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "alembic_version_billing" in tables and "credit_ledger" in tables


@pytest.mark.parametrize(
    ("url", "configured", "mode"),
    [
        ("postgresql+asyncpg://u@db:5432/app", None, "session"),
        ("postgresql+asyncpg://u@pooler.supabase.com:6543/postgres", None, "transaction"),
        ("postgresql+asyncpg://u@pgbouncer:5432/app?pgbouncer=true", None, "transaction"),
        ("postgresql+asyncpg://u@pooler:6543/postgres", "session", "session"),
        ("postgresql+asyncpg://u@db:5432/app", "transaction", "transaction"),
        ("sqlite+aiosqlite:///./var/x.db", None, "session"),
    ],
)
def test_pool_mode_from_settings_or_url(url, configured, mode):
    resolved, got = resolve_pool_mode(url, configured)
    assert got == mode
    assert "pgbouncer=" not in resolved  # asyncpg would refuse the marker as a connect argument
