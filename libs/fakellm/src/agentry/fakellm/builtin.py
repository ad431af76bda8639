"""Scripts every fake server knows, whatever else it is given."""

from __future__ import annotations

from .script import Script, ScriptedToolCall, Turn

DEMO_MODEL = "agentry-demo"

DEMO_SCRIPT = Script(
    turns=(
        Turn(
            text="[scripted demo model] I will look around the sandbox first.",
            tool_calls=(
                ScriptedToolCall("run_command", {"command": "echo 'Hello from the Agentry sandbox' && uname -s"}),
            ),
        ),
        Turn(
            text="Now I will write a note.",
            tool_calls=(
                ScriptedToolCall("create_file", {"path": "notes/hello.txt", "content": "You asked: {last_user}\n"}),
            ),
        ),
        Turn(
            text=(
                "[scripted demo model] Done: I ran a command in the sandbox and wrote notes/hello.txt. "
                "No LLM key is configured, so this reply is scripted; "
                "set OPENAI_API_KEY or ANTHROPIC_API_KEY to use a real model."
            )
        ),
    )
)

BUILTIN_SCRIPTS: dict[str, Script] = {DEMO_MODEL: DEMO_SCRIPT}
