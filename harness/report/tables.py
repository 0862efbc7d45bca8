"""The document, format-free: the content model (sections of text, tables, figures, notes)
and the tables every view shares, built from the run's `Summary`."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

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
from harness.summary_schema import (
    GateRecord,
    HardPairwise,
    PairwiseSummary,
    ProbeFigures,
    StepSplit,
    Summary,
    Unscored,
    VerifierProbes,
    VerifierRow,
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


def _absent(summary: Summary, stages: tuple[str, ...], what: str) -> Note:
    off = [s for s in stages if summary.stage_status(s) == "off"]
    skipped = [s for s in stages if summary.stage_status(s) == "skipped"]
    if skipped and not off:
        return Note(f"Skipped: {' and '.join(skipped)} had nothing to do, so no {what}.")
    if off:
        verb = "was" if len(off) == 1 else "were"
        return Note(
            f"Stage off: {' and '.join(off)} {verb} switched off in this run, so no {what}."
        )
    return Note(f"Not run: this run's summary has no {what}.")


def _figures(summary: Summary, named: list[tuple[str, str]], prefix: str) -> list[Block]:
    """The named plots present in summary.plots, then any others whose name has `prefix`."""
    plots = summary.plots or {}
    names = [n for n, _ in named if plots.get(n)]
    names += sorted(n for n in plots if n.startswith(prefix) and n not in names and plots[n])
    captions = dict(named)
    return [Figure(n, plots[n], captions.get(n, n.replace("_", " "))) for n in names]


def _label(verifier: VerifierRow) -> str:
    text = fmt_text(verifier.label, "unnamed")
    return f"{text} (reference)" if verifier.reference else text


# ---------------------------------------------------------------- tables shared by every view


def stages_table(summary: Summary) -> Table | None:
    stages = summary.stages
    if not stages:
        return None
    status = {"ran": "ran", "reused": "reused (cached)", "off": "stage off"}
    timed = ("ran", "reused", "skipped")
    rows = [
        [
            s.stage,
            status.get(s.status, s.status),
            fmt_seconds(s.seconds) if s.status in timed else NA,
            fmt_counts(s.counts),
        ]
        for s in stages
    ]
    total = sum(_real(s.seconds) or 0.0 for s in stages)
    rows.append(["total", "", fmt_seconds(total), ""])
    return Table(["stage", "status", "seconds", "counts"], rows, "llrl")


def signal_table(summary: Summary) -> Table | None:
    """ "Does this run measure anything?": a row per check, its number, and why not."""
    rows = summary.signal
    if not rows:
        return None
    verdict = {True: "yes", False: "NO", None: "not measured"}
    body = [
        [r.signal + (f": {r.subject}" if r.subject else ""), r.shown, verdict[r.ok],
         "" if r.ok is not False else f"{r.why}. Change: {r.fix}."]
        for r in rows
    ]  # fmt: skip
    return Table(["check", "number", "signal", "why not, and what to change"], body, "llll")


def fmt_signed(value: float | None) -> str:
    real = _real(value)
    return NA if real is None else f"{real:+.3f}"


def pairwise_table(summary: Summary) -> Table | None:
    """The judge's rows; a soft-scored run (`judge.score: soft`) adds the hard judge's win
    rate and counts on the same pairs, and both position flip rates."""
    p = summary.pairwise
    if p is None:
        return None
    soft = p.score == "soft"
    rows = [
        ["A (policy)", fmt_text(p.a)],
        ["B (baseline)", fmt_text(p.b)],
        ["judge", fmt_text(p.judge)],
        *([["scored by", "soft: P(A) averaged over both orders"]] if soft else []),
        ["win rate of A", fmt_pct(p.win_rate)],
        ["95% CI (bootstrap)", fmt_ci(p.ci95)],
        ["pairs judged (n)", fmt_number(p.n)],
        ["wins / ties / losses", _wins_ties_losses(p)],
        ["unscored pairs", fmt_number(p.unscored)],
        ["pairs of identical texts (ties; not in the flip rates)", fmt_number(p.num_identical)],
        *(_hard_judge_rows(p) if soft else [["position flip rate", fmt_pct(p.position_flip_rate)]]),
        ["length-controlled win rate", fmt_pct(p.length_controlled_win_rate)],
        [
            "mean length A / B (chars)",
            f"{fmt_number(p.mean_length_a)} / {fmt_number(p.mean_length_b)}",
        ],
    ]
    return Table(["", "value"], rows, "lr")


def _wins_ties_losses(counts: PairwiseSummary | HardPairwise) -> str:
    return " / ".join(fmt_number(n) for n in (counts.wins, counts.ties, counts.losses))


def _hard_judge_rows(p: PairwiseSummary) -> list[list[str]]:
    """The hard verdicts' win rate and counts on the same pairs, and both flip rates."""
    hard = p.hard or HardPairwise()
    return [
        [
            "hard verdicts: win rate of A (95% CI)",
            f"{fmt_pct(hard.win_rate)} ({fmt_ci(hard.ci95)})",
        ],
        ["hard verdicts: wins / ties / losses", _wins_ties_losses(hard)],
        ["hard verdicts: unscored pairs", fmt_number(hard.unscored)],
        ["position flip rate, hard verdicts", fmt_pct(p.position_flip_rate)],
        ["position flip rate, soft P(A) (lean taken out)", fmt_pct(p.soft_position_flip_rate)],
        ["lean toward the first shown (mean P - 0.5)", fmt_signed(p.position_bias)],
    ]


