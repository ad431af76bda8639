"""An OpenAI-compatible scripted LLM server for tests, benchmarks and offline demos."""

from .app import create_app
from .builtin import BUILTIN_SCRIPTS, DEMO_MODEL, DEMO_SCRIPT
from .script import Script, ScriptedToolCall, ScriptError, Turn, load_scripts
from .process import FakeLLMProcess
from .server import FakeLLMServer, ThreadedFakeLLMServer

__all__ = [
    "BUILTIN_SCRIPTS",
    "DEMO_MODEL",
    "DEMO_SCRIPT",
    "FakeLLMProcess",
    "FakeLLMServer",
    "Script",
    "ScriptError",
    "ScriptedToolCall",
    "ThreadedFakeLLMServer",
    "Turn",
    "create_app",
    "load_scripts",
]
