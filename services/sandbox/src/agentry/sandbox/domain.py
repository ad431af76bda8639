"""The sandbox's records and results, free of gRPC, SQL and process details."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum


class SandboxState(StrEnum):
    # The row exists but the provider has not confirmed the sandbox yet; the next use retries.
    CREATING = "creating"
    READY = "ready"


@dataclass(frozen=True, slots=True)
class SandboxRecord:
    """A row of the sandboxes table: who owns which sandbox, and where the provider keeps it."""

    sandbox_id: str
    account_id: str
    project_id: str
    provider: str
    provider_ref: str
    state: SandboxState
    created_at: datetime
    last_used_at: datetime

    def ready(self, provider_ref: str) -> SandboxRecord:
        return replace(self, state=SandboxState.READY, provider_ref=provider_ref)


@dataclass(frozen=True, slots=True)
class ExecOutcome:
    """How a command ended; the last item of an exec stream."""

    exit_code: int
    timed_out: bool
    duration_seconds: float
    truncated: bool = False


@dataclass(frozen=True, slots=True)
class FileInfo:
    name: str
    path: str  # relative to the workspace root, with forward slashes
    is_dir: bool
    size: int
    modified_at: float  # seconds since the epoch


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    process_id: str
    running: bool
    exit_code: int | None = None


@dataclass(frozen=True, slots=True)
class ProcessOutput:
    process: ProcessInfo
    output: bytes
    next_offset: int


# Exit code of a command killed for running past its timeout, as coreutils' `timeout` reports it.
TIMEOUT_EXIT_CODE = 124

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def valid_env_name(name: str) -> bool:
    return bool(_ENV_NAME.match(name))
