"""Plans and credit packs: what an operator sells, read from a TOML file (or the built-in default).

The file (path in AGENTRY_BILLING_PLANS_FILE; none = the built-in catalog below) looks like::

    default_plan = "free"          # the plan of an account with no subscription

    [[plans]]
    id = "free"
    name = "Free"
    price_usd = 0                   # per month
    monthly_credits_usd = 0         # granted each period (Stripe: on each paid invoice)
    models = ["*"]                  # fnmatch patterns of model names the plan may use
    max_concurrent_runs = 1         # 0 = no cap
    sandbox = { max_sandboxes = 1, cpu = 1, memory_mb = 1024, disk_gb = 5, max_seconds_per_month = 0 }
    rate_limits = { run_starts_per_minute = 10, requests_per_minute = 120 }
    # stripe_price_id = "price_..."  # optional: an existing Stripe Price; else found/created by lookup_key
    # lookup_key = "agentry_plan_free"  # default: agentry_plan_<id>

    [[credit_packs]]
    id = "credits_10"
    name = "10 USD of credits"
    price_usd = 10
    credits_usd = 10
    # stripe_price_id / lookup_key (default agentry_pack_<id>) as for plans

Amounts in the file are USD (decimals allowed); everything inside is integer micro-USD.
A bad file fails at start with the offending field named (pydantic's validation error).
"""

from __future__ import annotations

import fnmatch
import tomllib
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .domain import INSUFFICIENT_CREDITS, MICROS_PER_USD, MODEL_NOT_ALLOWED, RunDecision, may_continue

FREE_PLAN_ID = "free"


def usd_to_micros(amount: Decimal | int | float | str) -> int:
    """USD (as written by a person) to integer micro-USD, rounding half up to the micro."""
    return int((Decimal(str(amount)) * MICROS_PER_USD).to_integral_value(rounding="ROUND_HALF_UP"))


@dataclass(frozen=True)
class SandboxLimits:
    max_sandboxes: int = 1
    cpu: float = 1.0
    memory_mb: int = 1024
    disk_gb: int = 5
    max_seconds_per_month: int = 0  # 0 = no cap


@dataclass(frozen=True)
class RateLimits:
    run_starts_per_minute: int = 0  # 0 = the gateway's default
    requests_per_minute: int = 0


@dataclass(frozen=True)
class Plan:
    """A plan: price and allowance per month (micro-USD), models, concurrency, sandbox and rate limits."""

    id: str
    name: str
    price_micros: int = 0
    monthly_credits_micros: int = 0
    models: tuple[str, ...] = ("*",)
    max_concurrent_runs: int = 0
    sandbox: SandboxLimits = field(default_factory=SandboxLimits)
    rate_limits: RateLimits = field(default_factory=RateLimits)
    stripe_price_id: str | None = None
    lookup_key: str = ""

    def allows_model(self, model: str) -> bool:
        """Whether `model` matches one of the plan's patterns (fnmatch, case-sensitive)."""
        return any(fnmatch.fnmatchcase(model, pattern) for pattern in self.models)

    def decide(self, balance_micros: int, model: str) -> RunDecision:
        """May a run on `model` start with this balance? Concurrency is the runner's (see CheckRun).

        An empty `model` checks the balance only: the gateway asks before it knows which model the
        runner will pick; the runner asks again with the model it resolved."""
        if model and not self.allows_model(model):
            return RunDecision(
                allowed=False,
                balance_micros=balance_micros,
                reason=MODEL_NOT_ALLOWED,
                message=f"The model {model!r} is not available on the {self.name} plan.",
                **self._limits(),
            )
        if not may_continue(balance_micros):
            return RunDecision(
                allowed=False,
                balance_micros=balance_micros,
                reason=INSUFFICIENT_CREDITS,
                message="Your credit balance is used up; add credits or upgrade your plan to start new runs.",
                **self._limits(),
            )
        return RunDecision(allowed=True, balance_micros=balance_micros, **self._limits())

    def _limits(self) -> dict:
        return {"plan_id": self.id, "max_concurrent_runs": self.max_concurrent_runs}


@dataclass(frozen=True)
class CreditPack:
    """A one-time purchase of credits."""

    id: str
    name: str
    price_micros: int
    credits_micros: int
    stripe_price_id: str | None = None
    lookup_key: str = ""


@dataclass(frozen=True)
class Catalog:
    """Every plan and pack on offer; `default_plan_id` is the plan of an account without a subscription."""

    plans: tuple[Plan, ...]
    credit_packs: tuple[CreditPack, ...] = ()
    default_plan_id: str = FREE_PLAN_ID

    def __post_init__(self) -> None:
        object.__setattr__(self, "_plans", {p.id: p for p in self.plans})
        object.__setattr__(self, "_packs", {p.id: p for p in self.credit_packs})

    def plan(self, plan_id: str | None) -> Plan:
        """The plan by id; an unknown or empty id (a plan since removed from the file) is the default."""
        return self._plans.get(plan_id or "") or self._plans[self.default_plan_id]  # type: ignore[attr-defined]

    def find_plan(self, plan_id: str) -> Plan | None:
        return self._plans.get(plan_id)  # type: ignore[attr-defined]

    def find_pack(self, pack_id: str) -> CreditPack | None:
        return self._packs.get(pack_id)  # type: ignore[attr-defined]

    def plan_by_price(self, price_id: str) -> Plan | None:
        """The plan a Stripe Price id belongs to (after the Stripe adapter filled stripe_price_id)."""
        return next((p for p in self.plans if p.stripe_price_id == price_id), None)

    def pack_by_price(self, price_id: str) -> CreditPack | None:
        return next((p for p in self.credit_packs if p.stripe_price_id == price_id), None)

    @property
    def default_plan(self) -> Plan:
        return self._plans[self.default_plan_id]  # type: ignore[attr-defined]


