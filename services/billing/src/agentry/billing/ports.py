"""What billing depends on, in its own words: a store for the ledger and subscriptions (written
in units of work), and a payments provider (local or Stripe)."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol

from .domain import Charge, EntryKind, LedgerEntry, LedgerWrite, Posted, Subscription, Usage


class BillingTx(Protocol):
    """One database transaction over the ledger, the subscriptions and the processed events.

    Everything done through one BillingTx commits together or not at all. Get one from
    `BillingService.transaction()` (which also refreshes its in-memory cache for the accounts
    touched once the transaction has committed) — not from the store directly.
    """

    touched: set[str]  # accounts whose balance or subscription this transaction changed

    async def post(self, write: LedgerWrite) -> Posted:
        """Appends `write` once per `write.key` and moves the balance by its amount atomically.

        Opens the account (balance 0) if it has none yet. A key written before changes nothing
        and answers applied=False with the current balance.
        """
        ...

    async def balance(self, account_id: str) -> int | None: ...

    async def record_event(self, event_id: str, event_type: str, created: int) -> bool:
        """Marks a provider event processed; False if it had been (then apply nothing).

        Concurrent deliveries of one event: the second waits for the first's commit, then gets False.
        """
        ...

    async def subscription(self, account_id: str) -> Subscription | None: ...

    async def upsert_subscription(self, sub: Subscription) -> bool:
        """Stores `sub` unless the stored row has a newer `event_created` (out-of-order event).

        Equal `event_created` applies (Stripe timestamps are whole seconds). True if stored.
        """
        ...

    async def downgrade_to_free(self, account_id: str, *, free_plan_id: str, status: str, event_created: int) -> bool:
        """Puts the account on `free_plan_id` with `status` (e.g. "canceled", "past_due"),
        clearing the subscription id and period but keeping the customer id, unless newer
        state is stored. True if applied."""
        ...

    async def set_customer(self, account_id: str, customer_id: str) -> None:
        """Remembers the account's Stripe customer (creating a free-plan row if none)."""
        ...

    async def account_for_customer(self, customer_id: str) -> str | None: ...


class BillingStore(Protocol):
    """Where the ledger and subscriptions are kept (SqlBillingStore on SQLite or PostgreSQL)."""

    def transaction(self) -> AbstractAsyncContextManager[BillingTx]: ...

    async def post_now(self, write: LedgerWrite) -> Posted:
        """`BillingTx.post` committed on its own (the caller refreshes its cache itself)."""
        ...

    async def balance(self, account_id: str) -> int | None: ...

    async def subscription(self, account_id: str) -> Subscription | None: ...

    async def snapshot(self, account_id: str) -> tuple[int | None, Subscription | None]:
        """Balance (None: never opened) and subscription, read together."""
        ...

    async def entries(self, account_id: str) -> list[LedgerEntry]:
        """The account's entries, oldest first."""
        ...

    async def usage(
        self, account_id: str, *, group_by: str, cursor: str, limit: int, since: float, until: float
    ) -> tuple[list[dict], str]:
        """Usage rows grouped by "day" (UTC), "model" or "run", newest first, and the next cursor."""
        ...

    async def stripe_customer(self, account_id: str) -> str | None: ...


class CreditLedger(Protocol):
    """The ledger as it was before plans (kept for the existing contract tests)."""

    async def open_account(self, account_id: str, opening_grant_micros: int) -> int: ...
    async def balance(self, account_id: str) -> int | None: ...
    async def charge(self, usage: Usage) -> Charge: ...
    async def entries(self, account_id: str) -> list[LedgerEntry]: ...
    async def credit(self, account_id: str, amount_micros: int, *, kind: EntryKind) -> int: ...


@dataclass(frozen=True)
class CheckoutSession:
    session_id: str
    url: str


@dataclass(frozen=True)
class WebhookOutcome:
    event_id: str
    event_type: str
    applied: bool


class PaymentsProvider(Protocol):
    """Card payments: LocalPaymentsProvider (none: every call is PaymentsNotConfigured) or Stripe.

    Built in main after the BillingService, which it gets for `transaction()` and the catalog.
    """

    name: str

    async def start(self) -> None:
        """Stripe: finds or creates the Products/Prices of the catalog by lookup_key, idempotently."""
        ...

    async def close(self) -> None: ...

    async def checkout(
        self,
        account_id: str,
        *,
        plan_id: str | None,
        credit_pack_id: str | None,
        success_url: str | None,
        cancel_url: str | None,
    ) -> CheckoutSession: ...

    async def portal(self, account_id: str, *, return_url: str | None) -> str: ...

    async def handle_webhook(self, payload: bytes, signature: str) -> WebhookOutcome:
        """Verifies the signature on the raw body (InvalidSignature → 400) and applies the event
        in ONE BillingService.transaction() together with tx.record_event(...)."""
        ...
