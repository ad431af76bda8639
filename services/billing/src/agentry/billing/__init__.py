"""Agentry billing: plans, credits and usage, behind the BillingService gRPC API."""

from .adapters.local import LocalPaymentsProvider
from .adapters.sql import SqlBillingStore, SqlCreditLedger
from .config import BillingSettings
from .domain import MICROS_PER_USD, Charge, LedgerEntry, LedgerWrite, Posted, RunDecision, Subscription, Usage
from .errors import AccountNotFound, BillingError, InvalidBillingRequest
from .plans import Catalog, CreditPack, Plan, load_catalog
from .ports import BillingStore, BillingTx, CreditLedger, PaymentsProvider
from .service import BillingService, Pricing

__all__ = [
    "MICROS_PER_USD",
    "AccountNotFound",
    "BillingError",
    "BillingService",
    "BillingSettings",
    "BillingStore",
    "BillingTx",
    "Catalog",
    "Charge",
    "CreditLedger",
    "CreditPack",
    "InvalidBillingRequest",
    "LedgerEntry",
    "LedgerWrite",
    "LocalPaymentsProvider",
    "PaymentsProvider",
    "Plan",
    "Posted",
    "Pricing",
    "RunDecision",
    "SqlBillingStore",
    "SqlCreditLedger",
    "Subscription",
    "Usage",
    "load_catalog",
]