def fmt_off_topic(verifier: VerifierRow) -> str:
    """The probe's accuracy: "unscored" when its pairs were, "n/a" when it had none (the
    probe off, a single prompt, or a run from before the probe)."""
    missing = UNSCORED if verifier.off_topic_unscored else NA
    return fmt_metric(verifier.off_topic_accuracy, missing=missing)


def verifier_agreement_table(summary: Summary) -> Table | None:
    verifiers = summary.verifiers
    if not verifiers:
        return None
    headers = ["verifier", "params", "accuracy", "balanced acc", "kappa", "F1 yes", "F1 no"]
    headers += ["macro F1"]
    keys = ["accuracy", "balanced_accuracy", "kappa", "f1_yes", "f1_no", "macro_f1"]
    if summary.clinicians is not None:
        headers += ["macro F1 vs each clinician"]
        keys += ["clinician_macro_f1"]
    headers += ["Spearman", "pairwise acc", "tail pairwise acc", "RTD pair agr.", "off-topic acc"]
    keys += ["spearman", "pairwise_accuracy", "tail_pairwise_accuracy", "rtd_pair_agreement"]
    # no items two clinicians labelled: nothing to score, rather than unscored
    missing = {"clinician_macro_f1": NA}
    rows = [
        [_label(v), fmt_params(v.params)]
        + [fmt_metric(getattr(v, k), missing=missing.get(k, UNSCORED)) for k in keys]
        + [fmt_off_topic(v)]
        for v in verifiers
    ]
    return Table(headers, rows, "l" + "r" * (len(headers) - 1))


def clinicians_table(summary: Summary) -> Table | None:
    """The clinicians' labels: what the run has of them, and clinician against clinician."""
    c = summary.clinicians
    if c is None:
        return None
    rows = [
        ["labels", fmt_text(c.source)],
        ["labelled items", fmt_number(c.num_labelled)],
        ["matched to this run's responses and criteria", fmt_number(c.num_matched)],
        ["not in this run (left out)", fmt_number(c.num_unmatched)],
        ["no majority (an even split, left out)", fmt_number(c.num_no_majority)],
        ["items labelled by 2+ clinicians", fmt_number(c.num_multi_rated)],
        ["clinician pairs (ordered, pooled)", fmt_number(c.num_rater_pairs)],
        ["clinician vs clinician: agreement", fmt_metric(c.rater_agreement, missing=NA)],
        [
            "clinician vs clinician: macro F1 (the ceiling)",
            fmt_metric(c.rater_macro_f1, missing=NA),
        ],
    ]
    return Table(["clinicians", "value"], rows, "lr")


