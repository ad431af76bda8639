"""Admission by what the process has left: memory budget and event-loop lag."""

from __future__ import annotations

import asyncio
import time

from agentry.runner.admission import Admission, resident_mb


async def test_a_process_under_budget_admits_at_once() -> None:
    admission = Admission(memory_budget_mb=100_000, max_loop_lag_ms=1_000, interval=0.02)
    admission.start()
    try:
        await asyncio.wait_for(admission.admit(), 1)
        assert admission.has_room()
    finally:
        await admission.close()


async def test_over_the_memory_budget_new_runs_wait_until_there_is_room() -> None:
    assert resident_mb() > 10
    admission = Admission(memory_budget_mb=1, max_loop_lag_ms=0, interval=0.02)
    admission.start()
    try:
        await asyncio.sleep(0.1)
        waiting = asyncio.create_task(admission.admit())
        await asyncio.sleep(0.1)
        assert not waiting.done() and admission.waiting == 1
        admission.memory_budget_mb = 100_000  # memory freed (or the budget raised)
        await asyncio.wait_for(waiting, 1)
        assert admission.waiting == 0
    finally:
        await admission.close()


async def test_a_lagging_event_loop_stops_admission_until_it_keeps_up_again() -> None:
    admission = Admission(memory_budget_mb=0, max_loop_lag_ms=50, interval=0.02)
    admission.start()
    try:
        for _ in range(5):  # the process is CPU-bound: the loop runs late
            time.sleep(0.2)
            await asyncio.sleep(0.03)
        assert not admission.has_room(), admission.lag_ms
        waiting = asyncio.create_task(admission.admit())
        await asyncio.wait_for(waiting, 3)  # the loop is idle again: the lag decays, runs are admitted
        assert admission.lag_ms < 50
    finally:
        await admission.close()


async def test_a_burst_is_admitted_at_the_paced_rate() -> None:
    admission = Admission(memory_budget_mb=0, max_loop_lag_ms=0, max_per_second=100, interval=0.05)  # 5 a tick
    admission.start()
    try:
        waiters = [asyncio.create_task(admission.admit()) for _ in range(20)]
        await asyncio.sleep(0.01)
        assert sum(w.done() for w in waiters) == 5, "the first tick's share at once"
        await asyncio.wait_for(asyncio.gather(*waiters), 2)  # the rest over the next ticks
        assert admission.waiting == 0
    finally:
        await admission.close()
