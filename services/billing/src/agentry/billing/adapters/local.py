"""The local payments provider: no card payments; credit comes from `agentry billing grant`."""

from __future__ import annotations

from ..errors import PaymentsNotConfigured
from ..ports import CheckoutSession, WebhookOutcome

_MESSAGE = "card payments are not configured on this installation (AGENTRY_BILLING_PROVIDER=local)"


class LocalPaymentsProvider:
    """Used by `agentry dev`, tests and card-less installs: plans and the ledger work the same,
    and every card-payment call is PaymentsNotConfigured (gRPC FAILED_PRECONDITION)."""

    name = "local"

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def checkout(
        self,
        account_id: str,
        *,
        plan_id: str | None,
        credit_pack_id: str | None,
        success_url: str | None,
        cancel_url: str | None,
    ) -> CheckoutSession:
        raise PaymentsNotConfigured(_MESSAGE)

    async def portal(self, account_id: str, *, return_url: str | None) -> str:
        raise PaymentsNotConfigured(_MESSAGE)

    async def handle_webhook(self, payload: bytes, signature: str) -> WebhookOutcome:
        raise PaymentsNotConfigured(_MESSAGE)