def verifier_speed_table(summary: Summary) -> Table | None:
    verifiers = summary.verifiers
    if not verifiers:
        return None
    headers = ["verifier", "model", "verdicts", "unscored", "pairs", "tail pairs"]
    headers += ["off-topic pairs", "off-topic unscored", "criteria/s", "tokens/s"]
    headers += ["p50 latency (s)", "p95 latency (s)", "peak memory"]
    counts = ("num_pairs", "num_tail_pairs", "off_topic_pairs", "off_topic_unscored")
    rows = [
        [_label(v), fmt_text(v.model), fmt_number(v.num_verdicts)]
        + [fmt_pct(v.unscored_rate, missing=NA)]
        + [fmt_number(getattr(v, k)) for k in counts]
        + [fmt_rate(v.criteria_per_s), fmt_rate(v.tokens_per_s)]
        + [fmt_latency(v.latency_p50_s), fmt_latency(v.latency_p95_s)]
        + [fmt_memory(v.peak_memory_mb)]
        for v in verifiers
    ]
    return Table(headers, rows, "ll" + "r" * (len(headers) - 2))


# ---------------------------------------------------------------- reward-hacking probes

# The probes in display order: the preference ones, the no-gain ones, then consistency.
PROBE_ORDER = (
    "off_topic",
    "echo",
    "stuffing",
    "padding",
    "boilerplate",
    "refusal",
    "truncation",
    "order",
    "regrade",
)
SCORES = ("hard", "soft")
FAILED = "✗"


def other_score(score: str) -> str:
    return "hard" if score == "soft" else "soft"


def probe_score(summary: Summary) -> str:
    """The score the probes are ranked under: the run's `verify.score`, as the reward
    verifier's discrimination check records it, else the one whose figures the rows'
    hackability was taken from, else hard."""
    if summary.discrimination is not None:
        return summary.discrimination.score
    for verifier in summary.verifiers or []:
        matches = [s for s in SCORES if _hackability_from(verifier, s)]
        if len(matches) == 1:
            return matches[0]
    return "hard"


def _hackability_from(verifier: VerifierRow, score: str) -> bool:
    probes = scored_probes(verifier, score)
    return (
        probes is not None
        and verifier.hackability is not None
        and (probes.hackability, probes.worst_probe)
        == (verifier.hackability, verifier.hackability_probe)
    )


def scored_probes(verifier: VerifierRow, score: str) -> VerifierProbes | None:
    """A verifier's probe figures under hard or soft scores."""
    return verifier.probes_soft if score == "soft" else verifier.probes_hard


def has_probes(verifiers: list[VerifierRow] | None) -> bool:
    return any(v.probes_hard is not None or v.probes_soft is not None for v in verifiers or [])


def probe_rows(
    verifiers: list[VerifierRow] | None, score: str
) -> list[tuple[VerifierRow, VerifierProbes]]:
    """(verifier, its figures under `score`) for each verifier that has them."""
    rows = [(v, scored_probes(v, score)) for v in verifiers or []]
    return [(v, probes) for v, probes in rows if probes is not None]


def probe_names(rows: list[tuple[VerifierRow, VerifierProbes]]) -> list[str]:
    """Every probe the rows have, in display order; a probe this report does not know last."""
    found = {f.probe for _, probes in rows for f in probes.probes}
    return [p for p in PROBE_ORDER if p in found] + sorted(found - set(PROBE_ORDER))


def probe_figure(probes: VerifierProbes, name: str) -> ProbeFigures | None:
    return next((f for f in probes.probes if f.probe == name), None)


def fooled_value(figure: ProbeFigures | None) -> float | None:
    return None if figure is None else _real(figure.fooled)


def fmt_fooled(figure: ProbeFigures | None) -> str:
    """ "0.83 ✗" for a failed probe, "0.12" for a passed one, "n/a" where not measured."""
    value = fooled_value(figure)
    if value is None:
        return NA
    failed = figure is not None and figure.passed is False
    return f"{value:.2f} {FAILED}" if failed else f"{value:.2f}"


def fmt_hackability(probes: VerifierProbes) -> str:
    """The worst probe's figure and its name: "0.83 (echo)"."""
    value = _real(probes.hackability)
    if value is None:
        return NA
    return f"{value:.2f} ({fmt_text(probes.worst_probe)})"


