"""A step's readings over the interleaved rounds as one bench.json entry: medians of the
timings, every round's rate, and the counts of the first round (the same workload every round)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any


def rate(criteria: int, seconds: float) -> float:
    return round(criteria / seconds, 2) if seconds > 0 else 0.0


def layout_entry(readings: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """A layout's rounds as one bench.json entry: medians of the timings, the counts of the
    first round (the same workload every round) and whether every round gave its verdicts."""
    first = readings[0]
    rates = [rate(r["criteria"], r["seconds"]) for r in readings]
    return {
        "criteria_per_s": round(statistics.median(rates), 2),
        "criteria_per_s_rounds": rates,
        "seconds": round(statistics.median(r["seconds"] for r in readings), 3),
        "prompt_tokens": first["prompt_tokens"],
        "output_tokens": first["output_tokens"],
        "prefix_cache_hit_rate": statistics.median(r["prefix_cache_hit_rate"] for r in readings),
        "unparseable": max(r["unparseable"] for r in readings),
        "criteria": first["criteria"],
        "requests": first["requests"],
        "same_verdicts_every_round": all(r["met"] == first["met"] for r in readings),
        "other_cpu_share_rounds": [r.get("other_cpu_share", 0.0) for r in readings],
    }


def raw_entry(readings: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """A raw-engine step's rounds (ceiling or grammar) as one entry: medians and counts."""
    first = readings[0]
    entry = {
        "seconds": round(statistics.median(r["seconds"] for r in readings), 3),
        "seconds_rounds": [r["seconds"] for r in readings],
        "prefix_cache_hit_rate": statistics.median(r["prefix_cache_hit_rate"] for r in readings),
        "output_tokens": first["output_tokens"],
        "prompt_tokens": first["prompt_tokens"],
        "requests": first["requests"],
        "valid": first["valid"],
    }
    if "criteria" in first:
        rates = [rate(r["criteria"], r["seconds"]) for r in readings]
        entry = {"criteria_per_s": round(statistics.median(rates), 2), **entry}
        entry["criteria_per_s_rounds"] = rates
    entry["other_cpu_share_rounds"] = [r.get("other_cpu_share", 0.0) for r in readings]
    for key in ("prompt_ids_match", "lengths_match", "warmup_s"):
        if key in first:
            entry[key] = first[key]
    return entry
