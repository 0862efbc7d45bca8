"""Interleaved rounds and the ratios read from them.

A shared machine's speed drifts by tens of percent from one minute to the next, so a ratio of
two timings taken minutes apart measures the machine as much as the code. The bench therefore
runs every compared measurement once per round, side by side (A B ... then ... B A in the next
round, so that a steady drift favours neither side), computes each ratio within its round, and
quotes the median of the per-round ratios with their min and max. Two runs of the bench are
compared on those medians (`compare_ratios`, `python -m harness.bench A.json B.json`).
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any


def run_rounds(
    steps: Mapping[str, Callable[[], dict[str, Any]]],
    rounds: int,
    progress: Callable[[int, str], None] | None = None,
    deadline: float | None = None,
    min_rounds: int | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, list[dict[str, Any]]]:
    """Each step once per round, in the given order on even rounds and reversed on odd ones;
    the readings of every step, one per round. With a `deadline` (a `clock` value), rounds
    after the first `min_rounds` are run only while another round as long as the last one
    still ends before it: a slow, shared machine gets fewer rounds, not a longer run."""
    names = list(steps)
    readings: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    least = min(min_rounds or rounds, rounds)
    for number in range(max(rounds, 1)):
        round_started = clock()
        for name in names if number % 2 == 0 else names[::-1]:
            if progress:
                progress(number, name)
            readings[name].append(steps[name]())
        now = clock()
        if deadline is not None and number + 1 >= least and now + (now - round_started) > deadline:
            break
    return readings


def round_order(names: Sequence[str], rounds: int) -> list[str]:
    """The order `run_rounds` runs its steps in (what the tests and the README describe)."""
    return [n for r in range(max(rounds, 1)) for n in (names if r % 2 == 0 else names[::-1])]


def per_round(numerators: Sequence[float], denominators: Sequence[float]) -> list[float]:
    """numerator / denominator within each round (0.0 where the denominator is 0)."""
    if len(numerators) != len(denominators):
        raise ValueError(f"{len(numerators)} rounds against {len(denominators)}")
    return [n / d if d else 0.0 for n, d in zip(numerators, denominators)]


def summarize(values: Sequence[float], digits: int = 4) -> dict[str, Any]:
    """The median of per-round values with their min, max, count and the values themselves."""
    if not values:
        raise ValueError("no rounds to summarize")
    return {
        "median": round(statistics.median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
        "rounds": len(values),
        "per_round": [round(v, digits) for v in values],
    }


def spread(summary: Mapping[str, Any]) -> float:
    """(max - min) / median of a summary: how far apart its rounds were."""
    median = summary["median"]
    return (summary["max"] - summary["min"]) / median if median else 0.0


def relative_difference(a: float, b: float) -> float:
    """How far two positive measurements of one quantity are apart: larger / smaller - 1."""
    low, high = sorted((a, b))
    if low <= 0:
        return 0.0 if high == low else float("inf")
    return high / low - 1


def compare_ratios(
    first: Mapping[str, Any], second: Mapping[str, Any], tolerance: float = 0.10
) -> dict[str, dict[str, Any]]:
    """Every ratio two bench results share: both medians, their relative difference and
    whether it is within `tolerance`."""
    a, b = first.get("ratios", {}), second.get("ratios", {})
    compared = {}
    for name in [n for n in a if n in b]:
        difference = relative_difference(a[name]["median"], b[name]["median"])
        compared[name] = {
            "a": a[name]["median"],
            "b": b[name]["median"],
            "difference": round(difference, 4),
            "within": difference <= tolerance,
        }
    return compared


def same_workload(first: Mapping[str, Any], second: Mapping[str, Any]) -> bool:
    """Whether two bench results measured the same prompts, responses and rubrics on the same
    verifier (a ratio of two different workloads is no repeat)."""
    keys = ("fingerprint", "model", "sampling", "responses", "criteria_per_rubric")
    a, b = first.get("workload", {}), second.get("workload", {})
    return all(a.get(k) == b.get(k) for k in keys)


def main(argv: Sequence[str] | None = None) -> int:
    """Compare the ratios of two bench.json files; exit status 1 when one is off by > 10% or
    the two runs measured different workloads."""
    paths = list(argv if argv is not None else sys.argv[1:])
    if len(paths) != 2:
        print("usage: python -m harness.bench A/bench.json B/bench.json", file=sys.stderr)
        return 2
    first, second = (json.loads(Path(p).read_text(encoding="utf-8")) for p in paths)
    same = same_workload(first, second)
    if not same:
        print("different workloads (prompts, responses, rubrics or verifier): not a repeat")
    compared = compare_ratios(first, second)
    width = max((len(n) for n in compared), default=5)
    for name, row in compared.items():
        mark = "ok" if row["within"] else "OFF"
        values = f"{row['a']:8.3f}  {row['b']:8.3f}  {row['difference']:6.1%}"
        print(f"{name:<{width}}  {values}  {mark}")
    return 0 if same and all(row["within"] for row in compared.values()) else 1