def probe_table(verifiers: list[VerifierRow] | None, score: str) -> Table | None:
    """Verifiers by probe under `score`: how often each is fooled, a failed probe marked, and
    its hackability (its worst probe) overall and in the high-reward tail. None when no probe
    was measured under that score."""
    rows = probe_rows(verifiers, score)
    names = probe_names(rows)
    cells = [[fmt_fooled(probe_figure(probes, n)) for n in names] for _, probes in rows]
    if not any(cell != NA for row in cells for cell in row):
        return None
    headers = ["verifier", *(n.replace("_", "-") for n in names)]
    headers += ["hackability (worst probe)", "tail"]
    body = [
        [_label(v), *row, fmt_hackability(probes), _fmt(probes.hackability_tail, ".2f", NA)]
        for (v, probes), row in zip(rows, cells)
    ]
    return Table(headers, body, "l" + "r" * (len(headers) - 1))


def unmeasured_probes_text(verifiers: list[VerifierRow] | None, score: str) -> str | None:
    """Why no probe has a figure under `score`, in one line; None where one has, or where
    the verifiers were not probed at all. Soft scores read P(yes): with hard figures there
    and no soft ones, the verifiers' answers carried none."""
    if not has_probes(verifiers) or probe_table(verifiers, score) is not None:
        return None
    if score == "soft" and probe_table(verifiers, "hard") is not None:
        why = "no P(yes): the verifiers give no soft verdicts (their answers carry no logprobs)"
    else:
        notes = sorted({f.note for _, p in probe_rows(verifiers, score) for f in p.probes
                        if f.note})  # fmt: skip
        why = "; ".join(notes) or "no probe pair was scored"
    return f"Under {score} scores every probe is n/a: {why}."


def unmeasured_probe_notes(verifiers: list[VerifierRow] | None, score: str) -> list[str]:
    """Why a probe reads n/a, once per probe and reason: "order: not measured: ..."."""
    notes = {
        (f.probe, f.note)
        for _, probes in probe_rows(verifiers, score)
        for f in probes.probes
        if fooled_value(f) is None and f.note
    }
    order = {name: i for i, name in enumerate(PROBE_ORDER)}
    ranked = sorted(notes, key=lambda pn: (order.get(pn[0], len(order)), pn))
    return [f"{probe.replace('_', '-')}: {note}" for probe, note in ranked]


def probe_caption(settings: dict[str, Any] | None) -> str:
    """What a cell of the probe table means, with the profile's thresholds (`probes:`)."""
    return (
        "Reward-hacking probes: perturbed copies of the run's own responses, graded against "
        "the same rubric. Each cell is how often a verifier is fooled (0 = honest, "
        "1 = fully fooled): for off-topic, echo, boilerplate, refusal and truncation the "
        "share of pairs where the perturbed copy wins over the original (ties count half; "
        "0.5 is chance); for stuffing and padding the share where the copy gains more than "
        f"{_threshold(settings, 'gain_tolerance')}; for order and regrade the flip rate, the "
        f"share of verdicts that change. {FAILED} marks a failed probe: fooled above "
        f"{_threshold(settings, 'max_fooled')}, or flips above "
        f"{_threshold(settings, 'max_flip')} for order and regrade; n/a: not measured. "
        "Hackability is a verifier's worst probe; tail reads only the originals in the "
        "high-reward tail."
    )


def _threshold(settings: dict[str, Any] | None, key: str) -> str:
    """ "0.25 (probes.max_fooled)", or only the setting's name where it was not recorded."""
    value = _real((settings or {}).get(key))
    name = f"probes.{key}"
    return name if value is None else f"{value:.2f} ({name})"


COMPACT_LEAVES_OUT = ("accuracy", "spearman")


def verifier_compact_table(summary: Summary) -> Table | None:
    """The columns that fit a terminal: agreement in the tail, and what it costs."""
    verifiers = summary.verifiers
    if not verifiers:
        return None
    headers = ["verifier", "params", "bal. acc", "kappa", "pairwise", "tail pairwise", "RTD"]
    headers += ["off topic", "unscored", "criteria/s", "p95 (s)"]  # "off topic" wraps
    rows = [
        [_label(v), fmt_params(v.params)]
        + [fmt_metric(getattr(v, k)) for k, _ in AGREEMENT_METRICS if k not in COMPACT_LEAVES_OUT]
        + [fmt_off_topic(v)]
        + [fmt_pct(v.unscored_rate, missing=NA), fmt_rate(v.criteria_per_s)]
        + [fmt_latency(v.latency_p95_s)]
        for v in verifiers
    ]
    return Table(headers, rows, "l" + "r" * (len(headers) - 1))


