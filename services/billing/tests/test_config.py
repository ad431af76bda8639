"""Billing's settings come from AGENTRY_BILLING_* with working defaults for `agentry dev`."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from agentry.billing import BillingSettings


def test_defaults(monkeypatch):
    for name in ("DATABASE_URL", "INITIAL_CREDIT_MICROS", "BLOCKED_MODELS", "PROVIDER"):
        monkeypatch.delenv(f"AGENTRY_BILLING_{name}", raising=False)
    settings = BillingSettings()
    assert settings.database_url == "sqlite+aiosqlite:///./var/billing.db"
    assert settings.initial_credit_micros == 5_000_000
    assert settings.blocked_models == []
    assert settings.provider == "local"


def test_reads_its_own_prefix(monkeypatch):
    monkeypatch.setenv("AGENTRY_BILLING_INITIAL_CREDIT_MICROS", "42")
    monkeypatch.setenv("AGENTRY_BILLING_BLOCKED_MODELS", '["gpt-huge", "o-max"]')
    monkeypatch.setenv("AGENTRY_BILLING_DATABASE_URL", "postgresql+asyncpg://db/billing")
    settings = BillingSettings()
    assert (settings.initial_credit_micros, settings.blocked_models) == (42, ["gpt-huge", "o-max"])
    assert settings.database_url == "postgresql+asyncpg://db/billing"


@pytest.mark.parametrize(("name", "value"), [("PROVIDER", "stripe"), ("INITIAL_CREDIT_MICROS", "-1")])
def test_refuses_what_it_cannot_do(monkeypatch, name, value):
    monkeypatch.setenv(f"AGENTRY_BILLING_{name}", value)
    with pytest.raises(ValidationError):
        BillingSettings()
