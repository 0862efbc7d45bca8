"""Sections: the report's content in reading order, from "At a glance" to "Unscored", each
with its prose, tables and figures, or a note saying why the stage has nothing to show."""

from __future__ import annotations

import math

from harness.report.format import (
    _real,
    fmt_ci,
    fmt_error,
    fmt_metric,
    fmt_number,
    fmt_params,
    fmt_pct,
    fmt_text,
)
from harness.report.signal import beats_chance
from harness.report.tables import (
    Block,
    Figure,
    Items,
    Note,
    Section,
    _absent,
    _figures,
    clinicians_table,
    endpoint_events,
    endpoints_table,
    gate_text,
    grading_table,
    has_probes,
    other_score,
    overoptimization_table,
    pairwise_table,
    probe_caption,
    probe_score,
    probe_table,
    refine_table,
    signal_table,
    stages_table,
    theory_table,
    train_table,
    unmeasured_probe_notes,
    unmeasured_probes_text,
    unscored_table,
    verifier_agreement_table,
    verifier_speed_table,
)
from harness.summary_schema import Peak, Summary, Theory, VerifierRow

TAIL_TOLERANCE = 0.05
GRADING_AXES_CAPTION = "Overall and per-axis score of each model, with 95% bootstrap intervals"


def glance_items(summary: Summary) -> list[tuple[str, str]]:
    return [
        ("Win rate", _glance_win_rate(summary)),
        ("Verifier", _glance_verifier(summary)),
        ("Training reward", _glance_train(summary)),
        ("Over-optimisation", _glance_overoptimization(summary)),
    ]


def _glance_win_rate(summary: Summary) -> str:
    p = summary.pairwise
    if p is None:
        return _absent(summary, ("judge",), "pairwise results").text
    return (
        f"{fmt_text(p.a)} vs {fmt_text(p.b)}: {fmt_pct(p.win_rate)} "
        f"(95% CI {fmt_ci(p.ci95)}, n = {fmt_number(p.n)})"
    )


def _tail(verifier: VerifierRow) -> float | None:
    return _real(verifier.tail_pairwise_accuracy)


def pick_verifier(summary: Summary) -> tuple[VerifierRow, VerifierRow] | None:
    """The smallest verifier whose tail pairwise accuracy is within 0.05 of the best, and the
    best; the reference is left out, since its agreement with itself is 1 by definition, and
    so is a verifier no better than chance on the off-topic probe."""
    ranked = [(i, v, _tail(v)) for i, v in enumerate(summary.verifiers or [])
              if not v.reference and beats_chance(v) is not False]  # fmt: skip
    scored = [(i, v, tail) for i, v, tail in ranked if tail is not None]
    if not scored:
        return None
    _, best, best_tail = max(scored, key=lambda ivt: ivt[2])
    close = [(i, v) for i, v, tail in scored if tail >= best_tail - TAIL_TOLERANCE]
    _, smallest = min(close, key=lambda iv: (iv[1].params or math.inf, iv[0]))
    return smallest, best


def _glance_verifier(summary: Summary) -> str:
    at_chance = [v for v in summary.verifiers or [] if beats_chance(v) is False]
    if summary.verifiers and len(at_chance) == len(summary.verifiers):
        return (
            "none recommended: no verifier beats chance on the off-topic probe "
            f"({_probe_text(summary)}), so no verifier number of this run means anything"
        )
    if _probed(summary):
        return _glance_hackability(summary)
    picked = pick_verifier(summary)
    if picked is None:
        return _glance_without_tail(summary)
    smallest, best = picked
    text = (
        f"{fmt_text(smallest.label)} ({fmt_params(smallest.params)} params), "
        f"tail pairwise accuracy {fmt_metric(smallest.tail_pairwise_accuracy)}"
    )
    if smallest is not best:
        text += (
            f", within {TAIL_TOLERANCE} of the best ({fmt_text(best.label)}, "
            f"{fmt_metric(best.tail_pairwise_accuracy)})"
        )
    return text + f"; {_reference_text(summary)}"


