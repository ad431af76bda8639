"""Billing's rules in plain Python: money in micro-USD, plans, and when a run may go on."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from .errors import InvalidBillingRequest

MICROS_PER_USD = 1_000_000
# No single model step costs a million dollars; the cap keeps a signed 64-bit balance from overflowing.
MAX_STEP_COST_MICROS = 1_000_000 * MICROS_PER_USD
# Ids are stored as VARCHAR(255); longer ones would fail in the database instead of as bad input.
MAX_ID_LENGTH = 255

EntryKind = Literal["grant", "usage", "adjustment"]

INSUFFICIENT_CREDITS = "insufficient_credits"
MODEL_NOT_ALLOWED = "model_not_allowed"


@dataclass(frozen=True)
class RunDecision:
    """Whether an account may start a run now; `reason` is empty when it may."""

    allowed: bool
    balance_micros: int
    reason: str = ""
    message: str = ""


@dataclass(frozen=True)
class Plan:
    """What an account gets and may use. The local provider gives everyone the same plan."""

    name: str
    opening_grant_micros: int
    blocked_models: frozenset[str] = field(default_factory=frozenset)

    def decide(self, balance_micros: int, model: str) -> RunDecision:
        if model in self.blocked_models:
            return RunDecision(
                allowed=False,
                balance_micros=balance_micros,
                reason=MODEL_NOT_ALLOWED,
                message=f"The model {model!r} is not available on the {self.name} plan.",
            )
        if not may_continue(balance_micros):
            return RunDecision(
                allowed=False,
                balance_micros=balance_micros,
                reason=INSUFFICIENT_CREDITS,
                message="Your credit balance is used up; add credits to start new runs.",
            )
        return RunDecision(allowed=True, balance_micros=balance_micros)


def may_continue(balance_micros: int) -> bool:
    """A run goes on only while credit is left; the step that crosses zero is still charged."""
    return balance_micros > 0


@dataclass(frozen=True)
class Usage:
    """One step of a run as billed; (run_id, step) identifies it so repeats charge nothing."""

    account_id: str
    run_id: str
    step: int
    model: str
    prompt_tokens: int
    completion_tokens: int
    cost_micros: int

    def __post_init__(self) -> None:
        require_account_id(self.account_id)
        _require_id("run_id", self.run_id)
        if len(self.model) > MAX_ID_LENGTH:
            raise InvalidBillingRequest(f"model must be at most {MAX_ID_LENGTH} characters")
        if self.step < 0:
            raise InvalidBillingRequest("step must not be negative")
        _require_non_negative(
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            cost_micros=self.cost_micros,
        )
        if self.cost_micros > MAX_STEP_COST_MICROS:
            raise InvalidBillingRequest("cost_micros is larger than any single step can cost")


@dataclass(frozen=True)
class LedgerEntry:
    """One change to a balance, as the ledger keeps it; usage is a negative amount."""

    entry_id: str
    account_id: str
    amount_micros: int
    kind: EntryKind
    created_at: float
    run_id: str | None = None
    step: int | None = None
    model: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(frozen=True)
class Charge:
    """What recording a step did: the balance after it, and whether it was charged just now."""

    balance_micros: int
    charged: bool

    @property
    def may_continue(self) -> bool:
        return may_continue(self.balance_micros)


def require_account_id(account_id: str) -> None:
    _require_id("account_id", account_id)


def _require_id(name: str, value: str) -> None:
    if not value:
        raise InvalidBillingRequest(f"{name} is required")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidBillingRequest(f"{name} must be at most {MAX_ID_LENGTH} characters")


def _require_non_negative(**values: int) -> None:
    negative = [name for name, value in values.items() if value < 0]
    if negative:
        raise InvalidBillingRequest(f"{', '.join(negative)} must not be negative")
