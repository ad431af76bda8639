"""The local payments provider: every account on one plan from settings, credits without a card."""

from __future__ import annotations

from collections.abc import Iterable

from ..domain import Plan


class LocalPaymentsProvider:
    """Gives every account the same plan; used by `agentry dev`, tests and card-less installs."""

    def __init__(self, *, opening_grant_micros: int, blocked_models: Iterable[str] = ()) -> None:
        self._plan = Plan(
            name="local",
            opening_grant_micros=opening_grant_micros,
            blocked_models=frozenset(blocked_models),
        )

    async def plan_for(self, account_id: str) -> Plan:
        return self._plan
