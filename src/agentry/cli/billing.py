"""`agentry billing grant ACCOUNT AMOUNT`: operator credit for the local payments provider.

It calls the billing service's Grant RPC directly, authenticated like every internal call: with
AGENTRY_INTERNAL_TOKEN (and the mTLS files when AGENTRY_TLS_* are set), so only someone holding
the cluster's service credential can grant credit. AMOUNT is USD ("5", "2.50").
"""

from __future__ import annotations

import asyncio
from decimal import Decimal, InvalidOperation

import grpc
import typer

from agentry.api.billing.v1 import billing_pb2 as pb
from agentry.api.billing.v1 import billing_pb2_grpc

MAX_GRANT_USD = Decimal(1_000_000)


def parse_usd(amount: str) -> int:
    """USD as typed (at most 6 decimals, above 0, at most 1,000,000) to micro-USD; BadParameter otherwise."""
    try:
        value = Decimal(amount.strip())
    except InvalidOperation:
        raise typer.BadParameter(f"{amount!r} is not a number of USD (for example 5 or 2.50)") from None
    if not value.is_finite() or value <= 0 or value > MAX_GRANT_USD:
        raise typer.BadParameter(f"must be more than 0 and at most {MAX_GRANT_USD} USD")
    micros = value * 1_000_000
    if micros != micros.to_integral_value():
        raise typer.BadParameter("at most 6 decimal places (1 micro-USD)")
    return int(micros)


async def grant(target: str, account_id: str, amount_micros: int, *, key: str, note: str) -> pb.GrantResponse:
    from agentry.billing.config import BillingSettings
    from agentry.servicekit import open_channel

    settings = BillingSettings()
    async with open_channel(target, settings.internal_token.get_secret_value(), tls=settings.tls()) as channel:
        stub = billing_pb2_grpc.BillingServiceStub(channel)
        return await stub.Grant(
            pb.GrantRequest(
                account_id=account_id, amount_micros=amount_micros, idempotency_key=key, note=note, kind="grant"
            )
        )


def grant_command(account: str, amount: str, target: str, key: str, note: str) -> tuple[int, str]:
    """Runs the grant; (exit code, the line to print)."""
    micros = parse_usd(amount)
    try:
        reply = asyncio.run(grant(target, account, micros, key=key, note=note))
    except grpc.aio.AioRpcError as exc:
        if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            return 1, f"billing is not reachable at {target} (set --target or AGENTRY_BILLING_TARGET)"
        if exc.code() is grpc.StatusCode.UNAUTHENTICATED:
            return 1, "billing refused the credential: set AGENTRY_INTERNAL_TOKEN to the cluster's service token"
        return 1, f"billing refused the grant: {exc.details()}"
    balance = Decimal(reply.balance_micros) / 1_000_000
    if not reply.applied:
        return 0, f"already granted (key {key!r}); balance of {account}: {balance} USD"
    return 0, f"granted {Decimal(micros) / 1_000_000} USD to {account}; balance: {balance} USD"