def _probed(summary: Summary) -> bool:
    """Whether the comparison ranked the verifiers by the reward-hacking probes: some row has
    a hackability, and the comparison recorded its recommendation (or why none)."""
    hackable = any(v.hackability is not None for v in summary.verifiers or [])
    return hackable and summary.verifier_recommendation is not None


def _glance_hackability(summary: Summary) -> str:
    """The comparison's recommendation by hackability (harness.trust.recommend: the smallest
    verifier within the margin of the least hackable, never one at chance), its size added."""
    text = summary.verifier_recommendation or ""
    label = summary.recommended_verifier
    chosen = next((v for v in summary.verifiers or [] if v.label == label), None)
    if label is not None and chosen is not None:
        reason = text.removeprefix(f"{label}: ")
        text = f"{fmt_text(label)} ({fmt_params(chosen.params)} params): {reason}"
    return f"{text}; ranked by the reward-hacking probes under {probe_score(summary)} scores"


def _glance_without_tail(summary: Summary) -> str:
    """A comparison that ran without high-reward tail pairs (small data): the off-topic probe
    is the number it has."""
    compared = [v for v in summary.verifiers or [] if not v.reference]
    if not compared:
        return _absent(summary, ("compare",), "verifier comparison").text
    above = [v for v in compared if beats_chance(v) is not False]
    if not above:
        return (
            "none recommended: none of the verifiers compared with the reference beats chance "
            "on the off-topic probe "
            f"({_probe_text(summary)}); {_reference_text(summary)}"
        )
    return (
        f"{len(compared)} compared, no high-reward tail pairs in this run (no tail accuracy); "
        f"off-topic preference accuracy {_probe_text(summary)}; {_reference_text(summary)}"
    )


def _probe_text(summary: Summary) -> str:
    """Each verifier's off-topic accuracy, marked where it is no better than chance."""
    return (
        ", ".join(
            f"{fmt_text(v.label)} {fmt_metric(v.off_topic_accuracy)}"
            + (" (at chance)" if beats_chance(v) is False else "")
            for v in summary.verifiers or []
        )
        + " (random 0.500)"
    )


def _reference_text(summary: Summary) -> str:
    ref = summary.reference
    if ref is None:
        return "no reference recorded"
    if ref.kind == "labels":
        return f"measured against the clinicians' majority label in {fmt_text(ref.label)}"
    return f"measured against the reference verifier {fmt_text(ref.label)}"


def _glance_train(summary: Summary) -> str:
    t = summary.train
    if t is None:
        return _absent(summary, ("train",), "training results").text
    return (
        f"{fmt_metric(t.reward_first)} → {fmt_metric(t.reward_last)} "
        f"over {fmt_number(t.steps)} steps"
    )


def _glance_overoptimization(summary: Summary) -> str:
    o = summary.overoptimization
    if o is None or not o.checkpoints:
        return _absent(summary, ("overoptimization",), "checkpoint comparison").text
    if o.flagged:
        steps = ", ".join(fmt_number(s) for s in o.flagged_steps)
        return f"flagged at step {steps}: reward up, win rate down"
    return "not flagged: no checkpoint had the reward rise while the win rate fell"


def build_sections(summary: Summary) -> list[Section]:
    sections = [
        _signal_section(summary),
        Section("At a glance", [Items(glance_items(summary))]),
        Section("Stages", [stages_table(summary) or _absent(summary, (), "stage records")]),
        _grading_section(summary),
        _pairwise_section(summary),
        _verifier_section(summary),
        _refine_section(summary),
        _train_section(summary),
        _overoptimization_section(summary),
        _theory_section(summary),
        _unscored_section(summary),
    ]
    if summary.endpoints:  # only a run whose roles used endpoint pools
        sections.append(_endpoints_section(summary))
    shown = {b.name for s in sections for b in s.blocks if isinstance(b, Figure)}
    others = _figures(summary, [], "")
    others = [f for f in others if f.name not in shown]
    if others:
        sections.append(Section("Other plots", others))
    return sections


