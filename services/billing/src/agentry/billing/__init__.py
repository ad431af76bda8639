"""Agentry billing: plans, credits and usage, behind the BillingService gRPC API."""

from .adapters.local import LocalPaymentsProvider
from .adapters.sql import SqlCreditLedger
from .config import BillingSettings
from .domain import MICROS_PER_USD, Charge, LedgerEntry, Plan, RunDecision, Usage
from .errors import AccountNotFound, BillingError, InvalidBillingRequest
from .ports import CreditLedger, PaymentsProvider
from .service import BillingService

__all__ = [
    "MICROS_PER_USD",
    "AccountNotFound",
    "BillingError",
    "BillingService",
    "BillingSettings",
    "Charge",
    "CreditLedger",
    "InvalidBillingRequest",
    "LedgerEntry",
    "LocalPaymentsProvider",
    "PaymentsProvider",
    "Plan",
    "RunDecision",
    "SqlCreditLedger",
    "Usage",
]
