"""Billing's settings, read from AGENTRY_BILLING_* so they sit apart from other services'."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from agentry.servicekit.settings import ServiceSettings


class BillingSettings(ServiceSettings):
    """Where the ledger lives and the local plan's rules.

    `provider` picks the PaymentsProvider; only "local" (credits without a card) exists so far.
    """

    model_config = SettingsConfigDict(env_prefix="AGENTRY_BILLING_", extra="ignore")

    database_url: str = "sqlite+aiosqlite:///./var/billing.db"
    provider: Literal["local"] = "local"
    # 5 USD: enough for a new account to try a few runs before anyone sets up payments.
    initial_credit_micros: int = Field(default=5_000_000, ge=0)
    blocked_models: list[str] = []
