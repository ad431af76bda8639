"""Test doubles every service's tests share: inject them where code takes a clock."""

from __future__ import annotations

import os


class FakeClock:
    """Seconds that move only when a test says so; pass it wherever a `clock` callable goes."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


def needs(available: bool, what: str):
    """A pytest mark for tests that need a local program: skipped without it, but failed under CI
    (CI=true), where a missing program must never turn into a green run."""
    import pytest

    in_ci = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
    return pytest.mark.skipif(not available and not in_ci, reason=f"{what} is not installed")
