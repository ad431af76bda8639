"""A stateful Stripe-compatible server for tests."""
