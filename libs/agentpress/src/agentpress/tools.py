"""The @tool decorator and the per-agent registry: schema from type hints, validated calls."""

from __future__ import annotations

import functools
import inspect
import re
import time
import typing
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from agentpress.errors import ModelRetry, ToolCallError, UserError
from agentpress.ports import RunContext

Terminates = Literal["completed", "asked_user"]
_NAME_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_-]{0,63}$")
_ARG_LINE = re.compile(r"^\s*(\*{0,2}\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    function: Callable[..., Any]
    args_model: type[BaseModel]
    takes_context: bool
    terminates: Terminates | None = None
    # Safe to run again with the same arguments (read-only tools): a call interrupted by a lost
    # worker is simply made again after the run resumes. Any other call is closed as interrupted.
    idempotent: bool = False
    # The host asks the user before running a call (human in the loop): the run pauses with the
    # call pending, and continues with the call run (approved) or refused (rejected).
    requires_approval: bool = False

    def json_schema(self) -> dict[str, Any]:
        """OpenAI function-calling schema, the format LiteLLM translates for every provider.

        A fresh dict per call (callers may change it), decoded from a per-definition cache:
        pydantic's schema generation costs ~0.15 ms per tool, on every model call otherwise.
        """
        return orjson.loads(_schema_json(self.name, self.description, self.args_model))

    def xml_usage(self) -> str:
        """How to call this tool in the XML format, for models without native tool calling."""
        lines = [f'<invoke name="{self.name}">']
        for pname, finfo in self.args_model.model_fields.items():
            req = "required" if finfo.is_required() else "optional"
            desc = f" ({req}{': ' + finfo.description if finfo.description else ''})"
            lines.append(f'<parameter name="{pname}">...{desc}</parameter>')
        lines.append("</invoke>")
        return f"## {self.name}\n{self.description}\n" + "\n".join(lines)

    def coerce_xml_arguments(self, raw: dict[str, str]) -> dict[str, Any]:
        """XML parameters are text; decode JSON only where the declared type is not a string.

        Suna guessed types from the value, so a numeric-looking string argument changed type.
        """
        out: dict[str, Any] = {}
        for key, value in raw.items():
            finfo = self.args_model.model_fields.get(key)
            if finfo is None or finfo.annotation is str:
                out[key] = value
                continue
            try:
                out[key] = orjson.loads(value)
            except orjson.JSONDecodeError:
                out[key] = value
        return out

    def validate(self, arguments: dict[str, Any]) -> BaseModel:
        try:
            return self.args_model.model_validate(arguments)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or '(arguments)'}: {err['msg']}" for err in exc.errors()
            )
            raise ToolCallError(f"invalid arguments for tool {self.name!r}: {problems}") from None

    async def call(self, ctx: RunContext, arguments: dict[str, Any]) -> str:
        """Validate and run; raises ToolCallError, ModelRetry, or whatever the tool raises."""
        args = self.validate(arguments)
        kwargs = {name: getattr(args, name) for name in self.args_model.model_fields}
        result = self.function(ctx, **kwargs) if self.takes_context else self.function(**kwargs)
        if inspect.isawaitable(result):
            result = await result
        if result is None:
            return ""
        if isinstance(result, str):
            return result
        return orjson.dumps(result, default=str, option=orjson.OPT_INDENT_2).decode()


@functools.lru_cache(maxsize=1024)
def _schema_json(name: str, description: str, args_model: type[BaseModel]) -> bytes:
    params = args_model.model_json_schema()
    params.pop("title", None)
    for prop in params.get("properties", {}).values():
        prop.pop("title", None)
    params.setdefault("properties", {})
    return orjson.dumps(
        {
            "type": "function",
            "function": {"name": name, "description": description, "parameters": params},
        }
    )


def _parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """Google-style docstring → (description, {param: description})."""
    doc = inspect.cleandoc(doc)
    description_lines: list[str] = []
    params: dict[str, str] = {}
    section = "description"
    current: str | None = None
    for line in doc.splitlines():
        stripped = line.strip()
        if stripped.lower() in {"args:", "arguments:", "parameters:"}:
            section, current = "args", None
            continue
        if stripped.lower() in {"returns:", "raises:", "yields:", "examples:", "example:"}:
            section = "other"
            continue
        if section == "description":
            description_lines.append(line)
        elif section == "args" and stripped:
            match = _ARG_LINE.match(line)
            if match and (line.startswith(stripped) or current is None or _indent(line) <= 4):
                name: str = match.group(1).lstrip("*")
                current = name
                params[name] = match.group(2).strip()
            elif current is not None:
                params[current] = f"{params[current]} {stripped}".strip()
    return "\n".join(description_lines).strip(), params


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _is_context(annotation: Any) -> bool:
    return annotation is RunContext or annotation == "RunContext"