# --- the file format, validated with pydantic so errors name the field ---------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _SandboxFile(_Strict):
    max_sandboxes: int = Field(default=1, ge=0)
    cpu: float = Field(default=1.0, gt=0)
    memory_mb: int = Field(default=1024, gt=0)
    disk_gb: int = Field(default=5, gt=0)
    max_seconds_per_month: int = Field(default=0, ge=0)


class _RateFile(_Strict):
    run_starts_per_minute: int = Field(default=0, ge=0)
    requests_per_minute: int = Field(default=0, ge=0)


_ID = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")


class _PlanFile(_Strict):
    id: str = _ID
    name: str = Field(min_length=1)
    price_usd: Decimal = Field(default=Decimal(0), ge=0)
    monthly_credits_usd: Decimal = Field(default=Decimal(0), ge=0)
    models: list[str] = Field(default_factory=lambda: ["*"], min_length=1)
    max_concurrent_runs: int = Field(default=0, ge=0)
    sandbox: _SandboxFile = Field(default_factory=_SandboxFile)
    rate_limits: _RateFile = Field(default_factory=_RateFile)
    stripe_price_id: str | None = None
    lookup_key: str | None = None


class _PackFile(_Strict):
    id: str = _ID
    name: str = Field(min_length=1)
    price_usd: Decimal = Field(gt=0)
    credits_usd: Decimal = Field(gt=0)
    stripe_price_id: str | None = None
    lookup_key: str | None = None


class _CatalogFile(_Strict):
    default_plan: str = FREE_PLAN_ID
    plans: list[_PlanFile] = Field(min_length=1)
    credit_packs: list[_PackFile] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> _CatalogFile:
        for kind, items in (("plans", self.plans), ("credit_packs", self.credit_packs)):
            ids = [i.id for i in items]
            if len(ids) != len(set(ids)):
                raise ValueError(f"{kind}: ids must be unique")
        if self.default_plan not in {p.id for p in self.plans}:
            raise ValueError(f"default_plan: {self.default_plan!r} is not one of the plans")
        return self


def catalog_from_dict(data: dict) -> Catalog:
    """A Catalog from the parsed file; raises pydantic.ValidationError naming the bad field."""
    parsed = _CatalogFile.model_validate(data)
    plans = tuple(
        Plan(
            id=p.id,
            name=p.name,
            price_micros=usd_to_micros(p.price_usd),
            monthly_credits_micros=usd_to_micros(p.monthly_credits_usd),
            models=tuple(p.models),
            max_concurrent_runs=p.max_concurrent_runs,
            sandbox=SandboxLimits(**p.sandbox.model_dump()),
            rate_limits=RateLimits(**p.rate_limits.model_dump()),
            stripe_price_id=p.stripe_price_id,
            lookup_key=p.lookup_key or f"agentry_plan_{p.id}",
        )
        for p in parsed.plans
    )
    packs = tuple(
        CreditPack(
            id=p.id,
            name=p.name,
            price_micros=usd_to_micros(p.price_usd),
            credits_micros=usd_to_micros(p.credits_usd),
            stripe_price_id=p.stripe_price_id,
            lookup_key=p.lookup_key or f"agentry_pack_{p.id}",
        )
        for p in parsed.credit_packs
    )
    return Catalog(plans=plans, credit_packs=packs, default_plan_id=parsed.default_plan)


# The built-in plans put no cap of their own on concurrent runs (0): a self-hosted install's
# accounts are limited by the runner's AGENTRY_RUNNER_MAX_ACTIVE_RUNS_PER_ACCOUNT (100) until the
# operator's plans file sets one per plan.
DEFAULT_CATALOG_TOML = """
default_plan = "free"

[[plans]]
id = "free"
name = "Free"
price_usd = 0
monthly_credits_usd = 0
models = ["*"]
max_concurrent_runs = 0
sandbox = { max_sandboxes = 1, cpu = 1, memory_mb = 1024, disk_gb = 5 }

[[plans]]
id = "pro"
name = "Pro"
price_usd = 20
monthly_credits_usd = 20
models = ["*"]
max_concurrent_runs = 0
sandbox = { max_sandboxes = 5, cpu = 2, memory_mb = 4096, disk_gb = 20 }

[[credit_packs]]
id = "credits_10"
name = "10 USD of credits"
price_usd = 10
credits_usd = 10
"""


def load_catalog(path: str | Path | None) -> Catalog:
    """The catalog from the TOML file at `path`, or the built-in one (free + pro + one pack) when None/empty."""
    if not path:
        return catalog_from_dict(tomllib.loads(DEFAULT_CATALOG_TOML))
    with open(path, "rb") as f:
        return catalog_from_dict(tomllib.load(f))
