"""GET /api/me: who the caller is, the accounts they may act for, and the active account's credit."""

from __future__ import annotations

import logging

import grpc
from fastapi import APIRouter
from pydantic import BaseModel, Field

from agentry.api.auth.v1 import auth_pb2
from agentry.api.billing.v1 import billing_pb2

from . import auth_schemas, schemas
from .accounts_routes import _account
from .deps import CallerDep, UpstreamsDep

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/api", tags=["accounts"])


class Me(BaseModel):
    user: schemas.UserOut
    accounts: list[auth_schemas.AccountOut] = Field(
        description="Every account the user may act for, personal first (as GET /api/accounts)."
    )
    active_account: schemas.ActiveAccount
    plan: str | None = Field(default=None, description="The active account's plan; null when billing names none.")
    balance_micros: int | None = Field(
        description=(
            "Credit left on the active account, in millionths of a US dollar; null when billing could not answer."
        )
    )


@router.get("/me", response_model=Me, operation_id="getMe")
async def me(caller: CallerDep, up: UpstreamsDep):
    """The caller, their accounts, the account this request acts for (the credential's own, or
    `X-Account-Id`) and its balance. Billing being down does not fail the answer: `balance_micros`
    is null then."""
    reply = await up.auth.ListAccounts(auth_pb2.ListAccountsRequest(user_id=caller.user_id))
    accounts = [_account(m) for m in reply.accounts]
    role = caller.role or next((a.role for a in accounts if a.id == caller.account_id), "")
    if caller.api_key_id:
        role = role or "api_key"
    balance: int | None = None
    plan: str | None = None
    try:
        answer = await up.billing.GetBalance(billing_pb2.GetBalanceRequest(account_id=caller.account_id))
        balance = answer.balance_micros
        # A plan name when billing's answer carries one (billing's plans are being added in parallel).
        plan = getattr(answer, "plan", "") or None
    except grpc.aio.AioRpcError as exc:
        logger.warning("billing did not answer GetBalance (%s); /api/me without a balance", exc.code().name)
    return Me(
        user=schemas.UserOut(id=caller.user_id, email=caller.email),
        accounts=accounts,
        active_account=schemas.ActiveAccount(id=caller.account_id, role=role or "member"),
        plan=plan,
        balance_micros=balance,
    )
