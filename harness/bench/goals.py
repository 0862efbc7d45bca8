"""The benchmark's goals, read from a finished result (measured ratio, target, met), and
the machine the numbers were measured on."""

from __future__ import annotations

from typing import Any

from harness.bench.workload import OUR_MODES


def compute_goals(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each goal of the benchmark: the measured ratio, its target and whether it holds."""
    mode = result["workload"]["default_mode"]
    layouts, ceiling = result["layouts"], result["engine_ceiling"]
    ours = sum(layouts[m]["unparseable"] for m in OUR_MODES if m in layouts)
    paper_rate = layouts["paper"]["criteria_per_s"] or float("inf")
    efficiency = {m: entry["harness_efficiency"] for m, entry in ceiling.items()}
    vs_paper = {m: layouts[m]["criteria_per_s"] / paper_rate for m in OUR_MODES if m in layouts}
    ceiling_mode = mode if mode in efficiency else "all"  # `each` has no per-response ceiling
    goals = {
        "harness_efficiency": _goal(efficiency[ceiling_mode], 0.9, ">=",
                                    f"{ceiling_mode} mode / engine ceiling"
                                    + _others(efficiency, ceiling_mode)),
        "default_vs_paper": _goal(vs_paper[mode], 2.0, ">=",
                                  f"{mode} mode / paper layout" + _others(vs_paper, mode)),
        "unparseable_ours": _goal(ours, 0, "<=", "unparseable verdicts in all, each, compact"),
    }  # fmt: skip
    xgrammar = result["grammar"].get("xgrammar", {})
    if "slowdown" in xgrammar:
        goals["xgrammar_slowdown"] = _goal(
            xgrammar["slowdown"], 1.25, "<=", "xgrammar time / unconstrained time"
        )
    split = result["train_step_split"]
    if "skipped" not in split:
        lowest = min(split, key=lambda m: split[m]["verifier_share"])
        goals["verifier_share"] = {
            "measured": split.get(mode, split[lowest])["verifier_share"],
            "target": "reported",
            "met": True,
            "detail": f"{mode} mode; lowest with {lowest}: {split[lowest]['verifier_share']:.0%}",
        }
    return goals


def _others(values: dict[str, float], mode: str) -> str:
    others = ", ".join(f"{m}: {v:.2f}" for m, v in values.items() if m != mode)
    return f" ({others})" if others else ""


def _goal(measured: float, target: float, sense: str, detail: str) -> dict[str, Any]:
    met = measured >= target if sense == ">=" else measured <= target
    return {
        "measured": round(measured, 4),
        "target": f"{sense} {target}",
        "met": bool(met),
        "detail": detail,
    }
