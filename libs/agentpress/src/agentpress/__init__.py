"""agentpress: the Agentry agent framework (conversation, tools, parsing of model output)."""

from agentpress.builtin_tools import default_tools
from agentpress.context import ContextConfig
from agentpress.errors import AgentpressError, ModelCallError, ModelRetry, ModelTransientError, ToolCallError, UserError
from agentpress.events import (
    Event,
    FinishReason,
    MessageCompleted,
    PhaseChanged,
    ReasoningDelta,
    RequiresAction,
    RunFinished,
    RunResumed,
    RunStarted,
    TextDelta,
    ToolCallDelta,
    ToolCallFinished,
    ToolCallStarted,
    UsageReported,
    event_from_dict,
)
from agentpress.execution import ToolExecution
from agentpress.loop import Agent, RunResult
from agentpress.memory import MemoryMessageStore, MemorySandbox, RecordingEventSink, RecordingUsageSink
from agentpress.messages import (
    AssistantMessage,
    Message,
    StatusMessage,
    ToolCall,
    ToolResultMessage,
    UserMessage,
    message_from_dict,
    message_from_json,
)
from agentpress.models import LiteLLMModel, Model, ModelDelta, ModelRequest, ModelSettings, RetryPolicy, ToolCallChunk
from agentpress.ports import (
    EventSink,
    ExecResult,
    FileEntry,
    MessageStore,
    ProcessState,
    RunContext,
    SandboxPort,
    Usage,
    UsageSink,
)
from agentpress.recovery import close_interrupted_calls
from agentpress.provider_rules import ProviderRejection
from agentpress.retries import ErrorKind, RetryBudget
from agentpress.testing import FunctionModel, ProviderRejected, ScriptedCall, ScriptedModel, ScriptedReply, xml_call
from agentpress.tools import Tool, ToolRegistry, tool

__all__ = [
    "Agent", "AgentpressError", "ErrorKind", "ProviderRejected", "ProviderRejection", "RetryBudget", "AssistantMessage", "ContextConfig", "Event", "EventSink", "ExecResult",
    "FileEntry", "FinishReason", "FunctionModel", "LiteLLMModel", "MemoryMessageStore", "MemorySandbox", "Message",
    "MessageCompleted", "PhaseChanged", "RequiresAction", "RunResumed", "close_interrupted_calls",
    "MessageStore", "Model", "ModelCallError", "ModelDelta", "ModelRequest", "ModelRetry", "ModelSettings",
    "ModelTransientError", "ProcessState", "ReasoningDelta", "RecordingEventSink", "RecordingUsageSink", "RetryPolicy", "RunContext", "RunFinished",
    "RunResult", "RunStarted", "SandboxPort", "ScriptedCall", "ScriptedModel", "ScriptedReply",
    "StatusMessage", "TextDelta", "Tool", "ToolCall", "ToolCallChunk", "ToolCallDelta", "ToolCallError",
    "ToolCallFinished", "ToolCallStarted", "ToolExecution", "ToolRegistry", "ToolResultMessage", "Usage",
    "UsageReported", "UsageSink", "UserError", "UserMessage", "default_tools", "event_from_dict",
    "message_from_dict", "message_from_json", "tool", "xml_call",
]
