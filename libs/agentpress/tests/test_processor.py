"""Native tool-call deltas and text through StreamProcessor, including property tests."""

from __future__ import annotations

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from agentpress.models import ModelDelta, ToolCallChunk
from agentpress.processor import PendingCall, StreamProcessor


async def _run(deltas: list[ModelDelta], mode: str = "native") -> tuple[StreamProcessor, list, list[PendingCall]]:
    events: list = []
    calls: list[PendingCall] = []

    async def emit(e):
        events.append(e)

    proc = StreamProcessor(emit, calls.append, mode)  # type: ignore[arg-type]
    for d in deltas:
        await proc.feed(d)
    await proc.close()
    return proc, events, calls


async def test_native_calls_assembled_by_index_and_completed_early():
    completed_at: list[int] = []
    events: list = []

    async def emit(e):
        events.append(e)

    proc = StreamProcessor(emit, lambda p: completed_at.append(len(events)))
    deltas = [
        ModelDelta(text="Sure. "),
        ModelDelta(tool_calls=(ToolCallChunk(0, "a", "run_command", '{"comm'),)),
        ModelDelta(tool_calls=(ToolCallChunk(0, arguments='and": "ls"}'),)),
        ModelDelta(tool_calls=(ToolCallChunk(1, "b", "create_file", '{"path": "x", '),)),
        ModelDelta(tool_calls=(ToolCallChunk(1, arguments='"content": "y"}'),)),
        ModelDelta(finish_reason="tool_calls", prompt_tokens=10, completion_tokens=5),
    ]
    for d in deltas[:4]:
        await proc.feed(d)
    assert len(completed_at) == 1, "call 0 is complete as soon as call 1 starts"
    for d in deltas[4:]:
        await proc.feed(d)
    await proc.close()
    calls = [p.call for p in proc.calls]
    assert [(c.call_id, c.name, orjson.loads(c.arguments)) for c in calls] == [
        ("a", "run_command", {"command": "ls"}),
        ("b", "create_file", {"path": "x", "content": "y"}),
    ]
    assert [e.type for e in events] == [
        "text_delta",
        "tool_call_started",
        "tool_call_delta",
        "tool_call_delta",
        "tool_call_started",
        "tool_call_delta",
        "tool_call_delta",
    ]
    msg = proc.message()
    assert (msg.text, msg.finish_reason, proc.prompt_tokens, proc.completion_tokens) == ("Sure. ", "tool_calls", 10, 5)


async def test_missing_call_id_is_generated_and_missing_name_reported():
    proc, _, calls = await _run(
        [
            ModelDelta(tool_calls=(ToolCallChunk(0, None, "x", "{}"),)),
            ModelDelta(tool_calls=(ToolCallChunk(1, "id2", None, "{}"),)),
        ]
    )
    assert calls[0].call.call_id.startswith("call_") and calls[0].parse_error is None
    assert calls[1].parse_error is not None


def _native_deltas(text: str, calls: list[tuple[str, dict]], cuts: list[int]) -> list[ModelDelta]:
    """Split text and each call's arguments at the given cut points."""

    def split(s: str) -> list[str]:
        points = sorted({c % (len(s) + 1) for c in cuts})
        bounds = [0, *points, len(s)]
        return [s[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]

    deltas = [ModelDelta(text=p) for p in split(text)]
    for i, (name, args) in enumerate(calls):
        pieces = split(orjson.dumps(args).decode()) or [""]
        deltas.append(ModelDelta(tool_calls=(ToolCallChunk(i, f"c{i}", name, pieces[0]),)))
        deltas += [ModelDelta(tool_calls=(ToolCallChunk(i, arguments=p),)) for p in pieces[1:]]
    return deltas


_args = st.dictionaries(
    st.text(min_size=1, max_size=5), st.one_of(st.text(max_size=20), st.integers(-(10**9), 10**9)), max_size=3
)


@settings(max_examples=150, deadline=None)
@given(
    st.text(max_size=60),
    st.lists(st.tuples(st.sampled_from(["a", "b_c"]), _args), max_size=3),
    st.lists(st.integers(min_value=0, max_value=200), max_size=10),
)
async def test_any_native_split_gives_the_same_calls_and_text(text, calls, cuts):
    whole, _, whole_calls = await _run(_native_deltas(text, calls, []))
    split, _, split_calls = await _run(_native_deltas(text, calls, cuts))
    assert split.text == whole.text == text
    assert (
        [(p.call.name, orjson.loads(p.call.arguments)) for p in split_calls]
        == [(p.call.name, orjson.loads(p.call.arguments)) for p in whole_calls]
        == [(n, a) for n, a in calls]
    )


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.text(max_size=10),
            st.text(max_size=10),
            st.integers(0, 3),
            st.one_of(st.none(), st.text(max_size=5)),
            st.text(max_size=10),
        ),
        max_size=12,
    )
)
async def test_garbage_native_stream_never_raises(items):
    deltas = [ModelDelta(text=t, reasoning=r, tool_calls=(ToolCallChunk(i, cid, cid, a),)) for t, r, i, cid, a in items]
    proc, _, calls = await _run(deltas)
    assert len(calls) == len(proc.calls)
