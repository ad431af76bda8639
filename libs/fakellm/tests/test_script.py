"""Scripts: parsing, stateless turn selection, templates."""

from __future__ import annotations

import json

import pytest

from agentry.fakellm import Script, ScriptedToolCall, ScriptError, Turn, load_scripts
from agentry.fakellm.script import TemplateContext

THREE_TURNS = Script(turns=(Turn(text="zero"), Turn(text="one"), Turn(text="two")))


def test_turn_index_counts_assistant_messages_after_the_last_user_message() -> None:
    user = {"role": "user", "content": "hi"}
    assistant = {"role": "assistant", "content": "x"}
    tool = {"role": "tool", "tool_call_id": "c", "content": "out"}
    assert THREE_TURNS.turn_for([user]).text == "zero"
    assert THREE_TURNS.turn_for([user, assistant, tool]).text == "one"
    assert THREE_TURNS.turn_for([user, assistant, tool, assistant, tool]).text == "two"
    # Clamped to the last turn.
    assert THREE_TURNS.turn_for([user, assistant, assistant, assistant, assistant]).text == "two"
    # A new user message starts the script again.
    assert THREE_TURNS.turn_for([user, assistant, assistant, user]).text == "zero"


def test_xml_tool_results_sent_as_user_messages_continue_the_turn() -> None:
    user = {"role": "user", "content": "hi"}
    assistant = {"role": "assistant", "content": "<function_calls>...</function_calls>"}
    result = {"role": "user", "content": '<tool_result name="run_command">\nok\n</tool_result>'}
    assert THREE_TURNS.turn_for([user, assistant, result]).text == "one"
    assert THREE_TURNS.turn_for([user, assistant, result, assistant, result]).text == "two"


def test_templates_fill_last_user_and_truncated_last_tool_output() -> None:
    messages = [
        {"role": "user", "content": "first"},
        {"role": "tool", "tool_call_id": "a", "content": "old"},
        {"role": "user", "content": [{"type": "text", "text": "second "}, {"type": "text", "text": "ask"}]},
        {"role": "tool", "tool_call_id": "b", "content": "y" * 500},
    ]
    context = TemplateContext.from_messages(messages)
    assert context.render("You asked: {last_user}") == "You asked: second ask"
    assert context.render("{last_tool_output}") == "y" * 200
    # Other braces are left alone, and nested argument values are rendered.
    assert context.render({"code": "f({x})", "items": ["{last_user}", 3]}) == {
        "code": "f({x})",
        "items": ["second ask", 3],
    }


def test_script_from_json_accepts_a_list_or_an_object_with_pacing() -> None:
    bare = Script.from_json([{"text": "hi"}, {"tool_calls": [{"name": "t", "arguments": {"a": 1}}]}])
    assert bare.turns == (Turn(text="hi"), Turn(tool_calls=(ScriptedToolCall("t", {"a": 1}),)))
    assert bare.ttft_seconds is None
    paced = Script.from_json({"turns": [{"text": "hi"}], "ttft_seconds": 0.5, "tokens_per_second": 10})
    assert (paced.ttft_seconds, paced.tokens_per_second) == (0.5, 10.0)


@pytest.mark.parametrize(
    "bad",
    [
        [],
        "text",
        [{"text": 3}],
        [{"tool_calls": [{"arguments": {}}]}],
        [{"tool_calls": [{"name": "t", "arguments": []}]}],
    ],
)
def test_script_from_json_rejects_bad_shapes(bad: object) -> None:
    with pytest.raises(ScriptError):
        Script.from_json(bad)


def test_load_scripts_reads_a_json_file(tmp_path) -> None:
    path = tmp_path / "scripts.json"
    path.write_text(json.dumps({"echo": [{"text": "You said {last_user}"}]}))
    scripts = load_scripts(path)
    assert list(scripts) == ["echo"]
    assert scripts["echo"].turns[0].text == "You said {last_user}"


def test_load_scripts_rejects_invalid_json(tmp_path) -> None:
    path = tmp_path / "scripts.json"
    path.write_text("{nope")
    with pytest.raises(ScriptError):
        load_scripts(path)
