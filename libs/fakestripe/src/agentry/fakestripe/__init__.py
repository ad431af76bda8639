"""A small stateful Stripe-compatible server: a TEST DOUBLE for billing's Stripe adapter.

It speaks Stripe's wire protocol for the endpoints Agentry calls (form-encoded requests, JSON
objects of API version 2026-10-28, Idempotency-Key) and sends webhooks signed as Stripe signs
them. Run it in a test with `FakeStripeServer`, or as `python -m agentry.fakestripe --port N`.
"""

from .app import create_app, sign
from .server import Delivery, FakeStripeServer
from .state import API_VERSION, FakeStripe, StripeError

__all__ = ["API_VERSION", "Delivery", "FakeStripe", "FakeStripeServer", "StripeError", "create_app", "sign"]
