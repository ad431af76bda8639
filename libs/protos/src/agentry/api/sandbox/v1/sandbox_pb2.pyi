from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Sandbox(_message.Message):
    __slots__ = ("sandbox_id", "account_id", "project_id", "provider", "state")
    SANDBOX_ID_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    sandbox_id: str
    account_id: str
    project_id: str
    provider: str
    state: str
    def __init__(self, sandbox_id: _Optional[str] = ..., account_id: _Optional[str] = ..., project_id: _Optional[str] = ..., provider: _Optional[str] = ..., state: _Optional[str] = ...) -> None: ...

class CreateSandboxRequest(_message.Message):
    __slots__ = ("account_id", "project_id")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    project_id: str
    def __init__(self, account_id: _Optional[str] = ..., project_id: _Optional[str] = ...) -> None: ...

class GetSandboxRequest(_message.Message):
    __slots__ = ("account_id", "sandbox_id")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    SANDBOX_ID_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    sandbox_id: str
    def __init__(self, account_id: _Optional[str] = ..., sandbox_id: _Optional[str] = ...) -> None: ...

class ExecRequest(_message.Message):
    __slots__ = ("account_id", "sandbox_id", "command", "cwd", "timeout_seconds", "env")
    class EnvEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    SANDBOX_ID_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    CWD_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    sandbox_id: str
    command: str
    cwd: str
    timeout_seconds: float
    env: _containers.ScalarMap[str, str]
    def __init__(self, account_id: _Optional[str] = ..., sandbox_id: _Optional[str] = ..., command: _Optional[str] = ..., cwd: _Optional[str] = ..., timeout_seconds: _Optional[float] = ..., env: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ExecChunk(_message.Message):
    __slots__ = ("output", "exit")
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    EXIT_FIELD_NUMBER: _ClassVar[int]
    output: bytes
    exit: ExecExit
    def __init__(self, output: _Optional[bytes] = ..., exit: _Optional[_Union[ExecExit, _Mapping]] = ...) -> None: ...

class ExecExit(_message.Message):
    __slots__ = ("exit_code", "timed_out", "duration_seconds")
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    TIMED_OUT_FIELD_NUMBER: _ClassVar[int]
    DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    exit_code: int
    timed_out: bool
    duration_seconds: float
    def __init__(self, exit_code: _Optional[int] = ..., timed_out: _Optional[bool] = ..., duration_seconds: _Optional[float] = ...) -> None: ...

class ReadFileRequest(_message.Message):
    __slots__ = ("account_id", "sandbox_id", "path")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    SANDBOX_ID_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    sandbox_id: str
    path: str
    def __init__(self, account_id: _Optional[str] = ..., sandbox_id: _Optional[str] = ..., path: _Optional[str] = ...) -> None: ...

class ReadFileResponse(_message.Message):
    __slots__ = ("content",)
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    content: bytes
    def __init__(self, content: _Optional[bytes] = ...) -> None: ...

class WriteFileRequest(_message.Message):
    __slots__ = ("account_id", "sandbox_id", "path", "content")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    SANDBOX_ID_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    sandbox_id: str
    path: str
    content: bytes
    def __init__(self, account_id: _Optional[str] = ..., sandbox_id: _Optional[str] = ..., path: _Optional[str] = ..., content: _Optional[bytes] = ...) -> None: ...

class WriteFileResponse(_message.Message):
    __slots__ = ("size",)
    SIZE_FIELD_NUMBER: _ClassVar[int]
    size: int
    def __init__(self, size: _Optional[int] = ...) -> None: ...

class ListFilesRequest(_message.Message):
    __slots__ = ("account_id", "sandbox_id", "path")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    SANDBOX_ID_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    sandbox_id: str
    path: str
    def __init__(self, account_id: _Optional[str] = ..., sandbox_id: _Optional[str] = ..., path: _Optional[str] = ...) -> None: ...

class FileInfo(_message.Message):
    __slots__ = ("name", "path", "is_dir", "size", "modified_at")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    IS_DIR_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    MODIFIED_AT_FIELD_NUMBER: _ClassVar[int]
    name: str
    path: str
    is_dir: bool
    size: int
    modified_at: float
    def __init__(self, name: _Optional[str] = ..., path: _Optional[str] = ..., is_dir: _Optional[bool] = ..., size: _Optional[int] = ..., modified_at: _Optional[float] = ...) -> None: ...

class ListFilesResponse(_message.Message):
    __slots__ = ("files",)
    FILES_FIELD_NUMBER: _ClassVar[int]
    files: _containers.RepeatedCompositeFieldContainer[FileInfo]
    def __init__(self, files: _Optional[_Iterable[_Union[FileInfo, _Mapping]]] = ...) -> None: ...

class DeleteFileRequest(_message.Message):
    __slots__ = ("account_id", "sandbox_id", "path", "recursive")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    SANDBOX_ID_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    RECURSIVE_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    sandbox_id: str
    path: str
    recursive: bool
    def __init__(self, account_id: _Optional[str] = ..., sandbox_id: _Optional[str] = ..., path: _Optional[str] = ..., recursive: _Optional[bool] = ...) -> None: ...

class DeleteFileResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StartProcessRequest(_message.Message):
    __slots__ = ("account_id", "sandbox_id", "command", "cwd")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    SANDBOX_ID_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    CWD_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    sandbox_id: str
    command: str
    cwd: str
    def __init__(self, account_id: _Optional[str] = ..., sandbox_id: _Optional[str] = ..., command: _Optional[str] = ..., cwd: _Optional[str] = ...) -> None: ...

class Process(_message.Message):
    __slots__ = ("process_id", "running", "exit_code")
    PROCESS_ID_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    process_id: str
    running: bool
    exit_code: int
    def __init__(self, process_id: _Optional[str] = ..., running: _Optional[bool] = ..., exit_code: _Optional[int] = ...) -> None: ...

class ReadProcessRequest(_message.Message):
    __slots__ = ("account_id", "sandbox_id", "process_id", "offset")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    SANDBOX_ID_FIELD_NUMBER: _ClassVar[int]
    PROCESS_ID_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    sandbox_id: str
    process_id: str
    offset: int
    def __init__(self, account_id: _Optional[str] = ..., sandbox_id: _Optional[str] = ..., process_id: _Optional[str] = ..., offset: _Optional[int] = ...) -> None: ...

class ReadProcessResponse(_message.Message):
    __slots__ = ("process", "output", "next_offset")
    PROCESS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    NEXT_OFFSET_FIELD_NUMBER: _ClassVar[int]
    process: Process
    output: bytes
    next_offset: int
    def __init__(self, process: _Optional[_Union[Process, _Mapping]] = ..., output: _Optional[bytes] = ..., next_offset: _Optional[int] = ...) -> None: ...

class StopProcessRequest(_message.Message):
    __slots__ = ("account_id", "sandbox_id", "process_id")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    SANDBOX_ID_FIELD_NUMBER: _ClassVar[int]
    PROCESS_ID_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    sandbox_id: str
    process_id: str
    def __init__(self, account_id: _Optional[str] = ..., sandbox_id: _Optional[str] = ..., process_id: _Optional[str] = ...) -> None: ...
