from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SandboxSpec(_message.Message):
    __slots__ = ("image", "snapshot", "cpu", "memory_mb", "disk_mb", "env", "labels", "network")
    class EnvEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    CPU_FIELD_NUMBER: _ClassVar[int]
    MEMORY_MB_FIELD_NUMBER: _ClassVar[int]
    DISK_MB_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    image: str
    snapshot: str
    cpu: int
    memory_mb: int
    disk_mb: int
    env: _containers.ScalarMap[str, str]
    labels: _containers.ScalarMap[str, str]
    network: bool
    def __init__(self, image: _Optional[str] = ..., snapshot: _Optional[str] = ..., cpu: _Optional[int] = ..., memory_mb: _Optional[int] = ..., disk_mb: _Optional[int] = ..., env: _Optional[_Mapping[str, str]] = ..., labels: _Optional[_Mapping[str, str]] = ..., network: _Optional[bool] = ...) -> None: ...

class Sandbox(_message.Message):
    __slots__ = ("sandbox_id", "account_id", "project_id", "provider", "state", "spec", "created_at", "last_used_at", "state_changed_at", "error")
    SANDBOX_ID_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_USED_AT_FIELD_NUMBER: _ClassVar[int]
    STATE_CHANGED_AT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    sandbox_id: str
    account_id: str
    project_id: str
    provider: str
    state: str
    spec: SandboxSpec
    created_at: float
    last_used_at: float
    state_changed_at: float
    error: str
    def __init__(self, sandbox_id: _Optional[str] = ..., account_id: _Optional[str] = ..., project_id: _Optional[str] = ..., provider: _Optional[str] = ..., state: _Optional[str] = ..., spec: _Optional[_Union[SandboxSpec, _Mapping]] = ..., created_at: _Optional[float] = ..., last_used_at: _Optional[float] = ..., state_changed_at: _Optional[float] = ..., error: _Optional[str] = ...) -> None: ...

class CreateSandboxRequest(_message.Message):
    __slots__ = ("account_id", "project_id", "spec", "lazy")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    LAZY_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    project_id: str
    spec: SandboxSpec
    lazy: bool
    def __init__(self, account_id: _Optional[str] = ..., project_id: _Optional[str] = ..., spec: _Optional[_Union[SandboxSpec, _Mapping]] = ..., lazy: _Optional[bool] = ...) -> None: ...

class GetSandboxRequest(_message.Message):
    __slots__ = ("account_id", "sandbox_id")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    SANDBOX_ID_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    sandbox_id: str
    def __init__(self, account_id: _Optional[str] = ..., sandbox_id: _Optional[str] = ...) -> None: ...

class SandboxRequest(_message.Message):
    __slots__ = ("account_id", "sandbox_id")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    SANDBOX_ID_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    sandbox_id: str
    def __init__(self, account_id: _Optional[str] = ..., sandbox_id: _Optional[str] = ...) -> None: ...

class ListSandboxesRequest(_message.Message):
    __slots__ = ("account_id", "project_id")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    project_id: str
    def __init__(self, account_id: _Optional[str] = ..., project_id: _Optional[str] = ...) -> None: ...

class ListSandboxesResponse(_message.Message):
    __slots__ = ("sandboxes",)
    SANDBOXES_FIELD_NUMBER: _ClassVar[int]
    sandboxes: _containers.RepeatedCompositeFieldContainer[Sandbox]
    def __init__(self, sandboxes: _Optional[_Iterable[_Union[Sandbox, _Mapping]]] = ...) -> None: ...

class DeleteSandboxResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetPreviewLinkRequest(_message.Message):
    __slots__ = ("account_id", "sandbox_id", "port")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    SANDBOX_ID_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    sandbox_id: str
    port: int
    def __init__(self, account_id: _Optional[str] = ..., sandbox_id: _Optional[str] = ..., port: _Optional[int] = ...) -> None: ...

class PreviewLink(_message.Message):
    __slots__ = ("url", "token", "upstream_url")
    URL_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_URL_FIELD_NUMBER: _ClassVar[int]
    url: str
    token: str
    upstream_url: str
    def __init__(self, url: _Optional[str] = ..., token: _Optional[str] = ..., upstream_url: _Optional[str] = ...) -> None: ...

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
    __slots__ = ("exit_code", "timed_out", "duration_seconds", "truncated")
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    TIMED_OUT_FIELD_NUMBER: _ClassVar[int]
    DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    exit_code: int
    timed_out: bool
    duration_seconds: float
    truncated: bool
    def __init__(self, exit_code: _Optional[int] = ..., timed_out: _Optional[bool] = ..., duration_seconds: _Optional[float] = ..., truncated: _Optional[bool] = ...) -> None: ...

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

