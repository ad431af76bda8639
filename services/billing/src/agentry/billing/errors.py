"""Billing's failures; the servicekit interceptor maps them to gRPC status codes."""

from __future__ import annotations

from agentry.servicekit.errors import DomainError, FailedPrecondition, InvalidArgument, NotFound


class BillingError(DomainError):
    """The root of every failure billing reports."""


class InvalidBillingRequest(BillingError, InvalidArgument):
    """A request billing cannot act on: an empty account, a negative cost, a bad step."""

    code = "invalid_argument"


class AccountNotFound(BillingError, NotFound):
    """The ledger was asked to move credit on an account that was never opened."""

    code = "account_not_found"


class PaymentsNotConfigured(BillingError, FailedPrecondition):
    """A card-payment call (checkout, portal, webhook) on the local provider."""

    code = "payments_not_configured"


class InvalidSignature(BillingError, InvalidArgument):
    """A webhook whose signature does not verify with the endpoint secret."""

    code = "invalid_signature"


class UnknownPlan(BillingError, InvalidArgument):
    """A plan or credit pack id the catalog does not have."""

    code = "unknown_plan"
