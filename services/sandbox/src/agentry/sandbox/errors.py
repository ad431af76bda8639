"""The sandbox service's failures; the servicekit interceptor maps them to gRPC status codes."""

from __future__ import annotations

from agentry.servicekit.errors import (
    AlreadyExists,
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
)


class SandboxError(DomainError):
    """The root of every failure the sandbox service reports."""


class SandboxNotFound(SandboxError, NotFound):
    """No such sandbox for this account: also what another account's sandbox looks like."""

    code = "sandbox_not_found"


class SandboxAlreadyExists(SandboxError, AlreadyExists):
    """The project already has a sandbox (a lost race between two first calls)."""

    code = "sandbox_already_exists"


class InvalidSandboxRequest(SandboxError, InvalidArgument):
    """A request the sandbox cannot act on: an empty id, a negative timeout, a bad env name."""

    code = "invalid_argument"


class PathOutsideSandbox(SandboxError, InvalidArgument):
    """A path that resolves outside the sandbox's workspace (`..`, absolute, or via a symlink)."""

    code = "path_outside_sandbox"


class FileNotFound(SandboxError, NotFound):
    code = "file_not_found"


class NotADirectory(SandboxError, InvalidArgument):
    code = "not_a_directory"


class IsADirectory(SandboxError, InvalidArgument):
    code = "is_a_directory"


class DirectoryNotEmpty(SandboxError, FailedPrecondition):
    code = "directory_not_empty"


class FileTooLarge(SandboxError, FailedPrecondition):
    code = "file_too_large"


class ProcessNotFound(SandboxError, NotFound):
    code = "process_not_found"


class FileExists(SandboxError, AlreadyExists):
    code = "file_exists"


class QuotaExceeded(SandboxError, ResourceExhausted):
    """The sandbox's workspace would grow past its disk quota."""

    code = "disk_quota_exceeded"


class NoNetwork(SandboxError, FailedPrecondition):
    """The sandbox was created without network, so nothing can reach a port inside it."""

    code = "sandbox_has_no_network"


class IsolationUnavailable(SandboxError, FailedPrecondition):
    """Commands would run unisolated on the host, and the settings do not allow that."""

    code = "isolation_unavailable"


class SandboxProviderError(SandboxError, Unavailable):
    """The provider (Daytona's API, the local host) failed; the call may be tried again."""

    code = "sandbox_provider_error"
