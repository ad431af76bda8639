"""Confines caller-supplied paths to one sandbox's workspace directory."""

from __future__ import annotations

import os
import posixpath
from pathlib import Path, PurePosixPath

from ..errors import InvalidSandboxRequest, PathOutsideSandbox

# Where the workspace appears inside the bubblewrap sandbox; callers may use it in absolute paths.
SANDBOX_MOUNT = PurePosixPath("/workspace")


class Workspace:
    """A directory whose paths callers name relative to it (or as /workspace/...)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(os.path.realpath(root))

    def resolve(self, path: str, *, follow_final: bool = True) -> Path:
        """The host path for `path`, with symlinks resolved; refuses anything outside the root.

        With `follow_final=False` a final symlink is left as is (deleting a link removes the
        link, not what it points to); its parent must still lie inside.
        """
        relative = self._relative_form(path)
        if not follow_final:
            parent, name = posixpath.split(relative.rstrip("/"))
            if name not in ("", ".", ".."):
                return self._confined(self.root / parent, path) / name
        return self._confined(self.root / relative, path)

    def relative(self, host_path: Path) -> str:
        """The workspace-relative form of a host path inside the root ("" for the root)."""
        rel = host_path.relative_to(self.root).as_posix()
        return "" if rel == "." else rel

    def _relative_form(self, path: str) -> str:
        if "\x00" in path:
            raise InvalidSandboxRequest("a path may not contain NUL characters")
        pure = PurePosixPath(path or ".")
        if not pure.is_absolute():
            return str(pure)
        if pure == SANDBOX_MOUNT or SANDBOX_MOUNT in pure.parents:
            return str(pure.relative_to(SANDBOX_MOUNT))
        # An absolute host path is fine when it lies inside the workspace (what `pwd` prints
        # without bubblewrap); the confinement check below decides.
        return str(pure)

    def _confined(self, candidate: Path, original: str) -> Path:
        resolved = Path(os.path.realpath(candidate))
        if resolved != self.root and self.root not in resolved.parents:
            raise PathOutsideSandbox(f"path {original!r} is outside the sandbox")
        return resolved
