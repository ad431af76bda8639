"""The two things billing depends on, in its own words: where credit is kept and where plans come from."""

from __future__ import annotations

from typing import Protocol

from .domain import Charge, EntryKind, LedgerEntry, Plan, Usage


class CreditLedger(Protocol):
    """Balances and the append-only entries that explain them.

    Every change to a balance is a ledger entry written in the same transaction, so the sum of
    an account's entries always equals its balance.
    """

    async def open_account(self, account_id: str, opening_grant_micros: int) -> int:
        """The account's balance, opening it with one grant if it is new.

        Concurrent first calls open one account with one grant.
        """
        ...

    async def balance(self, account_id: str) -> int | None:
        """The balance, or None when the account has never been opened."""
        ...

    async def charge(self, usage: Usage) -> Charge:
        """Debits a step once per (run_id, step); a repeat changes nothing and says so.

        The account must be open.
        """
        ...

    async def entries(self, account_id: str) -> list[LedgerEntry]:
        """The account's entries, oldest first."""
        ...

    async def credit(self, account_id: str, amount_micros: int, *, kind: EntryKind) -> int:
        """Adds (or, for a negative adjustment, removes) credit; returns the new balance.

        The account must be open. This is what a top-up from a card provider will call.
        """
        ...


class PaymentsProvider(Protocol):
    """Where an account's plan comes from: the local provider (no card) now, Stripe later."""

    async def plan_for(self, account_id: str) -> Plan:
        ...
