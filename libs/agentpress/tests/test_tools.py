from __future__ import annotations

import pytest

from agentpress import ModelRetry, RunContext, ToolRegistry, UserError, tool


@tool
async def add(a: int, b: int = 2) -> int:
    """Add two numbers.

    Args:
        a: The first number.
        b: The second number,
            continued on a second line.
    """
    return a + b


@tool
async def where(ctx: RunContext, label: str) -> str:
    """Report the run id."""
    return f"{label}:{ctx.run_id}"


@tool
def picky(value: str) -> str:
    """Ask for a retry unless the value is right."""
    if value != "yes":
        raise ModelRetry("say yes")
    return "ok"


@tool
async def broken() -> str:
    """Always fails."""
    raise RuntimeError("disk on fire")


def test_schema_from_hints_and_docstring():
    schema = add.json_schema()["function"]
    assert schema["name"] == "add"
    assert schema["description"] == "Add two numbers."
    props = schema["parameters"]["properties"]
    assert props["a"] == {"type": "integer", "description": "The first number."}
    assert props["b"]["default"] == 2
    assert props["b"]["description"] == "The second number, continued on a second line."
    assert schema["parameters"]["required"] == ["a"]


def test_context_parameter_is_hidden_from_the_model():
    assert list(where.json_schema()["function"]["parameters"]["properties"]) == ["label"]
    assert where.takes_context


def test_xml_usage_lists_parameters():
    usage = add.xml_usage()
    assert '<invoke name="add">' in usage
    assert '<parameter name="a">' in usage and "required" in usage and "optional" in usage


@pytest.mark.parametrize(
    "define",
    [
        lambda: tool(lambda x: x),  # no description, no hints
        lambda: tool(description="d")(lambda x: x),  # no type hint
        lambda: tool(name="bad name!", description="d")(lambda: None),
    ],
)
def test_definition_errors_are_user_errors(define):
    with pytest.raises(UserError):
        define()


def test_context_must_come_first():
    async def late(label: str, ctx: RunContext) -> str:
        """Wrong order."""
        return label

    with pytest.raises(UserError):
        tool(late)


def test_registry_rejects_duplicates_and_non_tools():
    with pytest.raises(UserError):
        ToolRegistry([add, add])
    with pytest.raises(UserError):
        ToolRegistry([lambda: None])  # type: ignore[list-item]


async def test_three_failures_stay_distinct(harness):
    reg = ToolRegistry([add, where, picky, broken])
    ctx = harness.ctx
    ok = await reg.execute(ctx, "add", '{"a": 1, "b": 5}', "native")
    assert (ok.output, ok.error, ok.arguments) == ("6", None, {"a": 1, "b": 5})
    assert (await reg.execute(ctx, "where", '{"label": "x"}', "native")).output == "x:r1"
    retry = await reg.execute(ctx, "picky", '{"value": "no"}', "native")
    assert (retry.error, retry.output) == ("retry", "say yes")
    bad_args = await reg.execute(ctx, "add", '{"a": "one"}', "native")
    assert bad_args.error == "invalid_call" and "a:" in bad_args.output
    extra = await reg.execute(ctx, "add", '{"a": 1, "c": 1}', "native")
    assert extra.error == "invalid_call"
    not_json = await reg.execute(ctx, "add", '{"a": 1', "native")
    assert not_json.error == "invalid_call" and "not valid JSON" in not_json.output
    unknown = await reg.execute(ctx, "nope", "{}", "native")
    assert unknown.error == "invalid_call" and "unknown tool" in unknown.output
    failed = await reg.execute(ctx, "broken", "", "native")
    assert (failed.error, failed.output) == ("tool_failed", "RuntimeError: disk on fire")


async def test_xml_arguments_are_typed_by_the_schema_not_guessed(harness):
    @tool
    async def echo(text: str, n: int, tags: list[str] | None = None) -> str:
        """Echo."""
        return f"{text!r} {n!r} {tags!r}"

    reg = ToolRegistry([echo])
    out = await reg.execute(harness.ctx, "echo", '{"text": "42", "n": "7", "tags": "[\\"a\\"]"}', "xml")
    assert out.output == "'42' 7 ['a']"
