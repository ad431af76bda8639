"""An OpenAI-compatible scripted LLM server for tests, benchmarks and offline demos."""

from .app import LoggedRequest, create_app
from .builtin import BUILTIN_SCRIPTS, DEMO_MODEL, DEMO_SCRIPT
from .process import FakeLLMProcess
from .script import Script, ScriptedError, ScriptedToolCall, ScriptError, Turn, load_scripts
from .server import FakeLLMServer, ThreadedFakeLLMServer

__all__ = [
    "BUILTIN_SCRIPTS",
    "DEMO_MODEL",
    "DEMO_SCRIPT",
    "FakeLLMProcess",
    "FakeLLMServer",
    "LoggedRequest",
    "Script",
    "ScriptError",
    "ScriptedError",
    "ScriptedToolCall",
    "ThreadedFakeLLMServer",
    "Turn",
    "create_app",
    "load_scripts",
]