SIGNAL_TITLE = "Does this run measure anything?"


def _signal_section(summary: Summary) -> Section:
    table = signal_table(summary)
    if table is None:
        return Section(SIGNAL_TITLE, [Note("Not run: no stage that these checks read ran.")])
    failing = [r for r in summary.signal or [] if r.ok is False]
    verdict = (
        f"{len(failing)} of {len(summary.signal or [])} checks carry no signal: the numbers "
        "they name below are no evidence of anything, whatever they show."
        if failing
        else "Every check carries signal."
    )
    return Section(
        SIGNAL_TITLE,
        [
            "Each row is a number the results below rest on. Off-topic accuracy: how often a "
            "verifier's reward ranks a prompt's own answer above another prompt's answer shown "
            "under the same rubric (0.5 is chance; signal when the 95% interval lies above "
            "it). Zero reward spread: GRPO groups whose completions all got the same reward "
            "(no advantage, nothing learnt). Position flip rate: pairs whose verdict changed "
            "with the order shown. Criteria that cannot discriminate: criteria on which every "
            "candidate of a prompt got the same verdict.",
            verdict,
            table,
        ],
    )


SOFT_JUDGE_TEXT = (
    " Scored soft: in each order the judge's probability that A is better is read at its "
    "verdict token (a tie's probability split evenly), and the pair goes to the side of 0.5 "
    "on which the mean of the two orders lies, which cancels a preference for a position; "
    "the hard verdicts' results on the same pairs are shown beside. A flip is a pair whose "
    "two orders point to different sides."
)


def _pairwise_section(summary: Summary) -> Section:
    table = pairwise_table(summary)
    if table is None:
        return Section("Pairwise judge", [_absent(summary, ("judge",), "pairwise results")])
    return Section(
        "Pairwise judge",
        [
            "Each pair is judged in both orders; when the two orders disagree the pair counts "
            "as a tie, and a tie counts half a win. The 95% confidence interval comes from a "
            "bootstrap over pairs. The length-controlled win rate is the win rate at equal "
            "length, from a logistic fit of the outcome on the length difference."
            + (SOFT_JUDGE_TEXT if summary.pairwise and summary.pairwise.score == "soft" else ""),
            table,
            *_figures(summary, [("pairwise", "Wins, ties and losses of A against B")], "pair"),
        ],
    )


def _verifier_section(summary: Summary) -> Section:
    agreement = verifier_agreement_table(summary)
    if agreement is None:
        return Section("Verifier comparison", [_absent(summary, ("compare",), "verifier results")])
    reference = _reference_text(summary)
    return Section(
        "Verifier comparison",
        [
            f"Agreement metrics are {reference}; a reference verifier agrees with itself by "
            "definition. Tail pairwise accuracy counts only pairs from the high-reward tail, "
            "where the paper finds reward errors do their damage. Off-topic accuracy needs "
            "no reference: the share of pairs in which a verifier's reward ranks a prompt's "
            "own response above another prompt's response shown under the same rubric (ties "
            "count half; 0.5 is random). Unscored verdicts are left out of every metric.",
            agreement,
            *_clinician_blocks(summary),
            verifier_speed_table(summary),
            *_probe_blocks(summary),
            *_figures(
                summary,
                [
                    (
                        "verifier_metrics_vs_size",
                        "Agreement with the reference, and off-topic accuracy, against size",
                    ),
                    ("verifier_accuracy_vs_throughput", "Balanced accuracy against throughput"),
                ],
                "verifier",
            ),
        ],
    )


PROBE_HEAT_MAP_CAPTION = "How often each verifier is fooled, per reward-hacking probe"


