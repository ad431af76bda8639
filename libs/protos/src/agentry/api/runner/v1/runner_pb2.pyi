from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Thread(_message.Message):
    __slots__ = ("thread_id", "project_id", "account_id", "name", "created_at", "updated_at", "message_count", "last_run_status")
    THREAD_ID_FIELD_NUMBER: _ClassVar[int]
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_COUNT_FIELD_NUMBER: _ClassVar[int]
    LAST_RUN_STATUS_FIELD_NUMBER: _ClassVar[int]
    thread_id: str
    project_id: str
    account_id: str
    name: str
    created_at: float
    updated_at: float
    message_count: int
    last_run_status: str
    def __init__(self, thread_id: _Optional[str] = ..., project_id: _Optional[str] = ..., account_id: _Optional[str] = ..., name: _Optional[str] = ..., created_at: _Optional[float] = ..., updated_at: _Optional[float] = ..., message_count: _Optional[int] = ..., last_run_status: _Optional[str] = ...) -> None: ...

class ListThreadsRequest(_message.Message):
    __slots__ = ("account_id", "limit", "cursor")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    limit: int
    cursor: str
    def __init__(self, account_id: _Optional[str] = ..., limit: _Optional[int] = ..., cursor: _Optional[str] = ...) -> None: ...

class ListThreadsResponse(_message.Message):
    __slots__ = ("threads", "next_cursor")
    THREADS_FIELD_NUMBER: _ClassVar[int]
    NEXT_CURSOR_FIELD_NUMBER: _ClassVar[int]
    threads: _containers.RepeatedCompositeFieldContainer[Thread]
    next_cursor: str
    def __init__(self, threads: _Optional[_Iterable[_Union[Thread, _Mapping]]] = ..., next_cursor: _Optional[str] = ...) -> None: ...

