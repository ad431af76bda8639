"""Billing's rules in plain Python: money in micro-USD, plans, and when a run may go on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .errors import InvalidBillingRequest

MICROS_PER_USD = 1_000_000
# No single model step costs a million dollars; the cap keeps a signed 64-bit balance from overflowing.
MAX_STEP_COST_MICROS = 1_000_000 * MICROS_PER_USD
# Ids are stored as VARCHAR(255); longer ones would fail in the database instead of as bad input.
MAX_ID_LENGTH = 255

EntryKind = Literal["grant", "monthly_allowance", "top_up", "usage", "refund", "expiration", "adjustment"]
ENTRY_KINDS: tuple[str, ...] = ("grant", "monthly_allowance", "top_up", "usage", "refund", "expiration", "adjustment")
# Ledger idempotency keys are stored as VARCHAR(512): a prefix plus an id of at most 255 characters.
MAX_KEY_LENGTH = 512

INSUFFICIENT_CREDITS = "insufficient_credits"
MODEL_NOT_ALLOWED = "model_not_allowed"


def usage_key(run_id: str, step: int) -> str:
    """The idempotency key of one billed step of a run (model call or sandbox interval)."""
    return f"usage:{run_id}:{step}"


def stripe_event_key(event_id: str) -> str:
    """The key of a ledger entry a Stripe event caused (at most one entry per event)."""
    return f"stripe-event:{event_id}"


def checkout_key(session_id: str) -> str:
    """The key of the credit a paid Checkout Session grants (a credit pack)."""
    return f"checkout:{session_id}"


def opening_key(account_id: str) -> str:
    """The key of an account's opening grant."""
    return f"open:{account_id}"


def allowance_key(account_id: str, period_start: int) -> str:
    """The key of a plan's monthly allowance for the period starting at `period_start` (unix s)."""
    return f"allowance:{account_id}:{period_start}"


@dataclass(frozen=True)
class RunDecision:
    """Whether an account may start a run now; `reason` is empty when it may."""

    allowed: bool
    balance_micros: int
    reason: str = ""
    message: str = ""
    plan_id: str = ""
    # The plan's cap on runs active at once (0 = none); the runner enforces it where runs live.
    max_concurrent_runs: int = 0


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
    key: str = ""
    source: str | None = None
    quantity: float = 0.0


@dataclass(frozen=True)
class Charge:
    """What recording a step did: the balance after it, and whether it was charged just now."""

    balance_micros: int
    charged: bool
    cost_micros: int = 0  # what this record charged just now (0 for a repeat)

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


@dataclass(frozen=True)
class LedgerWrite:
    """One entry to append. `key` is its idempotency key, unique per account: writing the same
    key for the same account again changes nothing (see usage_key, stripe_event_key, checkout_key,
    opening_key, allowance_key; operator grants use `grant:<uuid or caller key>`).

    `amount_micros` is signed: credits (grant, monthly_allowance, top_up, refund) are positive,
    usage and expiration negative, adjustment either.
    """

    account_id: str
    amount_micros: int
    kind: EntryKind
    key: str
    run_id: str | None = None
    step: int | None = None
    model: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    source: str | None = None  # "model" or "sandbox" for usage
    quantity: float = 0.0  # sandbox seconds for sandbox usage
    note: str = ""

    def __post_init__(self) -> None:
        require_account_id(self.account_id)
        if self.kind not in ENTRY_KINDS:
            raise InvalidBillingRequest(f"kind must be one of {', '.join(ENTRY_KINDS)}")
        if not self.key or len(self.key) > MAX_KEY_LENGTH:
            raise InvalidBillingRequest(f"idempotency key must be 1 to {MAX_KEY_LENGTH} characters")
        if abs(self.amount_micros) > MAX_STEP_COST_MICROS:
            raise InvalidBillingRequest("amount_micros is out of range")
        if self.kind in ("grant", "monthly_allowance", "top_up", "refund") and self.amount_micros < 0:
            raise InvalidBillingRequest(f"a {self.kind} must not be negative")
        if self.kind in ("usage", "expiration") and self.amount_micros > 0:
            raise InvalidBillingRequest(f"a {self.kind} must not be positive")


@dataclass(frozen=True)
class Posted:
    """What a LedgerWrite did: the balance after it, and whether it was applied just now
    (False: its key had been written before, nothing changed)."""

    balance_micros: int
    applied: bool


SUBSCRIPTION_STATUSES = (
    "free",
    "active",
    "trialing",
    "past_due",
    "unpaid",
    "canceled",
    "incomplete",
    "incomplete_expired",
    "paused",
)


@dataclass(frozen=True)
class Subscription:
    """An account's plan as the payments provider last said it.

    `event_created` is the Stripe event's `created` (unix seconds) of the last change applied;
    a change carrying an older one is ignored (out-of-order delivery). 0 = never set by an event.
    An account with no row is on the catalog's default (free) plan with status "free".
    """

    account_id: str
    plan_id: str
    status: str = "free"
    current_period_start: float | None = None
    current_period_end: float | None = None
    stripe_customer_id: str | None = None
    stripe_subscription_id: str | None = None
    cancel_at_period_end: bool = False
    event_created: int = 0
    updated_at: float = 0.0
