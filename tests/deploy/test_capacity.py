"""The capacity model's arithmetic and its simulation agree with each other."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

spec = importlib.util.spec_from_file_location(
    "capacity", Path(__file__).resolve().parents[2] / "deploy" / "capacity.py"
)
capacity = importlib.util.module_from_spec(spec)
sys.modules.setdefault("capacity", capacity)  # dataclasses look their module up
spec.loader.exec_module(capacity)


SHAPE = capacity.Shape(concurrency=16, processes=1)  # fixed here, whatever the defaults become


def test_plan_follows_littles_law_and_cpu():
    plan = capacity.plan(capacity.Load(runs_per_second=5, seconds_per_run=60), shape=SHAPE)
    assert plan.concurrent_runs == 300
    assert plan.workers_for_slots == 19  # ceil(300 / 16)
    heavy = capacity.plan(capacity.Load(5, 60), capacity.Costs(worker_cpu_ms=2000), SHAPE)
    assert heavy.workers_for_cpu == 17 and heavy.workers == 19  # ceil(5 * 2 / 0.6)


def test_simulated_utilisation_matches_the_model_and_headroom_cuts_the_wait():
    load = capacity.Load(runs_per_second=2, seconds_per_run=30)
    tight = capacity.simulate(load, workers=4, shape=SHAPE, duration=900)  # 60 in flight on 64 slots
    assert abs(tight.slot_utilisation - 60 / 64) < 0.08
    roomy = capacity.simulate(load, workers=6, shape=SHAPE, duration=900)
    assert roomy.wait_p99 <= tight.wait_p99 and roomy.max_queue <= tight.max_queue
    workers, result = capacity.smallest_fleet(load, p99_wait=1.0, shape=SHAPE)
    assert workers >= 4 and result.wait_p99 <= 1.0