class UpdateThreadRequest(_message.Message):
    __slots__ = ("account_id", "thread_id", "name")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    THREAD_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    thread_id: str
    name: str
    def __init__(self, account_id: _Optional[str] = ..., thread_id: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class DeleteThreadRequest(_message.Message):
    __slots__ = ("account_id", "thread_id")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    THREAD_ID_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    thread_id: str
    def __init__(self, account_id: _Optional[str] = ..., thread_id: _Optional[str] = ...) -> None: ...

class DeleteThreadResponse(_message.Message):
    __slots__ = ("project_id", "project_deleted")
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    PROJECT_DELETED_FIELD_NUMBER: _ClassVar[int]
    project_id: str
    project_deleted: bool
    def __init__(self, project_id: _Optional[str] = ..., project_deleted: _Optional[bool] = ...) -> None: ...

class DeleteMessageRequest(_message.Message):
    __slots__ = ("account_id", "thread_id", "message_id")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    THREAD_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    thread_id: str
    message_id: str
    def __init__(self, account_id: _Optional[str] = ..., thread_id: _Optional[str] = ..., message_id: _Optional[str] = ...) -> None: ...

class DeleteMessageResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListRunsRequest(_message.Message):
    __slots__ = ("account_id", "thread_id", "limit", "cursor")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    THREAD_ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    thread_id: str
    limit: int
    cursor: str
    def __init__(self, account_id: _Optional[str] = ..., thread_id: _Optional[str] = ..., limit: _Optional[int] = ..., cursor: _Optional[str] = ...) -> None: ...

class ListRunsResponse(_message.Message):
    __slots__ = ("runs", "next_cursor")
    RUNS_FIELD_NUMBER: _ClassVar[int]
    NEXT_CURSOR_FIELD_NUMBER: _ClassVar[int]
    runs: _containers.RepeatedCompositeFieldContainer[Run]
    next_cursor: str
    def __init__(self, runs: _Optional[_Iterable[_Union[Run, _Mapping]]] = ..., next_cursor: _Optional[str] = ...) -> None: ...

class CreateThreadRequest(_message.Message):
    __slots__ = ("account_id", "name")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    name: str
    def __init__(self, account_id: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class GetThreadRequest(_message.Message):
    __slots__ = ("account_id", "thread_id")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    THREAD_ID_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    thread_id: str
    def __init__(self, account_id: _Optional[str] = ..., thread_id: _Optional[str] = ...) -> None: ...

class Message(_message.Message):
    __slots__ = ("message_id", "thread_id", "type", "content_json", "created_at")
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    THREAD_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_JSON_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    message_id: str
    thread_id: str
    type: str
    content_json: str
    created_at: float
    def __init__(self, message_id: _Optional[str] = ..., thread_id: _Optional[str] = ..., type: _Optional[str] = ..., content_json: _Optional[str] = ..., created_at: _Optional[float] = ...) -> None: ...

class AddMessageRequest(_message.Message):
    __slots__ = ("account_id", "thread_id", "content")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    THREAD_ID_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    thread_id: str
    content: str
    def __init__(self, account_id: _Optional[str] = ..., thread_id: _Optional[str] = ..., content: _Optional[str] = ...) -> None: ...

class ListMessagesRequest(_message.Message):
    __slots__ = ("account_id", "thread_id", "limit", "cursor", "order")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    THREAD_ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    thread_id: str
    limit: int
    cursor: str
    order: str
    def __init__(self, account_id: _Optional[str] = ..., thread_id: _Optional[str] = ..., limit: _Optional[int] = ..., cursor: _Optional[str] = ..., order: _Optional[str] = ...) -> None: ...

class ListMessagesResponse(_message.Message):
    __slots__ = ("messages", "next_cursor")
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    NEXT_CURSOR_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[Message]
    next_cursor: str
    def __init__(self, messages: _Optional[_Iterable[_Union[Message, _Mapping]]] = ..., next_cursor: _Optional[str] = ...) -> None: ...

class Run(_message.Message):
    __slots__ = ("agent_run_id", "thread_id", "account_id", "status", "error", "model", "created_at", "started_at", "completed_at", "reasoning_effort", "phase", "phase_detail", "phase_since", "attempt", "finish_reason", "pending_json")
    AGENT_RUN_ID_FIELD_NUMBER: _ClassVar[int]
    THREAD_ID_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_AT_FIELD_NUMBER: _ClassVar[int]
    REASONING_EFFORT_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    PHASE_DETAIL_FIELD_NUMBER: _ClassVar[int]
    PHASE_SINCE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    PENDING_JSON_FIELD_NUMBER: _ClassVar[int]
    agent_run_id: str
    thread_id: str
    account_id: str
    status: str
    error: str
    model: str
    created_at: float
    started_at: float
    completed_at: float
    reasoning_effort: str
    phase: str
    phase_detail: str
    phase_since: float
    attempt: int
    finish_reason: str
    pending_json: str
    def __init__(self, agent_run_id: _Optional[str] = ..., thread_id: _Optional[str] = ..., account_id: _Optional[str] = ..., status: _Optional[str] = ..., error: _Optional[str] = ..., model: _Optional[str] = ..., created_at: _Optional[float] = ..., started_at: _Optional[float] = ..., completed_at: _Optional[float] = ..., reasoning_effort: _Optional[str] = ..., phase: _Optional[str] = ..., phase_detail: _Optional[str] = ..., phase_since: _Optional[float] = ..., attempt: _Optional[int] = ..., finish_reason: _Optional[str] = ..., pending_json: _Optional[str] = ...) -> None: ...

class StartRunRequest(_message.Message):
    __slots__ = ("account_id", "thread_id", "model_name", "prompt", "reasoning_effort", "multitask_strategy", "user_id")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    THREAD_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    REASONING_EFFORT_FIELD_NUMBER: _ClassVar[int]
    MULTITASK_STRATEGY_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    thread_id: str
    model_name: str
    prompt: str
    reasoning_effort: str
    multitask_strategy: str
    user_id: str
    def __init__(self, account_id: _Optional[str] = ..., thread_id: _Optional[str] = ..., model_name: _Optional[str] = ..., prompt: _Optional[str] = ..., reasoning_effort: _Optional[str] = ..., multitask_strategy: _Optional[str] = ..., user_id: _Optional[str] = ...) -> None: ...

class GetRunRequest(_message.Message):
    __slots__ = ("account_id", "agent_run_id")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_RUN_ID_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    agent_run_id: str
    def __init__(self, account_id: _Optional[str] = ..., agent_run_id: _Optional[str] = ...) -> None: ...

class StopRunRequest(_message.Message):
    __slots__ = ("account_id", "agent_run_id")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_RUN_ID_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    agent_run_id: str
    def __init__(self, account_id: _Optional[str] = ..., agent_run_id: _Optional[str] = ...) -> None: ...

class ListRunEventsRequest(_message.Message):
    __slots__ = ("account_id", "agent_run_id", "after_seq")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_RUN_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    agent_run_id: str
    after_seq: int
    def __init__(self, account_id: _Optional[str] = ..., agent_run_id: _Optional[str] = ..., after_seq: _Optional[int] = ...) -> None: ...

class RunEvent(_message.Message):
    __slots__ = ("seq", "data", "terminal")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    TERMINAL_FIELD_NUMBER: _ClassVar[int]
    seq: int
    data: bytes
    terminal: bool
    def __init__(self, seq: _Optional[int] = ..., data: _Optional[bytes] = ..., terminal: _Optional[bool] = ...) -> None: ...

class ListRunEventsResponse(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[RunEvent]
    def __init__(self, events: _Optional[_Iterable[_Union[RunEvent, _Mapping]]] = ...) -> None: ...

class ListThreadRunsRequest(_message.Message):
    __slots__ = ("account_id", "thread_id", "after_thread_seq", "limit")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    THREAD_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_THREAD_SEQ_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    thread_id: str
    after_thread_seq: int
    limit: int
    def __init__(self, account_id: _Optional[str] = ..., thread_id: _Optional[str] = ..., after_thread_seq: _Optional[int] = ..., limit: _Optional[int] = ...) -> None: ...

class ThreadRun(_message.Message):
    __slots__ = ("thread_seq", "run")
    THREAD_SEQ_FIELD_NUMBER: _ClassVar[int]
    RUN_FIELD_NUMBER: _ClassVar[int]
    thread_seq: int
    run: Run
    def __init__(self, thread_seq: _Optional[int] = ..., run: _Optional[_Union[Run, _Mapping]] = ...) -> None: ...

class ListThreadRunsResponse(_message.Message):
    __slots__ = ("runs",)
    RUNS_FIELD_NUMBER: _ClassVar[int]
    runs: _containers.RepeatedCompositeFieldContainer[ThreadRun]
    def __init__(self, runs: _Optional[_Iterable[_Union[ThreadRun, _Mapping]]] = ...) -> None: ...

class ResumeRunRequest(_message.Message):
    __slots__ = ("account_id", "agent_run_id", "content", "decision")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_RUN_ID_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    agent_run_id: str
    content: str
    decision: str
    def __init__(self, account_id: _Optional[str] = ..., agent_run_id: _Optional[str] = ..., content: _Optional[str] = ..., decision: _Optional[str] = ...) -> None: ...
