"""The sandbox's records, rules and results, free of gRPC, SQL, process and vendor details."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum


class SandboxState(StrEnum):
    # The row exists but the provider has not made the sandbox yet (reserved lazily, or a
    # creation that failed half way); the next use provisions it.
    CREATING = "creating"
    STARTED = "started"
    # Processes gone, workspace kept; the next use starts it again.
    STOPPED = "stopped"
    # Stopped for long; the provider may have moved it to cheaper storage. Started like STOPPED.
    ARCHIVED = "archived"
    # The provider failed; the next use tries to create or start it again.
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class SandboxSpec:
    """What a sandbox is made from and what it may use; zero values take the service's defaults."""

    image: str = ""
    snapshot: str = ""
    cpu: int = 0
    memory_mb: int = 0
    disk_mb: int = 0
    env: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    network: bool = False

    def to_json(self) -> dict:
        return {
            "image": self.image,
            "snapshot": self.snapshot,
            "cpu": self.cpu,
            "memory_mb": self.memory_mb,
            "disk_mb": self.disk_mb,
            "env": dict(self.env),
            "labels": dict(self.labels),
            "network": self.network,
        }

    @classmethod
    def from_json(cls, data: dict | None) -> SandboxSpec:
        data = data or {}
        return cls(
            image=data.get("image", ""),
            snapshot=data.get("snapshot", ""),
            cpu=int(data.get("cpu", 0)),
            memory_mb=int(data.get("memory_mb", 0)),
            disk_mb=int(data.get("disk_mb", 0)),
            env=dict(data.get("env", {})),
            labels=dict(data.get("labels", {})),
            network=bool(data.get("network", False)),
        )


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
    spec: SandboxSpec = field(default_factory=SandboxSpec)
    state_changed_at: datetime | None = None
    error: str = ""

    def ready(self, provider_ref: str) -> SandboxRecord:
        return replace(self, state=SandboxState.STARTED, provider_ref=provider_ref, error="")

    def moved(self, state: SandboxState, at: datetime, error: str = "") -> SandboxRecord:
        return replace(self, state=state, state_changed_at=at, error=error)

    @property
    def provisioned(self) -> bool:
        return bool(self.provider_ref) and self.state is not SandboxState.CREATING


@dataclass(frozen=True, slots=True)
class Lifecycle:
    """When idle sandboxes are stopped and stopped ones archived (0 = never)."""

    auto_stop_seconds: float = 15 * 60
    auto_archive_seconds: float = 2 * 60 * 60

    def next_state(self, record: SandboxRecord, now: datetime) -> SandboxState | None:
        """What an idle sandbox should move to now, if anything."""
        if (
            record.state is SandboxState.STARTED
            and self.auto_stop_seconds
            and (now - record.last_used_at).total_seconds() >= self.auto_stop_seconds
        ):
            return SandboxState.STOPPED
        if record.state is SandboxState.STOPPED and self.auto_archive_seconds:
            since = record.state_changed_at or record.last_used_at
            if (now - since).total_seconds() >= self.auto_archive_seconds:
                return SandboxState.ARCHIVED
        return None


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
    mode: int = 0  # permission bits


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    process_id: str
    running: bool
    exit_code: int | None = None
    command: str = ""
    run_id: str = ""


@dataclass(frozen=True, slots=True)
class ProcessOutput:
    process: ProcessInfo
    output: bytes
    next_offset: int


@dataclass(frozen=True, slots=True)
class PreviewLink:
    url: str
    token: str = ""
    # For providers without public links: where on the sandbox's host the port is served.
    upstream_url: str = ""


# Exit code of a command killed for running past its timeout, as coreutils' `timeout` reports it.
TIMEOUT_EXIT_CODE = 124

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_LABEL = re.compile(r"^[A-Za-z0-9_.:/-]{1,63}$")


def valid_env_name(name: str) -> bool:
    return bool(_ENV_NAME.match(name))


def valid_label(name: str) -> bool:
    return bool(_LABEL.match(name))
