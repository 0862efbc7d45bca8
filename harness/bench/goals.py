"""The benchmark's ratios (each the median of its per-round values), the goals read from them
(measured ratio, target, met) and the agreement of the layouts' verdicts with `all`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from harness.bench.rounds import per_round, summarize
from harness.bench.workload import OUR_MODES
from harness.metrics import agreement

# name -> (step A, step B, what A / B is); rates are criteria per second within a round.
RATE_RATIOS = {
    "efficiency_all": ("all", "ceiling:all", "all mode / engine ceiling on the same tokens"),
    "efficiency_compact": (
        "compact",
        "ceiling:compact",
        "compact mode / engine ceiling on the same tokens",
    ),
    "all_vs_paper": ("all", "paper", "all mode / paper layout"),
    "each_vs_paper": ("each", "paper", "each mode / paper layout"),
    "compact_vs_paper": ("compact", "paper", "compact mode / paper layout"),
    "compact_vs_all": ("compact", "all", "compact mode / all mode"),
}


def compute_ratios(readings: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict[str, Any]:
    """Every ratio whose two steps were measured, from the per-round readings (`seconds`, and
    `criteria` for rates): the median of the per-round ratios, min, max, rounds, values.

    Grammar steps are `grammar:<engine>` against `free:<engine>` (its unconstrained twin), or
    against `ceiling:all` when it has none (the profile's grammar: the ceiling runs the same
    tokens unconstrained)."""
    ratios: dict[str, Any] = {}
    for name, (a, b, detail) in RATE_RATIOS.items():
        if a in readings and b in readings:
            rates = per_round(_rates(readings[a]), _rates(readings[b]))
            ratios[name] = {**summarize(rates), **_busy(readings[a], readings[b]), "detail": detail}
    for step in readings:
        if step.startswith("grammar:"):
            grammar = step.removeprefix("grammar:")
            twin = f"free:{grammar}" if f"free:{grammar}" in readings else "ceiling:all"
            if twin in readings:
                times = per_round(_seconds(readings[step]), _seconds(readings[twin]))
                ratios[f"{grammar}_slowdown"] = {
                    **summarize(times),
                    **_busy(readings[step], readings[twin]),
                    "detail": f"{grammar} time / unconstrained time ({twin}), same lengths",
                }
    return ratios


def _busy(a: Sequence[Mapping[str, Any]], b: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per round, the larger share of the machine's CPU that other processes took while
    either side ran (what a shared machine did to that round; absent when not metered)."""
    if not all("other_cpu_share" in r for r in (*a, *b)):
        return {}
    shares = [max(x["other_cpu_share"], y["other_cpu_share"]) for x, y in zip(a, b)]
    return {"other_cpu_share_per_round": [round(v, 4) for v in shares]}


def _seconds(readings: Sequence[Mapping[str, Any]]) -> list[float]:
    return [r["seconds"] for r in readings]


def _rates(readings: Sequence[Mapping[str, Any]]) -> list[float]:
    return [r["criteria"] / r["seconds"] if r["seconds"] else 0.0 for r in readings]


def compute_agreement(
    verdicts: Mapping[str, Sequence[bool | None]],
    criterion_ids: Sequence[str],
    reference: str = "all",
) -> dict[str, Any]:
    """Each layout's verdicts against the reference layout's, position by position (the same
    jobs in the same order): `harness.metrics.agreement` (n, accuracy = the agreement rate,
    balanced accuracy, Cohen's kappa, F1 per class, unscored), both yes-rates and the
    agreement rate of each criterion id over the responses."""
    base = verdicts[reference]
    result = {}
    for layout, met in verdicts.items():
        if layout == reference:
            continue
        entry = agreement(met, base)
        by_criterion: dict[str, list[int]] = {}
        for cid, p, r in zip(criterion_ids, met, base):
            if p is not None and r is not None:
                by_criterion.setdefault(cid, []).append(p == r)
        result[layout] = {
            "reference": reference,
            **{k: _round(v) for k, v in entry.items()},
            "yes_rate": _round(yes_rate(met)),
            "reference_yes_rate": _round(yes_rate(base)),
            "by_criterion": {
                cid: round(sum(hits) / len(hits), 4) for cid, hits in by_criterion.items()
            },
        }
    return result


def yes_rate(met: Sequence[bool | None]) -> float | None:
    """The share of "yes" among the scored verdicts (None when none was scored)."""
    scored = [m for m in met if m is not None]
    return sum(scored) / len(scored) if scored else None


def _round(value: Any) -> Any:
    return round(value, 4) if isinstance(value, float) else value


def compute_goals(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each goal of the benchmark from the median ratios: measured, target, whether it holds,
    and the spread of its rounds."""
    mode = result["workload"]["default_mode"]
    layouts, ratios = result["layouts"], result["ratios"]
    ours = sum(layouts[m]["unparseable"] for m in OUR_MODES if m in layouts)
    ceiling_mode = mode if f"efficiency_{mode}" in ratios else "all"  # `each`: no ceiling
    goals = {
        "harness_efficiency": _ratio_goal(ratios, f"efficiency_{ceiling_mode}", 0.9, ">=",
                                          "efficiency_"),
        "default_vs_paper": _ratio_goal(ratios, f"{mode}_vs_paper", 2.0, ">=", "_vs_paper"),
        "unparseable_ours": _goal(ours, 0, "<=", "unparseable verdicts in all, each, compact"),
    }  # fmt: skip
    if "xgrammar_slowdown" in ratios:
        goals["xgrammar_slowdown"] = _ratio_goal(ratios, "xgrammar_slowdown", 1.25, "<=", None)
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


def _ratio_goal(
    ratios: dict[str, Any], name: str, target: float, sense: str, family: str | None
) -> dict[str, Any]:
    ratio = ratios[name]
    others = ""
    if family:
        siblings = [
            f"{n.replace(family, '')}: {r['median']:.2f}"
            for n, r in ratios.items()
            if family in n and n != name
        ]
        others = f" ({', '.join(siblings)})" if siblings else ""
    detail = f"{ratio['detail']}; median of {ratio['rounds']} rounds{others}"
    return {
        **_goal(ratio["median"], target, sense, detail),
        "min": ratio["min"],
        "max": ratio["max"],
        "rounds": ratio["rounds"],
    }


def _goal(measured: float, target: float, sense: str, detail: str) -> dict[str, Any]:
    met = measured >= target if sense == ">=" else measured <= target
    return {
        "measured": round(measured, 4),
        "target": f"{sense} {target}",
        "met": bool(met),
        "detail": detail,
    }