class FileChunk(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

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

class UploadFileHeader(_message.Message):
    __slots__ = ("account_id", "sandbox_id", "path")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    SANDBOX_ID_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    sandbox_id: str
    path: str
    def __init__(self, account_id: _Optional[str] = ..., sandbox_id: _Optional[str] = ..., path: _Optional[str] = ...) -> None: ...

class UploadFileChunk(_message.Message):
    __slots__ = ("header", "data")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    header: UploadFileHeader
    data: bytes
    def __init__(self, header: _Optional[_Union[UploadFileHeader, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

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
    __slots__ = ("name", "path", "is_dir", "size", "modified_at", "mode")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    IS_DIR_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    MODIFIED_AT_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    name: str
    path: str
    is_dir: bool
    size: int
    modified_at: float
    mode: int
    def __init__(self, name: _Optional[str] = ..., path: _Optional[str] = ..., is_dir: _Optional[bool] = ..., size: _Optional[int] = ..., modified_at: _Optional[float] = ..., mode: _Optional[int] = ...) -> None: ...

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

class MakeDirectoryRequest(_message.Message):
    __slots__ = ("account_id", "sandbox_id", "path")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    SANDBOX_ID_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    sandbox_id: str
    path: str
    def __init__(self, account_id: _Optional[str] = ..., sandbox_id: _Optional[str] = ..., path: _Optional[str] = ...) -> None: ...

class MoveFileRequest(_message.Message):
    __slots__ = ("account_id", "sandbox_id", "source", "destination")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    SANDBOX_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    sandbox_id: str
    source: str
    destination: str
    def __init__(self, account_id: _Optional[str] = ..., sandbox_id: _Optional[str] = ..., source: _Optional[str] = ..., destination: _Optional[str] = ...) -> None: ...

class StartProcessRequest(_message.Message):
    __slots__ = ("account_id", "sandbox_id", "command", "cwd", "env", "run_id")
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
    ENV_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    sandbox_id: str
    command: str
    cwd: str
    env: _containers.ScalarMap[str, str]
    run_id: str
    def __init__(self, account_id: _Optional[str] = ..., sandbox_id: _Optional[str] = ..., command: _Optional[str] = ..., cwd: _Optional[str] = ..., env: _Optional[_Mapping[str, str]] = ..., run_id: _Optional[str] = ...) -> None: ...

class Process(_message.Message):
    __slots__ = ("process_id", "running", "exit_code", "command", "run_id")
    PROCESS_ID_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    process_id: str
    running: bool
    exit_code: int
    command: str
    run_id: str
    def __init__(self, process_id: _Optional[str] = ..., running: _Optional[bool] = ..., exit_code: _Optional[int] = ..., command: _Optional[str] = ..., run_id: _Optional[str] = ...) -> None: ...

class ListProcessesRequest(_message.Message):
    __slots__ = ("account_id", "sandbox_id")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    SANDBOX_ID_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    sandbox_id: str
    def __init__(self, account_id: _Optional[str] = ..., sandbox_id: _Optional[str] = ...) -> None: ...

class ListProcessesResponse(_message.Message):
    __slots__ = ("processes",)
    PROCESSES_FIELD_NUMBER: _ClassVar[int]
    processes: _containers.RepeatedCompositeFieldContainer[Process]
    def __init__(self, processes: _Optional[_Iterable[_Union[Process, _Mapping]]] = ...) -> None: ...

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

class SendProcessInputRequest(_message.Message):
    __slots__ = ("account_id", "sandbox_id", "process_id", "data", "close")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    SANDBOX_ID_FIELD_NUMBER: _ClassVar[int]
    PROCESS_ID_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    CLOSE_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    sandbox_id: str
    process_id: str
    data: bytes
    close: bool
    def __init__(self, account_id: _Optional[str] = ..., sandbox_id: _Optional[str] = ..., process_id: _Optional[str] = ..., data: _Optional[bytes] = ..., close: _Optional[bool] = ...) -> None: ...

class StopProcessRequest(_message.Message):
    __slots__ = ("account_id", "sandbox_id", "process_id")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    SANDBOX_ID_FIELD_NUMBER: _ClassVar[int]
    PROCESS_ID_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    sandbox_id: str
    process_id: str
    def __init__(self, account_id: _Optional[str] = ..., sandbox_id: _Optional[str] = ..., process_id: _Optional[str] = ...) -> None: ...

class KillRunProcessesRequest(_message.Message):
    __slots__ = ("account_id", "sandbox_id", "run_id")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    SANDBOX_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    sandbox_id: str
    run_id: str
    def __init__(self, account_id: _Optional[str] = ..., sandbox_id: _Optional[str] = ..., run_id: _Optional[str] = ...) -> None: ...

class KillRunProcessesResponse(_message.Message):
    __slots__ = ("killed",)
    KILLED_FIELD_NUMBER: _ClassVar[int]
    killed: int
    def __init__(self, killed: _Optional[int] = ...) -> None: ...
