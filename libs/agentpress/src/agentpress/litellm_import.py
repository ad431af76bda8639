"""LiteLLM, imported once and only when something needs it.

Its import costs seconds of CPU and about 200 MB of RSS. A model on the direct lane
(agentpress.openai_stream) never needs it: its provider, price and context window come from
agentpress.catalog. LiteLLM is imported the first time a model outside the direct lane is
called, a price or window only LiteLLM knows is asked for, a direct-lane call fails (its error is
raised as LiteLLM's exception type), or tokens are counted.
"""

from __future__ import annotations

import asyncio
import os
import threading
import warnings
from collections.abc import Callable
from types import ModuleType

__all__ = ["after_import", "import_litellm", "import_litellm_off_loop", "imported"]

_litellm: ModuleType | None = None
_lock = threading.Lock()
_after: list[Callable[[], None]] = []


def after_import(hook: Callable[[], None]) -> None:
    """Run `hook` once LiteLLM is imported (now if it is already): a host adopts its loggers."""
    if _litellm is not None:
        hook()
    else:
        _after.append(hook)


def imported() -> ModuleType | None:
    """LiteLLM if agentpress imported it already, else None (and it is not imported now)."""
    return _litellm


def import_litellm() -> ModuleType:
    """Import LiteLLM on first use: it costs seconds of CPU, which `import agentpress` must not."""
    global _litellm
    if _litellm is None:
        with _lock:
            if _litellm is None:
                os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
                with warnings.catch_warnings():
                    # LiteLLM's pydantic models warn at import time about typing details that are theirs.
                    warnings.simplefilter("ignore")
                    import litellm

                litellm.suppress_debug_info = True
                _litellm = litellm
                for hook in _after:
                    hook()
                _after.clear()
    return _litellm


async def import_litellm_off_loop() -> ModuleType:
    """`import_litellm` from async code: the first import runs in a thread, so the event loop
    (and the lease heartbeats it runs) keeps going meanwhile."""
    if _litellm is not None:
        return _litellm
    return await asyncio.to_thread(import_litellm)