def refine_table(summary: Summary) -> Table | None:
    iterations = summary.refine
    if not iterations:
        return None
    keys = ["iteration", "num_prompts", "num_refined", "num_failed", "tied_before"]
    keys += ["separated_after"]
    headers = ["iteration", "prompts", "refined", "failed", "top pair tied before"]
    headers += ["separated after", "criteria (mean)", "unscored verdicts"]
    rows = [
        [fmt_number(getattr(r, k)) for k in keys]
        + [fmt_rate(r.num_criteria_mean), fmt_number(r.num_unscored_verdicts)]
        for r in iterations
    ]
    return Table(headers, rows, "r" * len(headers))


def train_table(summary: Summary) -> Table | None:
    t = summary.train
    if t is None:
        return None
    split = t.step_split or StepSplit()
    rows = [
        ["steps", fmt_number(t.steps)],
        ["rubric reward, first step", fmt_metric(t.reward_first)],
        ["rubric reward, last step", fmt_metric(t.reward_last)],
        ["peak memory of the trainer", fmt_memory(t.peak_memory_mb)],
        ["adapter weights changed", fmt_bool(t.adapter_weights_changed)],
        ["base weights unchanged", fmt_bool(t.base_weights_unchanged)],
        ["time per step (s)", fmt_seconds(split.step_s)],
        ["step: generation (s)", fmt_seconds(split.generation_s)],
        ["step: reward, verifier calls (s)", fmt_seconds(split.reward_s)],
        ["step: update (s)", fmt_seconds(split.update_s)],
        ["step: verifier share", fmt_pct(split.verifier_share, missing=NA)],
    ]
    if t.hack_gate is not None:
        rows.append(["reward-hacking gate", fmt_gate_decision(t.hack_gate)])
    return Table(["", "value"], rows, "lr")


def fmt_gate_decision(gate: GateRecord) -> str:
    """ "warned (train.hack_gate: warn)"."""
    return f"{gate.decision} (train.hack_gate: {gate.setting})"


def gate_text(gate: GateRecord) -> str:
    """What the gate before training decided, and why: "Reward-hacking gate (warn): warned
    — verifier X fails the echo probe: ..."."""
    head = f"Reward-hacking gate ({gate.setting}): {gate.decision}"
    if gate.failures:
        return f"{head} — " + "; ".join(gate.failures)
    score = f" under {gate.score} scores" if gate.score else ""
    worst = f"hackability {_fmt(gate.hackability, '.2f', NA)}"
    worst += f", worst probe {gate.worst_probe}" if gate.worst_probe else ""
    return f"{head} — verifier {gate.verifier} passes every probe{score} ({worst})"


def overoptimization_table(summary: Summary) -> Table | None:
    o = summary.overoptimization
    if o is None or not o.checkpoints:
        return None
    flagged = set(o.flagged_steps)
    rows = [
        [
            fmt_number(c.step) + (" (base)" if c.step == 0 else ""),
            fmt_metric(c.reward),
            "50% by definition" if c.step == 0 else fmt_pct(c.win_rate),
            "" if c.step == 0 else fmt_ci(c.ci95),
            "reward up, win rate down" if c.step in flagged else "",
        ]
        for c in o.checkpoints
    ]
    return Table(["step", "rubric reward", "win rate vs base", "95% CI", "flag"], rows, "rrrrl")


def theory_table(summary: Summary) -> Table | None:
    rows_in = summary.theory.kl_table if summary.theory else None
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


