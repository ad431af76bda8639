"""File operations of the local provider: confined to one workspace, streamed, within its quota."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import secrets
import shutil
import stat
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path

from ..domain import FileInfo
from ..errors import (
    DirectoryNotEmpty,
    FileExists,
    FileNotFound,
    FileTooLarge,
    InvalidSandboxRequest,
    IsADirectory,
    NotADirectory,
    QuotaExceeded,
)
from .workspace import Workspace

CHUNK = 1024 * 1024


def disk_usage(root: Path) -> int:
    """Bytes the tree under `root` occupies on disk (allocated blocks, links not followed)."""
    total = 0
    stack = [str(root)]
    while stack:
        directory = stack.pop()
        try:
            entries = os.scandir(directory)
        except OSError:
            continue
        with entries:
            for entry in entries:
                try:
                    status = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                total += status.st_blocks * 512
                if stat.S_ISDIR(status.st_mode):
                    stack.append(entry.path)
    return total


class WorkspaceFiles:
    """One sandbox's workspace as seen by the file API (not by its commands)."""

    def __init__(
        self, workspace: Workspace, *, owner: int | None, max_file_bytes: int, max_upload_bytes: int, quota_bytes: int
    ) -> None:
        self.workspace = workspace
        self.owner = owner  # host uid that owns what the API writes (the sandbox's user)
        self.max_file_bytes = max_file_bytes
        self.max_upload_bytes = max_upload_bytes
        self.quota_bytes = quota_bytes

    async def read(self, path: str) -> bytes:
        target = self.workspace.resolve(path)
        return await asyncio.to_thread(self._read, target, path)

    async def write(self, path: str, content: bytes) -> int:
        if len(content) > self.max_file_bytes:
            raise FileTooLarge(f"{len(content)} bytes is over the limit of {self.max_file_bytes}")

        async def one() -> AsyncIterator[bytes]:
            yield content

        return await self.upload(path, one())

    async def download(self, path: str) -> AsyncGenerator[bytes, None]:
        target = self.workspace.resolve(path)
        fd = await asyncio.to_thread(self._open_for_reading, target, path)
        try:
            while chunk := await asyncio.to_thread(os.read, fd, CHUNK):
                yield chunk
        finally:
            os.close(fd)

    async def upload(self, path: str, chunks: AsyncIterator[bytes]) -> int:
        target = self.workspace.resolve(path)
        if target == self.workspace.root:
            raise IsADirectory(f"{path!r} is a directory")
        used = await asyncio.to_thread(disk_usage, self.workspace.root) if self.quota_bytes else 0
        temp, fd = await asyncio.to_thread(self._open_for_writing, target, path)
        size = 0
        try:
            async for chunk in chunks:
                size += len(chunk)
                if size > self.max_upload_bytes:
                    raise FileTooLarge(f"{path!r} is over the upload limit of {self.max_upload_bytes} bytes")
                if self.quota_bytes and used + size > self.quota_bytes:
                    raise QuotaExceeded(
                        f"writing {path!r} would pass the sandbox's disk quota of {self.quota_bytes} bytes"
                    )
                await asyncio.to_thread(_write_all, fd, chunk)
            os.close(fd)
            fd = -1
            await asyncio.to_thread(self._commit, temp, target, path)
        except BaseException:
            if fd >= 0:
                os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
        return size

    async def list(self, path: str) -> list[FileInfo]:
        target = self.workspace.resolve(path)
        return await asyncio.to_thread(self._list, target, path)

    async def delete(self, path: str, recursive: bool) -> None:
        target = self.workspace.resolve(path, follow_final=False)
        if target == self.workspace.root:
            raise InvalidSandboxRequest("the workspace root cannot be deleted")
        await asyncio.to_thread(self._delete, target, path, recursive)

    async def make_dir(self, path: str) -> FileInfo:
        target = self.workspace.resolve(path)
        return await asyncio.to_thread(self._make_dir, target, path)

    async def move(self, source: str, destination: str) -> FileInfo:
        origin = self.workspace.resolve(source, follow_final=False)
        target = self.workspace.resolve(destination, follow_final=False)
        if self.workspace.root in (origin, target):
            raise InvalidSandboxRequest("the workspace root cannot be moved or replaced")
        return await asyncio.to_thread(self._move, origin, target, source, destination)

    # Blocking halves (run in a thread)

    def _open_for_reading(self, target: Path, path: str) -> int:
        try:
            fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError as exc:
            raise FileNotFound(f"{path!r} does not exist") from exc
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            os.close(fd)
            raise IsADirectory(f"{path!r} is a directory")
        return fd

    def _read(self, target: Path, path: str) -> bytes:
        fd = self._open_for_reading(target, path)
        try:
            size = os.fstat(fd).st_size
            if size > self.max_file_bytes:
                raise FileTooLarge(
                    f"{path!r} is {size} bytes; the limit is {self.max_file_bytes} (download it instead)"
                )
            with os.fdopen(os.dup(fd), "rb") as file:
                return file.read(self.max_file_bytes + 1)[: self.max_file_bytes]
        finally:
            os.close(fd)

    def _open_for_writing(self, target: Path, path: str) -> tuple[Path, int]:
        if target.is_dir():
            raise IsADirectory(f"{path!r} is a directory")
        # Written beside the target and renamed over it at the end: a failed upload leaves the
        # old file (or none), never half of the new one.
        temp = target.parent / f".{target.name}.upload-{secrets.token_hex(6)}"
        try:
            self._make_parents(target.parent)
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        except (NotADirectoryError, FileExistsError) as exc:
            raise NotADirectory(f"a parent of {path!r} is not a directory") from exc
        return temp, fd

    def _commit(self, temp: Path, target: Path, path: str) -> None:
        self._own(temp)
        try:
            os.rename(temp, target)
        except IsADirectoryError as exc:
            raise IsADirectory(f"{path!r} is a directory") from exc

    def _make_parents(self, directory: Path) -> None:
        missing = []
        while not directory.exists():
            missing.append(directory)
            directory = directory.parent
        for each in reversed(missing):
            each.mkdir()
            self._own(each)

    def _make_dir(self, target: Path, path: str) -> FileInfo:
        try:
            self._make_parents(target)
        except (NotADirectoryError, FileExistsError) as exc:
            raise NotADirectory(f"a parent of {path!r} is not a directory") from exc
        if not target.is_dir():
            raise FileExists(f"{path!r} exists and is not a directory")
        return self._info(target)

    def _move(self, origin: Path, target: Path, source: str, destination: str) -> FileInfo:
        if not origin.exists() and not origin.is_symlink():
            raise FileNotFound(f"{source!r} does not exist")
        if target.exists() or target.is_symlink():
            raise FileExists(f"{destination!r} already exists")
        if origin.is_dir() and not origin.is_symlink() and (target == origin or origin in target.parents):
            raise InvalidSandboxRequest(f"{source!r} cannot be moved into itself")
        try:
            self._make_parents(target.parent)
        except (NotADirectoryError, FileExistsError) as exc:
            raise NotADirectory(f"a parent of {destination!r} is not a directory") from exc
        os.rename(origin, target)
        return self._info(target)

    def _list(self, target: Path, path: str) -> list[FileInfo]:
        try:
            entries = sorted(os.scandir(target), key=lambda e: e.name)
        except FileNotFoundError as exc:
            raise FileNotFound(f"{path!r} does not exist") from exc
        except NotADirectoryError as exc:
            raise NotADirectory(f"{path!r} is not a directory") from exc
        return [self._info(target / entry.name) for entry in entries]

    def _info(self, target: Path) -> FileInfo:
        status = os.lstat(target)
        return FileInfo(
            name=target.name,
            path=self.workspace.relative(target),
            is_dir=stat.S_ISDIR(status.st_mode),
            size=status.st_size,
            modified_at=status.st_mtime,
            mode=stat.S_IMODE(status.st_mode),
        )

    def _delete(self, target: Path, path: str, recursive: bool) -> None:
        try:
            if target.is_dir() and not target.is_symlink():
                if recursive:
                    shutil.rmtree(target)
                else:
                    target.rmdir()
            else:
                target.unlink()
        except FileNotFoundError as exc:
            raise FileNotFound(f"{path!r} does not exist") from exc
        except OSError as exc:
            if exc.errno == errno.ENOTEMPTY:
                raise DirectoryNotEmpty(f"{path!r} is not empty; delete it recursively") from exc
            raise

    def _own(self, path: Path) -> None:
        if self.owner is not None:
            os.lchown(path, self.owner, self.owner)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
