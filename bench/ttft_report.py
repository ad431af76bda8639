"""ttft.py's statistics and the Markdown tables it prints."""

from __future__ import annotations

import statistics

from ttft_client import Phase


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, int(round(p / 100 * len(ordered) + 0.5)) - 1))
    return ordered[k]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "p50": pct(values, 50),
        "p90": pct(values, 90),
        "p99": pct(values, 99),
        "mean": statistics.fmean(values),
        "min": min(values),
        "max": max(values),
    }


def result_rows(phases: list[Phase]) -> list[str]:
    rows = [
        "| mode | model TTFT ms | concurrency | runs | overhead p50 | p90 | p99 | mean | min | max "
        "| TTFT p50 | runs/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for ph in phases:
        if not ph.samples:
            rows.append(f"| {ph.mode} | {ph.ttft_ms:g} | {ph.concurrency} | 0 | (no samples) ||||||||")
            continue
        s = summary([x.overhead for x in ph.samples])
        ttft = pct([x.ttft for x in ph.samples], 50)
        rows.append(
            f"| {ph.mode} | {ph.ttft_ms:g} | {ph.concurrency} | {len(ph.samples)} | "
            + " | ".join(f"{s[k]:.1f}" for k in ("p50", "p90", "p99", "mean", "min", "max"))
            + f" | {ttft:.1f} | {ph.runs_per_second:.1f} |"
        )
    return rows


def breakdown_rows(phases: list[Phase]) -> list[str]:
    """Where the time goes, p50 / p99 ms of each hop (hops overlap: the run is queued while the
    start request is still being answered)."""
    rows = [
        "| mode | model TTFT | conc. | start request | stream open (after start) | to run_started "
        "| start → model request | model (fake TTFT) | model first token → client | "
        "first token → run_finished |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for ph in phases:
        marked = [x for x in ph.samples if x.llm_arrived is not None and x.llm_first is not None]
        if not marked:
            continue

        def cell(values: list[float]) -> str:
            return f"{pct(values, 50):.1f} / {pct(values, 99):.1f}"

        rows.append(
            " | ".join(
                [
                    f"| {ph.mode}",
                    f"{ph.ttft_ms:g}",
                    str(ph.concurrency),
                    cell([(x.start_done - x.t0) * 1000 for x in ph.samples]),
                    cell([(x.stream_open - x.start_done) * 1000 for x in ph.samples]),
                    cell([(x.first_event - x.t0) * 1000 for x in ph.samples]),
                    cell([(x.llm_arrived - x.t0) * 1000 for x in marked]),
                    cell([(x.llm_first - x.llm_arrived) * 1000 for x in marked]),
                    cell([(x.first_token - x.llm_first) * 1000 for x in marked]),
                    cell([(x.finished - x.first_token) * 1000 for x in ph.samples]),
                ]
            )
            + " |"
        )
    return rows


def cpu_rows(phases: list[Phase]) -> list[str]:
    rows = ["| mode | model TTFT | conc. | CPU ms per run, by process |", "|---|---:|---:|---|"]
    for ph in phases:
        if not ph.samples:
            continue
        per_run = {name: sec * 1000 / len(ph.samples) for name, sec in ph.cpu.items()}
        total = sum(per_run.values())
        parts = ", ".join(f"{name} {ms:.1f}" for name, ms in sorted(per_run.items(), key=lambda kv: -kv[1]))
        rows.append(f"| {ph.mode} | {ph.ttft_ms:g} | {ph.concurrency} | total {total:.1f}: {parts} |")
    return rows