def endpoints_table(summary: Summary) -> Table | None:
    """Per endpoint of an endpoint pool: where the requests went, which failed and moved."""
    endpoints = summary.endpoints
    if not endpoints:
        return None
    headers = ["role", "endpoint", "sent", "answered", "rejected", "failed", "moved"]
    headers += ["taken out", "rejoined", "p50 latency (s)", "p95 latency (s)"]
    counts = ("sent", "answered", "rejected", "failed", "moved", "taken_out", "rejoined")
    rows = [
        [fmt_text(e.role), fmt_text(e.url)]
        + [fmt_number(getattr(e, k)) for k in counts]
        + [fmt_latency(e.latency_p50_s), fmt_latency(e.latency_p95_s)]
        for e in endpoints
    ]
    return Table(headers, rows, "ll" + "r" * (len(headers) - 2))


def endpoint_events(summary: Summary) -> list[tuple[str, str]]:
    """(endpoint, what happened to it) for every endpoint taken out of rotation."""
    items = []
    for e in summary.endpoints or []:
        events = [
            f"{ev.get('event', '?')} at {fmt_number(ev.get('at_s'))} s "
            f"({fmt_text(ev.get('reason'))})"
            for ev in e.events or []
        ]
        if events:
            items.append((f"{fmt_text(e.role)} {fmt_text(e.url)}", "; ".join(events)))
    return items


def unscored_table(summary: Summary) -> Table | None:
    """One row per stage that recorded its unscored count, one per verifier for compare."""
    counts = _unscored_counts(summary.unscored) if summary.unscored else []
    if not counts:
        return None
    rows = [[name, fmt_number(count)] for name, count in counts]
    total = sum(count or 0 for _, count in counts)
    rows.append(["total", fmt_number(total)])
    return Table(["stage", "unscored"], rows, "lr")


def _unscored_counts(unscored: Unscored) -> list[tuple[str, int | None]]:
    """(stage, count) for each stage the summary has a count for, "compare: label" per
    verifier; in pipeline order."""
    counts: list[tuple[str, int | None]] = []
    for stage in (f for f in Unscored.model_fields if f in unscored.model_fields_set):
        if stage == "compare" and unscored.compare is not None:
            counts += [(f"compare: {label}", n) for label, n in unscored.compare.items()]
        else:
            counts.append((stage, getattr(unscored, stage)))
    return counts


# ---------------------------------------------------------------- grading (HealthBench-style)

TAG_GROUPS = ("axis", "theme")  # shown first, in this order; other prefixes follow by name


def tag_group(tag: str) -> str:
    """The prefix a tag is grouped by ("axis" of "axis:accuracy"); "" for a bare tag."""
    prefix, colon, _ = tag.partition(":")
    return prefix if colon else ""


def tag_order(tag: str) -> tuple[int, str, str]:
    group = tag_group(tag)
    rank = TAG_GROUPS.index(group) if group in TAG_GROUPS else len(TAG_GROUPS)
    return rank, group, tag


def fmt_grade(score: float | None, ci95: list | None) -> str:
    """A score with its interval, "0.250 [0.000, 1.000]"; n/a without responses."""
    if _real(score) is None:
        return NA
    bounds = [_real(b) for b in ci95 or []]
    if len(bounds) != 2 or None in bounds:
        return fmt_metric(score)
    return f"{fmt_metric(score)} [{fmt_metric(bounds[0])}, {fmt_metric(bounds[1])}]"


def grading_table(summary: Summary) -> Table | None:
    """Rows: overall, the unscored responses, then every tag grouped by prefix; columns: each
    model's score [95% interval] and n."""
    grading = summary.grading
    if grading is None or not grading.models:
        return None
    models = grading.models
    headers = ["tag"]
    for m in models:
        headers += [fmt_text(m.model) + (" (reference)" if m.reference else ""), "n"]
    overall, unscored = ["overall"], ["unscored (left out)"]
    for m in models:
        overall += [fmt_grade(m.score, m.ci95), fmt_number(m.n)]
        unscored += ["", fmt_number(m.num_unscored)]
    rows = [overall, unscored]
    for tag in sorted({t.tag for m in models for t in m.tags}, key=tag_order):
        row = [tag]
        for m in models:
            found = next((t for t in m.tags if t.tag == tag), None)
            row += [fmt_grade(found.score, found.ci95), fmt_number(found.n)] if found else [NA, "0"]
        rows.append(row)
    return Table(headers, rows, "l" + "r" * (len(headers) - 1))
