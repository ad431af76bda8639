"""The stop-signal port: lets any replica stop a run wherever it runs, even before a worker picks it up."""

from __future__ import annotations

import asyncio
from contextlib import AbstractAsyncContextManager
from typing import Protocol


class StopSignalUnavailable(Exception):
    """The store behind the stop signal could not be reached."""


class StopSignal(Protocol):
    async def request_stop(self, run_id: str) -> None:
        """Remember the request (for a while) and wake every watcher of the run, on any replica."""
        ...

    async def is_stop_requested(self, run_id: str) -> bool: ...

    def watch(self, run_id: str) -> AbstractAsyncContextManager[asyncio.Event]:
        """An Event set when a stop is requested; set on entry if one already was."""
        ...

    async def close(self) -> None: ...
