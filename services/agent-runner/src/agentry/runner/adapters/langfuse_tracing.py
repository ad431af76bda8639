"""Langfuse tracing of runs: one trace per run, a generation per model call, a span per tool call.

Built on the `langfuse` SDK (v5, OpenTelemetry-based) with our own instrumentation of agentpress's
model and tool calls (agentpress.observe): LiteLLM's `langfuse` callback is broken with v5, and
agentpress's direct OpenAI lane never goes through LiteLLM anyway.

- The trace id is derived from the run id (`Langfuse.create_trace_id(seed=run_id)`), so a run
  resumed by another worker (lease takeover) lands in the same trace with nothing persisted; each
  attempt is one root observation ("run", attempt N) holding that attempt's generations and tool
  spans. The distributed (OpenTelemetry) trace id of the request, when there is one, is recorded
  in the trace's metadata as `otel_trace_id`.
- Export never delays or fails a run: spans end into the SDK's batch processor (a bounded queue,
  2,048 spans by default, OTEL_BSP_MAX_QUEUE_SIZE) exported by a background thread with a short
  timeout; a full queue drops the span, a failed export drops the batch, both counted in
  `agentry_langfuse_spans_dropped_total{reason}`. The SDK gets its own TracerProvider, so
  Langfuse's spans never go to the OTLP collector and the collector's never go to Langfuse.
- Inputs and outputs go through `Masker`: known secret values and secret-looking strings are
  replaced, every string is cut to `max_chars`, then the operator's hook (if any) runs; a hook
  that raises replaces the field with a placeholder (unmasked data never leaves).
"""

from __future__ import annotations

import asyncio
import base64
import importlib
import json
import logging
import re
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from agentpress.observe import ModelCallObservation, RunObserver, ToolCallObservation
from agentry.servicekit.metrics import family
from agentry.servicekit.tracing import current_trace_id

logger = logging.getLogger(__name__)

MaskHook = Callable[[Any], Any]
REDACTED = "[redacted]"
# Secret-looking values: provider keys (sk-..., sk-ant-..., Langfuse's pk-lf/sk-lf), bearer tokens,
# JWTs, and `key=value` / `"key": "value"` pairs whose key names a secret.
_SECRETISH = re.compile(
    r"(?:\b(?:sk|pk|rk)-[A-Za-z0-9_\-]{12,})"
    r"|(?:\bBearer\s+[A-Za-z0-9._~+/\-]{8,}=*)"
    r"|(?:\beyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,})"
    r"|(?:(?<![A-Za-z])(?:api[_-]?key|secret|password|passwd|token|authorization)[\"']?\s*[:=]\s*[\"']?)[^\s\"',;]{4,}",
    re.IGNORECASE,
)


def _dropped(reason: str) -> None:
    family(
        "counter",
        "agentry_langfuse_spans_dropped_total",
        "Langfuse spans dropped instead of exported (reason: queue_full, export_failed)",
        ["reason"],
    ).labels(reason).inc()


def _exported(count: int) -> None:
    family("counter", "agentry_langfuse_spans_exported_total", "Langfuse spans exported").inc(count)


class Masker:
    """Makes a value safe to send: secrets out, strings cut to `max_chars`, then `hook`."""

    def __init__(self, *, max_chars: int = 4000, secrets: Iterable[str] = (), hook: MaskHook | None = None) -> None:
        self.max_chars = max_chars
        self._secrets = sorted({s for s in secrets if s and len(s) >= 6}, key=len, reverse=True)
        self._hook = hook

    def __call__(self, value: Any) -> Any:
        value = self._walk(value, 0)
        if self._hook is not None:
            try:
                value = self._hook(value)
            except Exception:
                logger.warning("the Langfuse masking hook failed; the field is withheld", exc_info=True)
                return "[withheld: masking failed]"
        return value

    def text(self, value: str) -> str:
        for secret in self._secrets:
            if secret in value:
                value = value.replace(secret, REDACTED)
        value = _SECRETISH.sub(_redact_match, value)
        if len(value) > self.max_chars:
            value = f"{value[: self.max_chars]}…[{len(value) - self.max_chars} more characters]"
        return value

    def _walk(self, value: Any, depth: int) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if depth > 8:
            return "[too deep]"
        if isinstance(value, dict):
            return {
                k: (REDACTED if isinstance(k, str) and _is_secret_key(k) else self._walk(v, depth + 1))
                for k, v in value.items()
            }
        if isinstance(value, (list, tuple)):
            return [self._walk(v, depth + 1) for v in value]
        return value


def _is_secret_key(key: str) -> bool:
    k = key.lower().replace("-", "_")
    return k in {
        "api_key",
        "apikey",
        "password",
        "secret",
        "token",
        "access_token",
        "refresh_token",
        "authorization",
        "secret_key",
        "private_key",
    }


