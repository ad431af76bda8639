from dataclasses import replace

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentpress import (
    AssistantMessage,
    FinishReason,
    MessageCompleted,
    RunFinished,
    StatusMessage,
    TextDelta,
    ToolCall,
    ToolCallFinished,
    ToolResultMessage,
    UsageReported,
    UserMessage,
    event_from_dict,
    message_from_dict,
)
from agentpress.safe_text import encodable

MESSAGES = [
    UserMessage(text="hi"),
    AssistantMessage(text="ok", reasoning="think", tool_calls=(ToolCall(call_id="c1", name="x", arguments="{}"),)),
    ToolResultMessage(call_id="c1", name="x", output="out", error="retry"),
    StatusMessage(status="summary", text="s", data={"covers_through": "m1"}),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: m.kind)
def test_message_json_round_trip(message):
    data = orjson.loads(orjson.dumps(message.to_dict()))
    assert message_from_dict(data) == message
    assert data["kind"] == message.kind
    assert data["message_id"] and isinstance(data["created_at"], float)


# Any text, unpaired surrogates included (st.text() leaves them out).
ANY_TEXT = st.text(st.characters(exclude_categories=()))


@given(ANY_TEXT, ANY_TEXT, st.lists(st.tuples(ANY_TEXT, ANY_TEXT), max_size=3))
def test_assistant_round_trip_any_text(text, reasoning, calls):
    """Whatever the text, it serialises; an unpaired surrogate (which JSON and UTF-8 cannot hold)
    comes back as U+FFFD, everything else (NUL and control characters too) exactly."""
    message = AssistantMessage(
        text=text,
        reasoning=reasoning,
        tool_calls=tuple(ToolCall(call_id=f"c{i}", name=n, arguments=a) for i, (n, a) in enumerate(calls)),
    )
    expected = replace(
        message,
        text=encodable(text),
        reasoning=encodable(reasoning),
        tool_calls=tuple(
            replace(c, name=encodable(c.name), arguments=encodable(c.arguments)) for c in message.tool_calls
        ),
    )
    back = message_from_dict(orjson.loads(message.to_json()))
    assert back == expected
    if encodable(all_text := text + reasoning + "".join(n + a for n, a in calls)) is all_text:
        assert back == message


EVENTS = [
    TextDelta(text="a"),
    ToolCallFinished(call_id="c", name="n", arguments={"a": 1}, output="o", error=None, duration_ms=1.5),
    MessageCompleted(message=MESSAGES[1]),
    UsageReported(model="m", prompt_tokens=1, completion_tokens=2, cost_usd=0.1),
    RunFinished(reason=FinishReason.ASKED_USER),
]


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: e.type)
def test_event_round_trip_and_seq_ignored(event):
    data = orjson.loads(orjson.dumps(event.to_dict()))
    assert data["type"] == event.type
    assert event_from_dict({**data, "seq": 7}) == event


def test_unknown_discriminators_are_rejected():
    with pytest.raises(ValueError):
        message_from_dict({"kind": "nope"})
    with pytest.raises(ValueError):
        event_from_dict({"type": "nope"})
