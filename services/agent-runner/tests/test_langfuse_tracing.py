"""The Langfuse adapter's masking, and its off switch (no keys: no tracer, nothing imported)."""

from __future__ import annotations

import pytest

from agentry.runner.adapters.langfuse_tracing import REDACTED, LangfuseTracer, Masker, load_mask_hook
from agentry.runner.config import RunnerSettings


def test_secrets_are_redacted_and_long_strings_cut():
    mask = Masker(max_chars=120, secrets=["internal-token-123456"])
    out = mask(
        {
            "content": "use sk-abcdefghijklmnopqrstuvwxyz and Bearer abc.def.ghi12345 with internal-token-123456",
            "api_key": "anything",
            "nested": [{"text": "password=hunter22 ok"}],
            "long": "x" * 500,
        }
    )
    assert "sk-abcdefghijklmnop" not in str(out) and "abc.def.ghi12345" not in str(out)
    assert "internal-token-123456" not in str(out) and "hunter22" not in str(out)
    assert out["api_key"] == REDACTED and "password=" in out["nested"][0]["text"]
    assert out["long"].startswith("x" * 120) and "380 more characters" in out["long"]


def test_the_operators_hook_runs_last_and_a_failing_hook_withholds_the_field():
    assert Masker(hook=lambda v: "[mine]")({"a": "b"}) == "[mine]"

    def broken(value):
        raise RuntimeError("oops")

    assert Masker(hook=broken)("secret data") == "[withheld: masking failed]"
    assert load_mask_hook("json:dumps") is not None and load_mask_hook("") is None
    with pytest.raises(ValueError):
        load_mask_hook("json.dumps")


def test_no_keys_no_tracer(monkeypatch):
    monkeypatch.delenv("LANGFUSE_PUBLIC_KEY", raising=False)
    monkeypatch.delenv("LANGFUSE_SECRET_KEY", raising=False)
    assert LangfuseTracer.from_settings(RunnerSettings()) is None
    monkeypatch.setenv("LANGFUSE_PUBLIC_KEY", "pk-lf-1")
    assert LangfuseTracer.from_settings(RunnerSettings()) is None  # both keys are needed
    monkeypatch.setenv("LANGFUSE_HOST", "http://langfuse.internal:3000")
    assert RunnerSettings().langfuse_base_url == "http://langfuse.internal:3000"


def test_a_dead_langfuse_drops_and_counts_never_raises():
    import socket
    import uuid

    from prometheus_client import REGISTRY

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    def dropped() -> float:
        return REGISTRY.get_sample_value("agentry_langfuse_spans_dropped_total", {"reason": "export_failed"}) or 0.0

    before = dropped()
    tracer = LangfuseTracer(
        public_key=f"pk-lf-{uuid.uuid4().hex[:8]}",
        secret_key="sk-lf-x",
        base_url=f"http://127.0.0.1:{port}",
        masker=Masker(),
        export_timeout_seconds=0.5,
    )
    run = tracer.start_run(run_id="r-dead", thread_id="t", account_id="a", user_id="u", model="m", attempt=1)
    run.tool_call("run_command", "c1", '{"command": "ls"}')
    run.end(outcome="completed")
    tracer.client.flush()  # returns; the failed export is counted, not raised
    assert dropped() >= before + 1