def _redact_match(match: re.Match[str]) -> str:
    text = match.group(0)
    # keep a `key=` prefix readable: only the value is secret
    for sep in ("=", ":"):
        if sep in text and not text.lower().startswith(("bearer", "sk-", "pk-", "rk-", "eyj")):
            head, _, _ = text.partition(sep)
            return f"{head}{sep}{REDACTED}"
    return REDACTED


def load_mask_hook(path: str) -> MaskHook | None:
    """ "package.module:function" -> the function (the operator's masking hook); "" -> None."""
    if not path:
        return None
    module, _, name = path.partition(":")
    if not name:
        raise ValueError(f"a masking hook is named 'module:function', not {path!r}")
    return getattr(importlib.import_module(module), name)


class LangfuseTracer:
    """Starts one Langfuse observation tree per run attempt. Build with `from_settings` (None when
    the keys are absent: tracing off, nothing imported)."""

    def __init__(
        self,
        *,
        public_key: str,
        secret_key: str,
        base_url: str,
        masker: Masker,
        export_timeout_seconds: float = 5.0,
        flush_interval_seconds: float = 1.0,
        environment: str | None = None,
    ) -> None:
        from langfuse import Langfuse
        from opentelemetry.exporter.otlp.proto.http import Compression
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace import TracerProvider

        _count_queue_drops()
        auth = base64.b64encode(f"{public_key}:{secret_key}".encode()).decode("ascii")
        exporter = OTLPSpanExporter(
            endpoint=f"{base_url.rstrip('/')}/api/public/otel/v1/traces",
            headers={
                "Authorization": f"Basic {auth}",
                "x-langfuse-public-key": public_key,
                "x-langfuse-sdk-name": "python",
                "x-langfuse-ingestion-version": "4",
            },
            timeout=export_timeout_seconds,
            compression=Compression.Gzip,
        )
        self.masker = masker
        # Its own TracerProvider: Langfuse's spans stay out of the OTLP collector's pipeline.
        self.client = Langfuse(
            public_key=public_key,
            secret_key=secret_key,
            base_url=base_url,
            tracer_provider=TracerProvider(),
            span_exporter=_CountingExporter(exporter),
            flush_interval=flush_interval_seconds,
            environment=environment,
            timeout=int(max(1, export_timeout_seconds)),
        )

    @classmethod
    def from_settings(cls, settings: Any) -> LangfuseTracer | None:
        public = settings.langfuse_public_key
        secret = settings.langfuse_secret_key.get_secret_value() if settings.langfuse_secret_key else ""
        if not public or not secret:
            return None
        secrets = [secret, settings.internal_token.get_secret_value(), settings.llm_api_key or ""]
        masker = Masker(
            max_chars=settings.langfuse_max_field_chars, secrets=secrets, hook=load_mask_hook(settings.langfuse_mask)
        )
        return cls(
            public_key=public,
            secret_key=secret,
            base_url=settings.langfuse_base_url,
            masker=masker,
            export_timeout_seconds=settings.langfuse_export_timeout_seconds,
            flush_interval_seconds=settings.langfuse_flush_interval_seconds,
        )

    def start_run(
        self,
        *,
        run_id: str,
        thread_id: str,
        account_id: str,
        user_id: str,
        model: str,
        attempt: int,
        resume_reason: str = "",
    ) -> LangfuseRunObserver:
        """The observer of one attempt of a run (its root observation is open until `end`)."""
        trace_attributes: dict[str, Any] = {
            "langfuse.trace.name": "agent run",
            "session.id": thread_id,
            "langfuse.trace.tags": [model],
            "langfuse.trace.metadata.account_id": json.dumps(account_id),
            "langfuse.trace.metadata.run_id": json.dumps(run_id),
        }
        if user_id:
            trace_attributes["user.id"] = user_id
        otel_trace_id = current_trace_id()
        if otel_trace_id:
            trace_attributes["langfuse.trace.metadata.otel_trace_id"] = json.dumps(otel_trace_id)
        trace_id = self.client.create_trace_id(seed=run_id)
        root = self.client.start_observation(
            trace_context={"trace_id": trace_id},
            name="run",
            as_type="agent",
            metadata={"run_id": run_id, "attempt": attempt, "resume_reason": resume_reason or None},
        )
        _set(root, trace_attributes)
        return LangfuseRunObserver(root, trace_attributes, self.masker, trace_id)

    async def close(self, timeout: float = 5.0) -> None:
        """Flushes what is queued and stops the export thread, waiting at most `timeout` s (a
        dead Langfuse never holds a shutdown longer)."""
        task = asyncio.create_task(asyncio.to_thread(self.client.shutdown))
        done, _ = await asyncio.wait([task], timeout=timeout)
        if not done:
            logger.warning("Langfuse did not take the last spans within %.0f s; they are dropped", timeout)


def _set(observation: Any, attributes: dict[str, Any]) -> None:
    span = observation._otel_span  # the SDK's wrapper keeps it; trace attributes go on every span
    for key, value in attributes.items():
        span.set_attribute(key, value)


