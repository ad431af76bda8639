"""SQLite (embedded mode's database): queries cancelled again while their connection is being
closed must not leave a close that never ends, which would hold the event loop's shutdown (and
`agentry dev`'s exit) for ever. aiosqlite 0.22 did (see libs/servicekit/pyproject.toml)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    from sqlalchemy import text
    from agentry.servicekit.db import create_engine

    async def main(path):
        engine = create_engine(f"sqlite+aiosqlite:///{path}")

        async def long_query():
            async with engine.connect() as conn:
                await conn.execute(text(
                    "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r WHERE i < 3000000) "
                    "SELECT count(*) FROM r"
                ))

        for yields in (0, 1, 2, 3) * 5:
            task = asyncio.create_task(long_query())
            await asyncio.sleep(0.02)
            task.cancel()  # the query is cancelled: SQLAlchemy terminates its connection ...
            for _ in range(yields):
                await asyncio.sleep(0)
            task.cancel()  # ... and is cancelled again while it does
            try:
                await task
            except BaseException:
                pass
        await engine.dispose()

    asyncio.run(main(sys.argv[1]))  # its shutdown waits for every task left
    print("shut down")
    """
)


def test_queries_cancelled_twice_do_not_hold_the_loop_shutdown(tmp_path: Path) -> None:
    try:
        done = subprocess.run(
            [sys.executable, "-c", SCRIPT, str(tmp_path / "cancel.db")],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError("the event loop's shutdown hung on a connection close") from exc
    assert done.returncode == 0, done.stderr[-2000:]
    assert "shut down" in done.stdout
