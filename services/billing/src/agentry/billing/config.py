"""Billing's settings, read from AGENTRY_BILLING_* so they sit apart from other services'.

The Stripe keys are read under Stripe's own names (STRIPE_SECRET_KEY, STRIPE_WEBHOOK_SECRET) as
well as AGENTRY_BILLING_STRIPE_SECRET_KEY / AGENTRY_BILLING_STRIPE_WEBHOOK_SECRET.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from pydantic import AliasChoices, BaseModel, Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from agentry.servicekit.settings import ServiceSettings


class ModelPrice(BaseModel):
    """USD per million tokens, for a model LiteLLM does not price (or to override its price)."""

    input_per_million_usd: Decimal = Field(ge=0)
    output_per_million_usd: Decimal = Field(ge=0)


class BillingSettings(ServiceSettings):
    """Where the ledger lives, where plans come from, how usage is priced, which payments provider.

    `provider`: "local" (credits by operator grant, no card) or "stripe" (needs stripe_secret_key
    and stripe_webhook_secret; stripe_api_base points the client at another server).
    """

    model_config = SettingsConfigDict(env_prefix="AGENTRY_BILLING_", extra="ignore")

    database_url: str = "sqlite+aiosqlite:///./var/billing.db"
    provider: Literal["local", "stripe"] = "local"
    # TOML file of plans and credit packs (format in agentry.billing.plans); empty = built-in catalog.
    plans_file: str = ""
    # 5 USD: enough for a new account to try a few runs before anyone sets up payments.
    initial_credit_micros: int = Field(default=5_000_000, ge=0)
    # Models refused on every plan, whatever the plan's patterns say (kept from before plans existed).
    blocked_models: list[str] = []

    # Metering. The runner prices each model call from LiteLLM's tables; billing adds the markup.
    markup_percent: Decimal = Field(default=Decimal(0), ge=0, le=1000)
    # Prices for models LiteLLM does not know, or to override its price: {"model": {...}}.
    model_prices: dict[str, ModelPrice] = {}
    # A model call with no known price: "refuse" (the run ends: billing answers may_continue=false)
    # or "charge_default" (charged at unknown_model_price). Never free.
    unknown_model_policy: Literal["refuse", "charge_default"] = "charge_default"
    unknown_model_price: ModelPrice = ModelPrice(input_per_million_usd=Decimal(10), output_per_million_usd=Decimal(30))
    # Sandbox time, per second a started sandbox is up for a run (USD per hour here).
    sandbox_usd_per_hour: Decimal = Field(default=Decimal("0.05"), ge=0)

    # CheckRun answers from memory; entries older than this are re-read (other replicas' writes).
    cache_ttl_seconds: float = Field(default=5.0, ge=0)

    # Stripe (provider = "stripe").
    stripe_secret_key: SecretStr = Field(
        default=SecretStr(""), validation_alias=AliasChoices("STRIPE_SECRET_KEY", "AGENTRY_BILLING_STRIPE_SECRET_KEY")
    )
    stripe_webhook_secret: SecretStr = Field(
        default=SecretStr(""),
        validation_alias=AliasChoices("STRIPE_WEBHOOK_SECRET", "AGENTRY_BILLING_STRIPE_WEBHOOK_SECRET"),
    )
    # Another base URL for the Stripe API (a Stripe-compatible server); empty = api.stripe.com.
    stripe_api_base: str = ""
    # Where Checkout/portal send the user back when the request names no URL.
    public_url: str = "http://localhost:8000"

    @model_validator(mode="after")
    def _stripe_needs_keys(self) -> BillingSettings:
        if self.provider == "stripe":
            missing = [
                name
                for name, value in (
                    ("STRIPE_SECRET_KEY", self.stripe_secret_key),
                    ("STRIPE_WEBHOOK_SECRET", self.stripe_webhook_secret),
                )
                if not value.get_secret_value()
            ]
            if missing:
                raise ValueError(f"AGENTRY_BILLING_PROVIDER=stripe needs {', '.join(missing)}")
        return self