class LangfuseRunObserver(RunObserver):
    """agentpress's RunObserver for one run attempt; `end` closes the attempt's observation."""

    def __init__(self, root: Any, trace_attributes: dict[str, Any], masker: Masker, trace_id: str) -> None:
        self.root = root
        self.trace_id = trace_id
        self._trace_attributes = trace_attributes
        self._mask = masker

    def model_call(self, model: str, request: Any) -> ModelCallObservation:
        parameters = {k: v for k, v in request.settings.as_kwargs().items() if isinstance(v, (str, int, float, bool))}
        generation = self.root.start_observation(
            name=f"model {model}",
            as_type="generation",
            model=model,
            input=self._mask(request.messages),
            model_parameters=parameters or None,
            metadata={"tools": len(request.tools)} if request.tools else None,
        )
        _set(generation, self._trace_attributes)
        return _Generation(generation, self._mask)

    def tool_call(self, name: str, call_id: str, arguments: str) -> ToolCallObservation:
        span = self.root.start_observation(
            name=name, as_type="tool", input=self._mask(_decoded(arguments)), metadata={"call_id": call_id}
        )
        _set(span, self._trace_attributes)
        return _ToolSpan(span, self._mask)

    def end(self, *, outcome: str, error: str | None = None) -> None:
        """The attempt is over: `outcome` is the run's finish reason ("completed", "error",
        "handed_back", ...), `error` its message."""
        try:
            self.root.update(
                output={"outcome": outcome, **({"error": self._mask(error)} if error else {})},
                level="ERROR" if outcome in ("error", "failed") else None,
                status_message=self._mask(error) if error else None,
            )
            self.root.end()
        except Exception:
            logger.warning("could not end the run's Langfuse observation", exc_info=True)


def _decoded(arguments: str) -> Any:
    try:
        return json.loads(arguments)
    except (ValueError, TypeError):
        return arguments


class _Generation(ModelCallObservation):
    def __init__(self, generation: Any, mask: Masker) -> None:
        self._generation = generation
        self._mask = mask

    def first_token(self) -> None:
        self._generation.update(completion_start_time=datetime.now(UTC))

    def finish(
        self,
        *,
        text: str,
        reasoning: str,
        tool_calls: list[dict[str, Any]],
        finish_reason: str | None,
        prompt_tokens: int | None,
        completion_tokens: int | None,
        cost_usd: float | None,
    ) -> None:
        output: dict[str, Any] = {"role": "assistant", "content": text}
        if reasoning:
            output["reasoning"] = reasoning
        if tool_calls:
            output["tool_calls"] = [{**c, "arguments": _decoded(c["arguments"])} for c in tool_calls]
        usage = None
        if prompt_tokens is not None or completion_tokens is not None:
            usage = {
                "input": prompt_tokens or 0,
                "output": completion_tokens or 0,
                "total": (prompt_tokens or 0) + (completion_tokens or 0),
            }
        self._generation.update(
            output=self._mask(output),
            usage_details=usage,
            cost_details={"total": cost_usd} if cost_usd is not None else None,
            metadata={"finish_reason": finish_reason} if finish_reason else None,
            level="WARNING" if finish_reason == "interrupted" else None,
        )
        self._generation.end()

    def fail(self, error: BaseException) -> None:
        self._generation.update(
            level="ERROR",
            status_message=self._mask(f"{type(error).__name__}: {error}"),
            metadata={"error_kind": getattr(error, "kind", None)},
        )
        self._generation.end()


class _ToolSpan(ToolCallObservation):
    def __init__(self, span: Any, mask: Masker) -> None:
        self._span = span
        self._mask = mask

    def finish(self, outcome: Any) -> None:
        self._span.update(
            output=self._mask(outcome.output),
            metadata={"duration_ms": round(outcome.duration_ms, 3), "error": outcome.error},
            level="ERROR" if outcome.error else None,
            status_message=self._mask(outcome.error) if outcome.error else None,
        )
        self._span.end()


class _CountingExporter(SpanExporter):
    """The OTLP exporter, counting what it sends and what it drops (a failed export)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def export(self, spans: Any) -> SpanExportResult:
        try:
            result = self._inner.export(spans)
        except Exception:
            logger.debug("Langfuse export raised", exc_info=True)
            result = SpanExportResult.FAILURE
        if result == SpanExportResult.SUCCESS:
            _exported(len(spans))
        else:
            for _ in spans:
                _dropped("export_failed")
        return result

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self._inner.force_flush(timeout_millis)


class _QueueFullFilter(logging.Filter):
    """The SDK's batch processor drops a span when its queue is full and says so only in a log
    line ("Queue full, dropping spans."): counted here, and the line let through."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg and str(record.msg).startswith("Queue full"):
            _dropped("queue_full")
        return True


_filter_installed = False


def _count_queue_drops() -> None:
    global _filter_installed
    if not _filter_installed:
        logging.getLogger("opentelemetry.sdk._shared_internal").addFilter(_QueueFullFilter())
        _filter_installed = True
