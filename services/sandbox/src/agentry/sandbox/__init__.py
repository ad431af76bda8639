"""Agentry's sandbox service: one sandboxed computer per project, reached over gRPC."""

from .config import SandboxSettings
from .domain import ExecOutcome, FileInfo, Lifecycle, PreviewLink, ProcessInfo, ProcessOutput, SandboxRecord, SandboxSpec, SandboxState
from .errors import (
    DirectoryNotEmpty,
    FileNotFound,
    FileTooLarge,
    FileExists,
    InvalidSandboxRequest,
    IsolationUnavailable,
    NoNetwork,
    QuotaExceeded,
    SandboxProviderError,
    IsADirectory,
    NotADirectory,
    PathOutsideSandbox,
    ProcessNotFound,
    SandboxAlreadyExists,
    SandboxError,
    SandboxNotFound,
)
from .ports import SandboxProvider, SandboxRepository
from .service import SandboxService

__all__ = [
    "DirectoryNotEmpty",
    "ExecOutcome",
    "FileInfo",
    "FileNotFound",
    "FileTooLarge",
    "InvalidSandboxRequest",
    "IsolationUnavailable",
    "Lifecycle",
    "NoNetwork",
    "PreviewLink",
    "QuotaExceeded",
    "SandboxProviderError",
    "SandboxSpec",
    "FileExists",
    "IsADirectory",
    "NotADirectory",
    "PathOutsideSandbox",
    "ProcessInfo",
    "ProcessNotFound",
    "ProcessOutput",
    "SandboxAlreadyExists",
    "SandboxError",
    "SandboxNotFound",
    "SandboxProvider",
    "SandboxRecord",
    "SandboxRepository",
    "SandboxService",
    "SandboxSettings",
    "SandboxState",
]
