"""The agent a worker builds for a run follows the runner's settings."""

from __future__ import annotations

from agentry.runner.config import RunnerSettings
from agentry.runner.domain import Run, RunStatus
from agentry.runner.worker import agent_factory

RUN = Run(
    run_id="r",
    thread_id="t",
    account_id="a",
    status=RunStatus.RUNNING,
    model="openai/some-model",
    error="",
    finish_reason="",
    created_at=0.0,
    started_at=None,
    completed_at=None,
)


def test_defaults_are_native_tools_on_stream_with_every_builtin_tool():
    agent = agent_factory(RunnerSettings())(RUN)
    assert agent.tool_calling == "native"
    assert agent.tool_execution.when == "on_stream" and not agent.tool_execution.parallel
    assert {"run_command", "create_file", "read_file", "complete", "ask"} <= set(agent.tools.names)
    assert agent.max_steps == 25


def test_settings_choose_xml_after_turn_parallel_fallbacks_and_step_limit():
    settings = RunnerSettings(
        tool_calling="xml",
        tool_execution="after_turn",
        parallel_tools=True,
        fallback_models=["openai/backup"],
        max_steps=3,
        llm_api_base="http://127.0.0.1:1/v1",
    )
    agent = agent_factory(settings)(RUN)
    assert agent.tool_calling == "xml"
    assert agent.tool_execution.when == "after_turn" and agent.tool_execution.parallel
    assert [m.name for m in agent.fallback_models] == ["openai/backup"]
    assert agent.max_steps == 3


def test_the_runs_reasoning_effort_reaches_the_model_settings():
    from dataclasses import replace

    assert agent_factory(RunnerSettings())(RUN).settings.reasoning_effort is None
    agent = agent_factory(RunnerSettings())(replace(RUN, reasoning_effort="medium"))
    assert agent.settings.as_kwargs()["reasoning_effort"] == "medium"


def test_retry_settings_reach_the_agent():
    default = agent_factory(RunnerSettings())(RUN)
    assert (default.retry.attempts, default.retry.run_budget, default.retry.max_retry_after) == (3, 10, 60.0)
    settings = RunnerSettings(
        model_max_attempts=5,
        model_retry_budget=2,
        model_max_retry_after_seconds=7.5,
        context_fallback_models=["openai/big"],
    )
    agent = agent_factory(settings)(RUN)
    assert (agent.retry.attempts, agent.retry.run_budget, agent.retry.max_retry_after) == (5, 2, 7.5)
    assert [m.name for m in agent.context_fallback_models] == ["openai/big"]