def _probe_blocks(summary: Summary) -> list[Block]:
    """The reward-hacking probes: a table under the profile's score, then one under the
    other score (or a line saying why it has none), the heat map and the recommendation."""
    if not has_probes(summary.verifiers):
        return []
    blocks: list[Block] = [probe_caption(summary.probe_settings)]
    profile = probe_score(summary)
    for score in (profile, other_score(profile)):
        blocks += _scored_probe_blocks(summary, score, score == profile)
    blocks += _figures(summary, [("probe_heat_map", PROBE_HEAT_MAP_CAPTION)], "probe")
    if summary.verifier_recommendation:
        blocks.append(f"Recommended by hackability: {summary.verifier_recommendation}.")
    return blocks


def _scored_probe_blocks(summary: Summary, score: str, profile: bool) -> list[Block]:
    table = probe_table(summary.verifiers, score)
    if table is None:
        why = unmeasured_probes_text(summary.verifiers, score)
        return [Note(why)] if why else []
    which = " (the profile's verify.score, the one hackability is ranked on)" if profile else ""
    blocks: list[Block] = [f"Reward-hacking probes under {score} scores{which}:", table]
    gaps = unmeasured_probe_notes(summary.verifiers, score)
    if gaps:
        blocks.append(Note("n/a: " + "; ".join(gaps) + "."))
    return blocks


def _clinician_blocks(summary: Summary) -> list[Block]:
    """With clinicians' labels as the reference: how far clinicians agree with each other,
    the ceiling a verifier's "macro F1 vs each clinician" is to be read against."""
    table = clinicians_table(summary)
    if table is None:
        return []
    return [
        "Clinicians' labels: the reference is the majority label of an item's clinicians; an "
        "even split has no majority and is left out, as are labels of responses or criteria "
        'not in this run. Macro F1 is the mean of the F1 of "yes" and of "no". The '
        "ceiling compares clinicians with each other as HealthBench's meta-evaluation does: "
        "over the items two or more clinicians labelled, every ordered pair of two "
        'clinicians\' labels, pooled; "macro F1 vs each clinician" scores a verifier the same '
        "way, against each clinician's own label on those items.",
        table,
    ]


def _refine_section(summary: Summary) -> Section:
    table = refine_table(summary)
    if table is None:
        return Section("Refinement", [_absent(summary, ("refine",), "refinement iterations")])
    return Section(
        "Refinement",
        [
            "Each iteration rewrites every rubric from its two top-scored responses. "
            "'Tied before' counts prompts whose two top responses had equal scores under the "
            "old rubric; 'separated after' counts those the new rubric tells apart.",
            table,
            *_figures(summary, [], "refine"),
        ],
    )


def _train_section(summary: Summary) -> Section:
    t = summary.train
    table = train_table(summary)
    if t is None or table is None:
        return Section("Training", [_absent(summary, ("train",), "training results")])
    if t.adapter_weights_changed and t.base_weights_unchanged:
        check = "The LoRA adapter weights changed and the base weights did not, as they should."
    else:
        check = "Check the weights: the adapter should change and the base should not."
    figures = _figures(summary, [("train_reward", "Mean rubric reward per training step")], "train")
    gate = [Note(gate_text(t.hack_gate))] if t.hack_gate is not None else []
    return Section("Training", [check, *gate, table, *figures])


def _overoptimization_section(summary: Summary) -> Section:
    o = summary.overoptimization
    table = overoptimization_table(summary)
    if o is None or table is None:
        note = _absent(summary, ("overoptimization",), "checkpoint comparison")
        return Section("Over-optimisation", [note])
    if o.flagged:
        steps = ", ".join(fmt_number(s) for s in o.flagged_steps)
        flag = (
            f"Flagged at step {steps}: the rubric reward rose while the win rate against the "
            "base fell, the sign of a policy exploiting the rubric."
        )
    else:
        flag = "Not flagged: no checkpoint had the rubric reward rise while the win rate fell."
    blocks: list[Block] = [flag, table]
    caption = "Rubric reward and win rate against the base, per checkpoint"
    blocks += _figures(summary, [("overoptimization", caption)], "overoptim")
    return Section("Over-optimisation", blocks)


