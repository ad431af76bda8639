"""The pure rules: when a plan lets a run start, and what usage billing accepts."""

from __future__ import annotations

import pytest

from agentry.billing import InvalidBillingRequest, Plan, Usage
from agentry.billing.domain import MAX_STEP_COST_MICROS, Charge

PLAN = Plan(id="local", name="local", models=("gpt-small", "gpt-tiny*"))


def usage(**changes) -> Usage:
    fields = dict(
        account_id="acct", run_id="run-1", step=0, model="m", prompt_tokens=10, completion_tokens=5, cost_micros=100
    )
    return Usage(**{**fields, **changes})


def test_positive_balance_allows_a_run():
    decision = PLAN.decide(1, "gpt-small")
    assert decision.allowed and decision.reason == "" and decision.balance_micros == 1


@pytest.mark.parametrize("balance", [0, -250])
def test_no_balance_refuses_with_insufficient_credits(balance):
    decision = PLAN.decide(balance, "gpt-small")
    assert not decision.allowed
    assert decision.reason == "insufficient_credits"
    assert "add credits" in decision.message


def test_blocked_model_is_refused_even_with_credit():
    decision = PLAN.decide(5_000_000, "gpt-huge")
    assert (decision.allowed, decision.reason) == (False, "model_not_allowed")
    assert "gpt-huge" in decision.message


def test_a_run_may_continue_only_while_credit_is_left():
    assert Charge(balance_micros=1, charged=True).may_continue
    assert not Charge(balance_micros=0, charged=True).may_continue
    assert not Charge(balance_micros=-5, charged=False).may_continue


def test_valid_usage_is_accepted():
    assert usage(cost_micros=0, prompt_tokens=0, completion_tokens=0, model="").cost_micros == 0


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"account_id": ""}, "account_id is required"),
        ({"run_id": ""}, "run_id is required"),
        ({"account_id": "a" * 256}, "account_id must be at most"),
        ({"model": "m" * 256}, "model must be at most"),
        ({"step": -1}, "step must not be negative"),
        ({"cost_micros": -1}, "cost_micros must not be negative"),
        ({"prompt_tokens": -1, "completion_tokens": -2}, "prompt_tokens, completion_tokens must not be negative"),
        ({"cost_micros": MAX_STEP_COST_MICROS + 1}, "larger than any single step"),
    ],
)
def test_bad_usage_is_refused(changes, fragment):
    with pytest.raises(InvalidBillingRequest, match=fragment) as caught:
        usage(**changes)
    assert caught.value.code == "invalid_argument"