def _build(
    func: Callable[..., Any],
    name: str | None,
    description: str | None,
    terminates: Terminates | None,
    idempotent: bool = False,
    requires_approval: bool = False,
) -> Tool:
    tool_name = name or func.__name__
    if not _NAME_RE.match(tool_name):
        raise UserError(f"tool name {tool_name!r} must match {_NAME_RE.pattern}")
    doc_description, doc_params = _parse_docstring(func.__doc__ or "")
    tool_description = description or doc_description
    if not tool_description:
        raise UserError(f"tool {tool_name!r} needs a description (docstring or description=)")
    try:
        hints = typing.get_type_hints(func)
    except Exception as exc:  # unresolvable forward references are a definition bug
        raise UserError(f"tool {tool_name!r}: cannot resolve type hints: {exc}") from exc
    params = list(inspect.signature(func).parameters.values())
    takes_context = bool(params) and _is_context(hints.get(params[0].name, params[0].annotation))
    if takes_context:
        params = params[1:]
    fields: dict[str, Any] = {}
    for param in params:
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD, param.POSITIONAL_ONLY):
            raise UserError(f"tool {tool_name!r}: parameter {param.name!r} must be a named parameter")
        if param.name not in hints:
            raise UserError(f"tool {tool_name!r}: parameter {param.name!r} needs a type hint")
        if _is_context(hints[param.name]):
            raise UserError(f"tool {tool_name!r}: RunContext must be the first parameter")
        default = ... if param.default is param.empty else param.default
        fields[param.name] = (hints[param.name], Field(default, description=doc_params.get(param.name)))
    model = create_model(  # type: ignore[call-overload]
        f"{tool_name}_args", __config__=ConfigDict(extra="forbid"), **fields
    )
    return Tool(tool_name, tool_description, func, model, takes_context, terminates, idempotent, requires_approval)


def tool(
    func: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    description: str | None = None,
    terminates: Terminates | None = None,
    idempotent: bool = False,
    requires_approval: bool = False,
) -> Any:
    """Turn a function into a Tool. Use bare (`@tool`) or with options (`@tool(name=...)`).

    A first parameter annotated `RunContext` receives the run context and is hidden from the model.
    `terminates` ends the run after the step in which the tool was called. `idempotent` declares
    that running the call twice is harmless (read-only tools); a runner that loses a worker
    mid-call re-runs such calls and closes every other one as interrupted. `requires_approval`
    pauses the run before each call until the user approves or rejects it (see Agent).
    """
    if func is not None:
        return _build(func, name, description, terminates, idempotent, requires_approval)
    return lambda f: _build(f, name, description, terminates, idempotent, requires_approval)


@dataclass(frozen=True)
class ToolOutcome:
    output: str
    error: str | None
    arguments: dict[str, Any]
    duration_ms: float


class ToolRegistry:
    """The tools one agent may call. No global state: each agent builds its own."""

    def __init__(self, tools: Iterable[Tool] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        for t in tools:
            self.add(t)

    def add(self, t: Tool) -> None:
        if not isinstance(t, Tool):
            raise UserError(f"{t!r} is not a Tool; decorate it with @tool")
        if t.name in self._tools:
            raise UserError(f"two tools are named {t.name!r}")
        self._tools[t.name] = t

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    @property
    def names(self) -> list[str]:
        return list(self._tools)

    def __len__(self) -> int:
        return len(self._tools)

    def __iter__(self) -> Iterator[Tool]:
        return iter(self._tools.values())

    def schemas(self) -> list[dict[str, Any]]:
        return [t.json_schema() for t in self._tools.values()]

    def xml_instructions(self) -> str:
        if not self._tools:
            return ""
        usage = "\n\n".join(t.xml_usage() for t in self._tools.values())
        return (
            "You can call tools by writing XML in your reply, in exactly this format:\n"
            '<function_calls>\n<invoke name="TOOL_NAME">\n<parameter name="PARAM">VALUE</parameter>\n'
            "</invoke>\n</function_calls>\n"
            "Several <invoke> elements may share one block. Results come back in the next message.\n\n"
            f"Available tools:\n\n{usage}"
        )

    async def execute(self, ctx: RunContext, name: str, arguments: str | dict[str, str], fmt: str) -> ToolOutcome:
        """Run one call. Never raises except CancelledError: every failure becomes an outcome."""
        start = time.perf_counter()
        parsed: dict[str, Any] = {}

        def done(output: str, error: str | None) -> ToolOutcome:
            return ToolOutcome(output, error, parsed, (time.perf_counter() - start) * 1000)

        try:
            t = self._tools.get(name)
            if t is None:
                raise ToolCallError(f"unknown tool {name!r}; available tools: {', '.join(self._tools)}")
            parsed = _decode_arguments(t, arguments, fmt)
            return done(await t.call(ctx, parsed), None)
        except ToolCallError as exc:
            return done(str(exc), "invalid_call")
        except ModelRetry as exc:
            return done(exc.message, "retry")
        except Exception as exc:  # noqa: BLE001 - a failing tool is reported to the model, the run goes on
            return done(f"{type(exc).__name__}: {exc}", "tool_failed")


def _decode_arguments(t: Tool, arguments: str | dict[str, str], fmt: str) -> dict[str, Any]:
    if isinstance(arguments, dict):
        return t.coerce_xml_arguments(arguments) if fmt == "xml" else dict(arguments)
    if not arguments.strip():
        return {}
    try:
        value = orjson.loads(arguments)
    except orjson.JSONDecodeError as exc:
        raise ToolCallError(f"arguments for tool {t.name!r} are not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ToolCallError(f"arguments for tool {t.name!r} must be a JSON object")
    return t.coerce_xml_arguments(value) if fmt == "xml" else value