def _theory_section(summary: Summary) -> Section:
    table = theory_table(summary)
    theory = summary.theory or Theory()
    named = [
        ("theory_fig2a", "Win rate against KL for each misspecification pattern (Fig. 2a)"),
        ("theory_fig2b", "Win rate against KL when only the top share is ranked right (Fig. 2b)"),
        ("theory_training", "Win rate over tabular training steps (Fig. 4 analogue)"),
    ]
    figures = _figures(summary, named, "theory")
    if table is None and not figures:
        return Section("Theory", [_absent(summary, ("theory",), "theory results")])
    blocks: list[Block] = [
        "Win rate against the reference policy under a KL budget when the proxy reward is a "
        "measure-preserving misordering of the gold reward (Theorem 1), closed form."
    ]
    blocks += [table] if table else []
    peaks = theory.peaks
    blocks += [Items([(n, _peak_text(p)) for n, p in peaks.items() if _interior_peak(p, theory)])]
    mc = theory.monte_carlo
    if mc is not None:
        blocks.append(
            f"A Monte Carlo check with {fmt_number(mc.n)} samples agrees with the closed "
            f"form to a largest absolute error of {fmt_error(mc.max_abs_error)}."
        )
    blocks += figures
    return Section("Theory", [b for b in blocks if not (isinstance(b, Items) and not b.items)])


def _interior_peak(peak: Peak, theory: Theory) -> bool:
    """A peak strictly inside the KL range: the win rate rises, then falls (monotone curves
    have their maximum at an end of the range, which is no peak)."""
    kls = [kl for r in theory.kl_table if (kl := _real(r.get("kl"))) is not None]
    kl = _real(peak.kl)
    return kl is not None and bool(kls) and 0.05 < kl < max(kls) - 0.05


def _peak_text(peak: Peak) -> str:
    return f"peaks at win rate {fmt_metric(peak.win_rate)} (KL {fmt_metric(peak.kl)})"


def _unscored_section(summary: Summary) -> Section:
    table = unscored_table(summary)
    text = (
        "An answer that could not be obtained or parsed is unscored: it is excluded from every "
        'score and metric, never counted as "no" or as a loss.'
    )
    return Section("Unscored", [text, table or Note("Not run: no unscored counts recorded.")])


def _endpoints_section(summary: Summary) -> Section:
    blocks: list[Block] = [
        "Roles served by a pool of endpoints: each request went to the endpoint with the "
        "fewest requests outstanding. A connection error, a timeout or a server error (5xx) "
        "took an endpoint out of rotation, and its request moved to another endpoint; a health "
        "probe put it back. Rejected counts the requests' own errors (4xx), which do not move. "
        "One row per endpoint each time the role was opened (a stage that starts it anew, or "
        "a rerun, adds rows).",
    ]
    table = endpoints_table(summary)
    if table is not None:
        blocks.append(table)
    events = endpoint_events(summary)
    if events:
        blocks.append(Items(events))
    return Section("Endpoints", blocks)


def _grading_section(summary: Summary) -> Section:
    table = grading_table(summary)
    if table is None:
        return Section("Grading", [_absent(summary, ("verify",), "graded responses")])
    return Section(
        "Grading",
        [
            "HealthBench-style grading, one source model at a time. A response scores the "
            "points of the criteria it meets over its rubric's positive points, not clipped "
            "(a penalty can take it below 0); a model's score is the mean over its responses, "
            "clipped to [0, 1], with a 95% percentile bootstrap interval over responses. A "
            "prompt tag (theme:...) scores the responses to the prompts that carry it; a "
            "criterion tag (axis:...) scores each response over only the criteria with that "
            "tag, leaving out responses whose tagged criteria have no positive points. A "
            "response with too little of its rubric scored is unscored: left out and counted.",
            table,
            *_figures(summary, [("grading_axes", GRADING_AXES_CAPTION)], "grading"),
        ],
    )
