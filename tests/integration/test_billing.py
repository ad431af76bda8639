"""Billing through the whole system (embedded stack, one per module): a run that spends the
balance mid-run ends budget_exceeded with its completed messages kept and the next start is 402;
plans decide on the model the run really uses and cap concurrent runs; the billing routes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
import pytest_asyncio
from typer.testing import CliRunner

from agentry.cli.devstack import start_dev_stack
from agentry.cli.main import app
from agentry.fakellm import Script, ScriptedToolCall, ThreadedFakeLLMServer, Turn

PORTS = {"auth": 0, "billing": 0, "sandbox": 0, "runner": 0, "gateway": 0}
PASSWORD = "correct horse battery staple"
MARKER = "billing-tool-output-51c2"
SCRIPTS = {
    "bill-tools": Script(
        turns=(
            Turn(
                text="Running the command.",
                tool_calls=(ScriptedToolCall(name="run_command", arguments={"command": f"echo {MARKER}"}),),
            ),
            Turn(text="This second answer must never be paid for."),
        )
    ),
    "bill-cheap": Script(turns=(Turn(text="Cheap answer."),)),
    "bill-slow": Script(turns=(Turn(text=" ".join(f"w{i}" for i in range(200))),), tokens_per_second=40),
}
PLANS = """
default_plan = "free"

[[plans]]
id = "free"
name = "Free"
models = ["openai/bill-*"]
max_concurrent_runs = 1

