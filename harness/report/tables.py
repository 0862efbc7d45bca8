"""The document, format-free: the content model (sections of text, tables, figures, notes)
and the tables every view shares, built from the summary dict."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from harness.report.format import (
    NA,
    UNSCORED,
    _fmt,
    _real,
    fmt_bool,
    fmt_ci,
    fmt_counts,
    fmt_error,
    fmt_latency,
    fmt_memory,
    fmt_metric,
    fmt_number,
    fmt_params,
    fmt_pct,
    fmt_rate,
    fmt_seconds,
    fmt_text,
)

AGREEMENT_METRICS = (
    ("accuracy", "accuracy"),
    ("balanced_accuracy", "balanced accuracy"),
    ("kappa", "Cohen's kappa"),
    ("pairwise_accuracy", "pairwise accuracy"),
    ("tail_pairwise_accuracy", "tail pairwise accuracy"),
    ("rtd_pair_agreement", "RTD pair agreement"),
    ("spearman", "Spearman rho"),
)
# Probes a verifier is measured on by itself, with no reference; 0.5 is chance.
PROBE_METRICS = (("off_topic_accuracy", "off-topic preference accuracy"),)
THEORY_PATTERNS = (
    "Correct",
    "Reversed",
    "Top 10% wrong",
    "Top 25% wrong",
    "Top 50% wrong",
    "Worst 50% wrong",
    "Worst 90% wrong",
)


# ---------------------------------------------------------------- the document, format-free


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]
    align: str  # one "l" or "r" per column


@dataclass
class Figure:
    name: str
    path: str  # relative to the run folder
    caption: str


@dataclass
class Note:
    """A line that says a section has nothing to show, and why."""

    text: str


@dataclass
class Items:
    items: list[tuple[str, str]]  # (label, text)


Block = str | Table | Figure | Note | Items


@dataclass
class Section:
    title: str
    blocks: list[Block] = field(default_factory=list)

    @property
    def anchor(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", self.title.lower()).strip("-")


def _verifiers(summary: dict) -> list[dict]:
    return [v for v in summary.get("verifiers") or [] if isinstance(v, dict)]


def _stage_status(summary: dict, stage: str) -> str | None:
    for entry in summary.get("stages") or []:
        if isinstance(entry, dict) and entry.get("stage") == stage:
            return entry.get("status")
    return None


def _absent(summary: dict, stages: tuple[str, ...], what: str) -> Note:
    off = [s for s in stages if _stage_status(summary, s) == "off"]
    skipped = [s for s in stages if _stage_status(summary, s) == "skipped"]
    if skipped and not off:
        return Note(f"Skipped: {' and '.join(skipped)} had nothing to do, so no {what}.")
    if off:
        verb = "was" if len(off) == 1 else "were"
        return Note(
            f"Stage off: {' and '.join(off)} {verb} switched off in this run, so no {what}."
        )
    return Note(f"Not run: this run's summary has no {what}.")


def _figures(summary: dict, named: list[tuple[str, str]], prefix: str) -> list[Block]:
    """The named plots present in summary["plots"], then any others whose name has `prefix`."""
    plots = summary.get("plots") or {}
    names = [n for n, _ in named if plots.get(n)]
    names += sorted(n for n in plots if n.startswith(prefix) and n not in names and plots[n])
    captions = dict(named)
    return [Figure(n, str(plots[n]), captions.get(n, n.replace("_", " "))) for n in names]


def _label(verifier: dict) -> str:
    text = fmt_text(verifier.get("label"), "unnamed")
    return f"{text} (reference)" if verifier.get("reference") else text


# ---------------------------------------------------------------- tables shared by every view


def stages_table(summary: dict) -> Table | None:
    stages = [s for s in summary.get("stages") or [] if isinstance(s, dict)]
    if not stages:
        return None
    status = {"ran": "ran", "reused": "reused (cached)", "off": "stage off"}
    timed = ("ran", "reused", "skipped")
    rows = [
        [
            fmt_text(s.get("stage")),
            status.get(s.get("status"), fmt_text(s.get("status"))),
            fmt_seconds(s.get("seconds")) if s.get("status") in timed else NA,
            fmt_counts(s.get("counts")),
        ]
        for s in stages
    ]
    total = sum(_real(s.get("seconds")) or 0.0 for s in stages)
    rows.append(["total", "", fmt_seconds(total), ""])
    return Table(["stage", "status", "seconds", "counts"], rows, "llrl")


def pairwise_table(summary: dict) -> Table | None:
    p = summary.get("pairwise")
    if not isinstance(p, dict):
        return None
    rows = [
        ["A (policy)", fmt_text(p.get("a"))],
        ["B (baseline)", fmt_text(p.get("b"))],
        ["judge", fmt_text(p.get("judge"))],
        ["win rate of A", fmt_pct(p.get("win_rate"))],
        ["95% CI (bootstrap)", fmt_ci(p.get("ci95"))],
        ["pairs judged (n)", fmt_number(p.get("n"))],
        [
            "wins / ties / losses",
            " / ".join(fmt_number(p.get(k)) for k in ("wins", "ties", "losses")),
        ],
        ["unscored pairs", fmt_number(p.get("unscored"))],
        ["position flip rate", fmt_pct(p.get("position_flip_rate"))],
        ["length-controlled win rate", fmt_pct(p.get("length_controlled_win_rate"))],
        [
            "mean length A / B (chars)",
            f"{fmt_number(p.get('mean_length_a'))} / {fmt_number(p.get('mean_length_b'))}",
        ],
    ]
    return Table(["", "value"], rows, "lr")


def fmt_off_topic(verifier: dict) -> str:
    """The probe's accuracy: "unscored" when its pairs were, "n/a" when it had none (the
    probe off, a single prompt, or a run from before the probe)."""
    missing = UNSCORED if _real(verifier.get("off_topic_unscored")) else NA
    return fmt_metric(verifier.get("off_topic_accuracy"), missing=missing)


def verifier_agreement_table(summary: dict) -> Table | None:
    verifiers = _verifiers(summary)
    if not verifiers:
        return None
    headers = ["verifier", "params", "accuracy", "balanced acc", "kappa", "F1 yes", "F1 no"]
    headers += ["Spearman", "pairwise acc", "tail pairwise acc", "RTD pair agr.", "off-topic acc"]
    keys = ["accuracy", "balanced_accuracy", "kappa", "f1_yes", "f1_no", "spearman"]
    keys += ["pairwise_accuracy", "tail_pairwise_accuracy", "rtd_pair_agreement"]
    rows = [
        [_label(v), fmt_params(v.get("params"))]
        + [fmt_metric(v.get(k)) for k in keys]
        + [fmt_off_topic(v)]
        for v in verifiers
    ]
    return Table(headers, rows, "l" + "r" * (len(headers) - 1))


def verifier_speed_table(summary: dict) -> Table | None:
    verifiers = _verifiers(summary)
    if not verifiers:
        return None
    headers = ["verifier", "model", "verdicts", "unscored", "pairs", "tail pairs"]
    headers += ["off-topic pairs", "off-topic unscored", "criteria/s", "tokens/s"]
    headers += ["p50 latency (s)", "p95 latency (s)", "peak memory"]
    counts = ("num_pairs", "num_tail_pairs", "off_topic_pairs", "off_topic_unscored")
    rows = [
        [_label(v), fmt_text(v.get("model")), fmt_number(v.get("num_verdicts"))]
        + [fmt_pct(v.get("unscored_rate"), missing=NA)]
        + [fmt_number(v.get(k)) for k in counts]
        + [fmt_rate(v.get(k)) for k in ("criteria_per_s", "tokens_per_s")]
        + [fmt_latency(v.get(k)) for k in ("latency_p50_s", "latency_p95_s")]
        + [fmt_memory(v.get("peak_memory_mb"))]
        for v in verifiers
    ]
    return Table(headers, rows, "ll" + "r" * (len(headers) - 2))


def verifier_compact_table(summary: dict) -> Table | None:
    """The columns that fit a terminal: agreement in the tail, and what it costs."""
    verifiers = _verifiers(summary)
    if not verifiers:
        return None
    headers = ["verifier", "params", "bal. acc", "kappa", "pairwise", "tail pairwise", "RTD"]
    headers += ["off topic", "unscored", "criteria/s", "p95 (s)"]  # "off topic" wraps
    rows = [
        [_label(v), fmt_params(v.get("params"))]
        + [fmt_metric(v.get(k)) for k, _ in AGREEMENT_METRICS if k not in ("accuracy", "spearman")]
        + [fmt_off_topic(v)]
        + [fmt_pct(v.get("unscored_rate"), missing=NA), fmt_rate(v.get("criteria_per_s"))]
        + [fmt_latency(v.get("latency_p95_s"))]
        for v in verifiers
    ]
    return Table(headers, rows, "l" + "r" * (len(headers) - 1))


def refine_table(summary: dict) -> Table | None:
    iterations = [r for r in summary.get("refine") or [] if isinstance(r, dict)]
    if not iterations:
        return None
    keys = ["iteration", "num_prompts", "num_refined", "num_failed", "tied_before"]
    keys += ["separated_after"]
    headers = ["iteration", "prompts", "refined", "failed", "top pair tied before"]
    headers += ["separated after", "criteria (mean)", "unscored verdicts"]
    rows = [
        [fmt_number(r.get(k)) for k in keys]
        + [fmt_rate(r.get("num_criteria_mean")), fmt_number(r.get("num_unscored_verdicts"))]
        for r in iterations
    ]
    return Table(headers, rows, "r" * len(headers))


def train_table(summary: dict) -> Table | None:
    t = summary.get("train")
    if not isinstance(t, dict):
        return None
    split = t.get("step_split") if isinstance(t.get("step_split"), dict) else {}
    rows = [
        ["steps", fmt_number(t.get("steps"))],
        ["rubric reward, first step", fmt_metric(t.get("reward_first"))],
        ["rubric reward, last step", fmt_metric(t.get("reward_last"))],
        ["peak memory of the trainer", fmt_memory(t.get("peak_memory_mb"))],
        ["adapter weights changed", fmt_bool(t.get("adapter_weights_changed"))],
        ["base weights unchanged", fmt_bool(t.get("base_weights_unchanged"))],
        ["time per step (s)", fmt_seconds(split.get("step_s"))],
        ["step: generation (s)", fmt_seconds(split.get("generation_s"))],
        ["step: reward, verifier calls (s)", fmt_seconds(split.get("reward_s"))],
        ["step: update (s)", fmt_seconds(split.get("update_s"))],
        ["step: verifier share", fmt_pct(split.get("verifier_share"), missing=NA)],
    ]
    return Table(["", "value"], rows, "lr")


def overoptimization_table(summary: dict) -> Table | None:
    o = summary.get("overoptimization")
    checkpoints = o.get("checkpoints") if isinstance(o, dict) else None
    if not checkpoints:
        return None
    flagged = set(o.get("flagged_steps") or [])
    rows = [
        [
            fmt_number(c.get("step")) + (" (base)" if c.get("step") == 0 else ""),
            fmt_metric(c.get("reward")),
            "50% by definition" if c.get("step") == 0 else fmt_pct(c.get("win_rate")),
            "" if c.get("step") == 0 else fmt_ci(c.get("ci95")),
            "reward up, win rate down" if c.get("step") in flagged else "",
        ]
        for c in checkpoints
        if isinstance(c, dict)
    ]
    return Table(["step", "rubric reward", "win rate vs base", "95% CI", "flag"], rows, "rrrrl")


def theory_table(summary: dict) -> Table | None:
    theory = summary.get("theory")
    rows_in = theory.get("kl_table") if isinstance(theory, dict) else None
    if not rows_in:
        return None
    patterns = [p for p in THEORY_PATTERNS if any(p in r for r in rows_in)]
    headers = ["KL", "beta", *patterns, "MC max abs error"]
    rows = [
        [_fmt(r.get("kl"), spec="g", missing=NA), _fmt(r.get("beta"), spec=".3g", missing=NA)]
        + [fmt_metric(r.get(p), missing=NA) for p in patterns]
        + [fmt_error(r.get("monte_carlo_max_abs_error"))]
        for r in rows_in
    ]
    return Table(headers, rows, "r" * len(headers))


def unscored_table(summary: dict) -> Table | None:
    counts = summary.get("unscored")
    if not isinstance(counts, dict) or not counts:
        return None
    rows: list[list[str]] = []
    total = 0.0
    for stage, value in counts.items():
        per_label = value.items() if isinstance(value, dict) else [(None, value)]
        for label, count in per_label:
            rows.append([stage if label is None else f"{stage}: {label}", fmt_number(count)])
            total += _real(count) or 0.0
    rows.append(["total", fmt_number(total)])
    return Table(["stage", "unscored"], rows, "lr")
