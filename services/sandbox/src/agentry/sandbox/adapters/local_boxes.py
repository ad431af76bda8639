"""The local provider's sandboxes on disk: where each lives, whose uid runs it, and its limits."""

from __future__ import annotations

import logging
import os
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from ..domain import SandboxSpec
from ..errors import SandboxNotFound
from .isolation import Isolation, Limits
from .workspace import Workspace

logger = logging.getLogger(__name__)

_SANDBOX_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def sandbox_id_of(ref: str) -> str:
    """The sandbox id in a provider reference (early records kept the sandbox's whole directory)."""
    return ref.rsplit("/", 1)[-1]


@dataclass(frozen=True, slots=True)
class LocalLimits:
    """Defaults for every sandbox; a sandbox's spec may ask for less memory or disk, or more up to the max."""

    cpu_seconds: int = 600
    memory_mb: int = 2048
    max_memory_mb: int = 8192
    processes: int = 256
    disk_mb: int = 5120
    max_disk_mb: int = 51200
    open_files: int = 4096
    # Run each sandbox as a host user of its own (uid_base + a hash of its id), so the process
    # limit is the sandbox's own and its files are not the service's. Needs root; ignored otherwise.
    dedicated_users: bool = True
    uid_base: int = 1_000_000
    uid_range: int = 1_000_000
    quota_check_seconds: float = 1.0


@dataclass
class Box:
    """What the provider knows about one sandbox: its files on disk and what runs in it now."""

    ref: str
    base: Path
    spec: SandboxSpec
    uid: int | None
    execs: set[int] = field(default_factory=set)
    # pid -> why the provider killed it (shown at the end of the command's output)
    killed: dict[int, str] = field(default_factory=dict)

    @property
    def workspace(self) -> Workspace:
        return Workspace(self.base / "workspace")


class BoxStore:
    """Sandboxes under `root_dir/<sandbox_id>/`: `workspace/` is theirs, `processes/` and `meta.json` ours.

    Raises SandboxNotFound for a reference that is malformed, outside `root_dir` or has no workspace.
    """

    def __init__(self, root_dir: Path, limits: LocalLimits, isolation: Isolation) -> None:
        self.root_dir = Path(root_dir).resolve()
        self.limits = limits
        self.boxes: dict[str, Box] = {}
        self.root_dir.mkdir(parents=True, exist_ok=True)
        self.dedicated_users = self._can_use_dedicated_users(isolation)

    def create(self, sandbox_id: str, spec: SandboxSpec) -> str:
        """Lays out the sandbox's directories (idempotent: an existing sandbox keeps its spec)."""
        base = self.base(sandbox_id)
        workspace = base / "workspace"
        workspace.mkdir(parents=True, exist_ok=True)
        (base / "processes").mkdir(mode=0o700, exist_ok=True)
        uid = self.uid_for(sandbox_id)
        if uid is not None:
            os.chmod(base, 0o711)
            os.chown(workspace, uid, uid)
        meta = base / "meta.json"
        if not meta.exists():
            meta.write_bytes(orjson.dumps({"spec": spec.to_json(), "uid": uid}))
        self.boxes.pop(sandbox_id, None)
        return sandbox_id

    def base(self, ref: str) -> Path:
        sandbox_id = sandbox_id_of(ref)
        if not _SANDBOX_ID.match(sandbox_id) or ("/" in ref and Path(ref) != self.root_dir / sandbox_id):
            raise SandboxNotFound(f"sandbox {ref!r} not found")
        return self.root_dir / sandbox_id

    def get(self, ref: str) -> Box:
        sandbox_id = sandbox_id_of(ref)
        box = self.boxes.get(sandbox_id)
        if box is not None:
            return box
        base = self.base(ref)
        if not (base / "workspace").is_dir():
            raise SandboxNotFound(f"sandbox {ref!r} not found")
        try:
            meta = orjson.loads((base / "meta.json").read_bytes())
        except FileNotFoundError:
            meta = {}
        box = Box(ref=sandbox_id, base=base, spec=SandboxSpec.from_json(meta.get("spec")), uid=meta.get("uid"))
        self.boxes[sandbox_id] = box
        return box

    def uid_for(self, sandbox_id: str) -> int | None:
        if not self.dedicated_users:
            return None
        return self.limits.uid_base + zlib.crc32(sandbox_id.encode()) % self.limits.uid_range

    def quota(self, box: Box) -> int:
        """The sandbox's disk quota, bytes."""
        disk_mb = min(box.spec.disk_mb or self.limits.disk_mb, self.limits.max_disk_mb)
        return disk_mb * 1024 * 1024

    def limits_for(self, box: Box) -> Limits:
        memory_mb = min(box.spec.memory_mb or self.limits.memory_mb, self.limits.max_memory_mb)
        return Limits(
            cpu_seconds=self.limits.cpu_seconds,
            memory_bytes=memory_mb * 1024 * 1024,
            processes=self.limits.processes if box.uid is not None else 0,
            file_bytes=self.quota(box),
            open_files=self.limits.open_files,
        )

    def _can_use_dedicated_users(self, isolation: Isolation) -> bool:
        if not self.limits.dedicated_users or isolation != "bwrap" or os.geteuid() != 0:
            return False
        # The sandbox's user must be able to reach its workspace: every directory above it needs o+x.
        blocked = [
            str(p) for p in [self.root_dir, *self.root_dir.parents] if p.exists() and not os.stat(p).st_mode & 0o001
        ]
        if blocked:
            logger.warning(
                "sandboxes share this service's user (so the process limit is not per sandbox): "
                "%s cannot be traversed by other users",
                ", ".join(blocked),
            )
            return False
        return True
