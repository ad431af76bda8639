"""Test doubles every service's tests share: inject them where code takes a clock."""

from __future__ import annotations


class FakeClock:
    """Seconds that move only when a test says so; pass it wherever a `clock` callable goes."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now