[[credit_packs]]
id = "pack"
name = "Pack"
price_usd = 5
credits_usd = 5
"""
# 1,000 USD per million prompt tokens: any step of bill-tools costs far more than the opening credit.
PRICES = {
    "openai/bill-tools": {"input_per_million_usd": 1000, "output_per_million_usd": 1000},
    "openai/bill-cheap": {"input_per_million_usd": 0, "output_per_million_usd": 0},
    "openai/bill-slow": {"input_per_million_usd": 0, "output_per_million_usd": 0},
}
OPENING_MICROS = 10_000  # 0.01 USD


@dataclass
class Stack:
    url: str
    billing_target: str


@pytest.fixture(scope="module")
def llm():
    with ThreadedFakeLLMServer(SCRIPTS) as server:
        yield server


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def system(llm, tmp_path_factory) -> AsyncIterator[Stack]:
    data_dir = tmp_path_factory.mktemp("billing")
    (data_dir / "plans.toml").write_text(PLANS)
    async with contextlib.AsyncExitStack() as stack:
        dev = await start_dev_stack(
            stack,
            data_dir=data_dir,
            llm_api_base=llm.base_url,
            ports=PORTS,
            # Admission by loop lag is off: on a loaded CI machine it would hold runs back, which is
            # not what these tests are about.
            runner_overrides={"default_model": "openai/not-on-the-plan", "max_loop_lag_ms": 0},
            billing_overrides={
                "initial_credit_micros": OPENING_MICROS,
                "plans_file": str(data_dir / "plans.toml"),
                "model_prices": PRICES,
                "cache_ttl_seconds": 0.0,
            },
        )
        yield Stack(dev.gateway_url, f"127.0.0.1:{dev.ports['billing']}")


async def _user(client: httpx.AsyncClient, email: str) -> dict[str, str]:
    signup = await client.post("/api/auth/signup", json={"email": email, "password": PASSWORD})
    assert signup.status_code == 201
    token = await client.post("/api/auth/token", json={"email": email, "password": PASSWORD})
    return {"Authorization": f"Bearer {token.json()['access_token']}", "x-test-account": signup.json()["account_id"]}


def _cli(*args: str):
    return CliRunner().invoke(app, list(args))


async def _thread(client: httpx.AsyncClient, headers: dict[str, str]) -> str:
    return (await client.post("/api/threads", json={}, headers=headers)).json()["thread_id"]


async def _ended(client: httpx.AsyncClient, run_id: str, headers: dict[str, str]) -> dict:
    run: dict = {}
    try:
        # Generous: the embedded worker imports LiteLLM before its first run (long on a busy machine).
        async with asyncio.timeout(180):
            while True:
                run = (await client.get(f"/api/agent-run/{run_id}", headers=headers)).json()
                if run["status"] in ("completed", "failed", "cancelled"):
                    return run
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"the run did not end: {run}") from None


pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]


@pytest.fixture
async def client(system) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=system.url, timeout=60) as c:
        yield c


async def test_a_run_that_spends_the_balance_ends_budget_exceeded_and_the_next_start_is_402(client, system):
    headers = await _user(client, "spender@example.com")
    thread_id = await _thread(client, headers)
    started = await client.post(
        f"/api/threads/{thread_id}/agent/start",
        json={"model_name": "openai/bill-tools", "prompt": "run it"},
        headers=headers,
    )
    assert started.status_code == 202, started.text
    run = await _ended(client, started.json()["agent_run_id"], headers)
    assert (run["status"], run["finish_reason"]) == ("failed", "budget_exceeded")
    assert run["error"] == "credit balance used up"

    # What the run did before the money ran out is kept: the prompt, the model's step, its tool result.
    messages = (await client.get(f"/api/threads/{thread_id}/messages", headers=headers)).json()["messages"]
    assert [m["type"] for m in messages] == ["user", "assistant", "tool"]
    assert MARKER in str(messages[2]["content"])
    assert "never be paid for" not in str(messages)

    again = await client.post(
        f"/api/threads/{thread_id}/agent/start",
        json={"model_name": "openai/bill-cheap", "prompt": "more"},
        headers=headers,
    )
    assert again.status_code == 402, again.text
    error = again.json()["error"]
    assert error["code"] == "insufficient_credits"
    assert error["message"] == "Your credit balance is used up; add credits or upgrade your plan to start new runs."

    subscription = (await client.get("/api/billing/subscription", headers=headers)).json()
    assert subscription["plan"]["id"] == "free" and subscription["status"] == "free"
    assert subscription["balance_micros"] < 0 and subscription["plan"]["max_concurrent_runs"] == 1

    usage = (await client.get("/api/billing/usage", params={"group_by": "model"}, headers=headers)).json()
    rows = {r["key"]: r for r in usage["rows"]}
    assert set(rows) == {"openai/bill-tools", "sandbox"}, "the model call and the command's sandbox time"
    assert rows["openai/bill-tools"]["calls"] == 1 and rows["sandbox"]["sandbox_seconds"] > 0
    assert sum(r["cost_micros"] for r in rows.values()) == OPENING_MICROS - subscription["balance_micros"]
    by_run = (await client.get("/api/billing/usage", params={"group_by": "run"}, headers=headers)).json()
    assert [r["key"] for r in by_run["rows"]] == [run["agent_run_id"]]

    # The operator grants credit (local provider); the same key grants once; then runs start again.
    account = headers["x-test-account"]
    granted = await asyncio.to_thread(
        _cli, "billing", "grant", account, "1.5", "--target", system.billing_target, "--key", "support-ticket-1"
    )
    assert granted.exit_code == 0 and "granted 1.5 USD" in granted.output, granted.output
    repeated = await asyncio.to_thread(
        _cli, "billing", "grant", account, "1.5", "--target", system.billing_target, "--key", "support-ticket-1"
    )
    assert repeated.exit_code == 0 and "already granted" in repeated.output
    after = (await client.get("/api/billing/subscription", headers=headers)).json()["balance_micros"]
    assert after == subscription["balance_micros"] + 1_500_000
    resumed = await client.post(
        f"/api/threads/{thread_id}/agent/start",
        json={"model_name": "openai/bill-cheap", "prompt": "more"},
        headers=headers,
    )
    assert resumed.status_code == 202, resumed.text


async def test_the_grant_command_refuses_bad_amounts_and_a_wrong_credential(system, monkeypatch):
    for amount in ("-3", "0", "abc", "0.0000001", "2000000"):
        result = await asyncio.to_thread(_cli, "billing", "grant", "acct", amount, "--target", system.billing_target)
        assert result.exit_code == 2, (amount, result.output)
    monkeypatch.setenv("AGENTRY_INTERNAL_TOKEN", "not-the-cluster-token-at-all")
    refused = await asyncio.to_thread(_cli, "billing", "grant", "acct", "5", "--target", system.billing_target)
    assert refused.exit_code == 1 and "refused the credential" in refused.output


async def test_the_plan_judges_the_model_the_run_really_uses(client):
    headers = await _user(client, "models@example.com")
    thread_id = await _thread(client, headers)
    named = await client.post(
        f"/api/threads/{thread_id}/agent/start",
        json={"model_name": "openai/gpt-elsewhere", "prompt": "hi"},
        headers=headers,
    )
    assert (named.status_code, named.json()["error"]["code"]) == (403, "model_not_allowed")
    # No model named: the runner's default (not on the plan) is what billing sees, not "".
    default = await client.post(f"/api/threads/{thread_id}/agent/start", json={"prompt": "hi"}, headers=headers)
    assert (default.status_code, default.json()["error"]["code"]) == (403, "model_not_allowed")
    assert "openai/not-on-the-plan" in default.json()["error"]["message"]


async def test_the_plan_caps_concurrent_runs(client):
    headers = await _user(client, "busy@example.com")
    first_thread, second_thread = await _thread(client, headers), await _thread(client, headers)
    slow = await client.post(
        f"/api/threads/{first_thread}/agent/start",
        json={"model_name": "openai/bill-slow", "prompt": "talk"},
        headers=headers,
    )
    assert slow.status_code == 202
    second = await client.post(
        f"/api/threads/{second_thread}/agent/start",
        json={"model_name": "openai/bill-cheap", "prompt": "hi"},
        headers=headers,
    )
    assert (second.status_code, second.json()["error"]["code"]) == (429, "too_many_active_runs")
    await client.post(f"/api/agent-run/{slow.json()['agent_run_id']}/stop", headers=headers)
    await _ended(client, slow.json()["agent_run_id"], headers)
    third = await client.post(
        f"/api/threads/{second_thread}/agent/start",
        json={"model_name": "openai/bill-cheap", "prompt": "hi"},
        headers=headers,
    )
    assert third.status_code == 202, third.text


async def test_plans_and_usage_routes(client):
    headers = await _user(client, "reader@example.com")
    plans = (await client.get("/api/billing/plans", headers=headers)).json()
    assert plans["default_plan_id"] == "free" and plans["currency"] == "usd"
    assert [p["id"] for p in plans["plans"]] == ["free"] and plans["plans"][0]["models"] == ["openai/bill-*"]
    assert plans["credit_packs"] == [
        {
            "id": "pack",
            "name": "Pack",
            "price_micros": 5_000_000,
            "price_usd": "5",
            "credits_micros": 5_000_000,
            "credits_usd": "5",
            "stripe_price_id": None,
        }
    ]
    assert (await client.get("/api/billing/plans")).status_code == 401
    empty = (await client.get("/api/billing/usage", headers=headers)).json()
    assert empty == {"group_by": "day", "rows": [], "next_cursor": None}
    bad = await client.get("/api/billing/usage", params={"group_by": "week"}, headers=headers)
    assert bad.status_code == 422 and bad.json()["error"]["fields"][0]["field"] == "query.group_by"
    cursor = await client.get("/api/billing/usage", params={"cursor": "not-a-cursor"}, headers=headers)
    assert cursor.status_code == 422 and "cursor" in cursor.json()["error"]["message"]
