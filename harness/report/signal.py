"""Does this run measure anything? One row per signal the report's numbers rest on, each with
its number, whether it carries signal, and, when it does not, why in one line and what to
change. A number that cannot mean anything is said to be so here, before any table shows it.

Rows (a stage that did not run gives none):
- each verifier's off-topic accuracy with its 95% interval: no signal unless the interval lies
  above 0.5 (chance);
- the share of GRPO groups whose completions all got the same reward (no advantage, nothing
  learnt), and whether the LoRA adapter changed at all;
- the share of judged pairs whose two sides wrote the same text (nothing to judge), and the
  judge's position flip rate over the others, hard and soft (the soft one with the judge's mean lean
  toward the first position taken out of each order): above 0.5 the order decides more than
  the responses;
- the share of the reward verifier's criteria that gave every candidate of their prompt the
  same verdict (scored soft: a P(yes) spanning less than 0.1 over them): such a criterion
  cannot tell responses apart.

    harness report runs/default    # the section at the top of report.md
"""

from __future__ import annotations

from collections.abc import Sequence

from harness.report.format import _real, fmt_metric, fmt_pct
from harness.summary_schema import (
    Discrimination,
    PairwiseSummary,
    SignalRow,
    Summary,
    VerifierRow,
)
from harness.types import Verdict

CHANCE = 0.5
MAX_ZERO_SPREAD_SHARE = 0.5
MAX_FLIP_RATE = 0.5
MAX_CONSTANT_SHARE = 0.5
MAX_IDENTICAL_SHARE = 0.5


def signal_rows(summary: Summary) -> list[SignalRow]:
    """Every row the run has the numbers for, in the report's order."""
    rows = [_off_topic_row(v) for v in summary.verifiers or []]
    rows += _training_rows(summary)
    rows += _judge_rows(summary)
    if summary.discrimination is not None:
        rows.append(_discrimination_row(summary.discrimination))
    return rows


def beats_chance(verifier: VerifierRow) -> bool | None:
    """Whether a verifier's off-topic accuracy lies above chance with 95% confidence; None
    where the probe did not run (no pairs)."""
    low = _real((verifier.off_topic_ci95 or [None])[0])
    if _real(verifier.off_topic_accuracy) is None or low is None:
        return None
    return low > CHANCE


def _off_topic_row(verifier: VerifierRow) -> SignalRow:
    ok = beats_chance(verifier)
    shown = _accuracy_text(verifier)
    row = SignalRow(
        signal="off-topic accuracy",
        subject=verifier.label,
        value=verifier.off_topic_accuracy,
        ci95=verifier.off_topic_ci95,
        shown=shown,
        ok=ok,
    )
    if ok is None:
        return row.model_copy(update={"shown": "not measured (no off-topic pairs)"})
    if ok:
        return row
    return row.model_copy(
        update={
            "why": "its reward does not rank a prompt's own answers above other prompts' "
            "answers with 95% confidence: it is not reading responses against the rubric, "
            "so its agreement, tail and training numbers mean nothing",
            "fix": "use a larger verifier; score verdicts by P(yes) (verify.score: soft); "
            "raise compare.off_topic_per_prompt or data.max_prompts for a narrower interval",
        }
    )


def _accuracy_text(verifier: VerifierRow) -> str:
    low, high = verifier.off_topic_ci95 or (None, None)
    interval = f"[{fmt_metric(low)}, {fmt_metric(high)}]"
    text = f"{fmt_metric(verifier.off_topic_accuracy)} (95% CI {interval}"
    text += f", {verifier.off_topic_pairs or 0} pairs)"
    sides = [
        f"{score} {fmt_metric(value)}"
        for score, value in (
            ("hard", verifier.off_topic_accuracy_hard),
            ("soft", verifier.off_topic_accuracy_soft),
        )
        if _real(value) is not None
    ]
    return f"{text}; {', '.join(sides)}" if sides else text


def _training_rows(summary: Summary) -> list[SignalRow]:
    train = summary.train
    if train is None:
        return []
    rows = []
    share = _real(train.zero_spread_share)
    if share is not None:
        ok = share <= MAX_ZERO_SPREAD_SHARE
        rows.append(
            SignalRow(
                signal="GRPO groups with zero reward spread",
                value=share,
                shown=fmt_pct(share),
                ok=ok,
                why=None
                if ok
                else "most groups gave every completion the same reward, so "
                "GRPO had no advantage to learn from",
                fix=None
                if ok
                else "longer completions (train.max_completion_length), larger "
                "groups (train.num_generations), verify.score: soft, or a verifier above chance",
            )
        )
    if train.adapter_weights_changed is not None:
        changed = train.adapter_weights_changed
        rows.append(
            SignalRow(
                signal="LoRA adapter changed",
                shown="yes" if changed else "no",
                ok=changed,
                why=None
                if changed
                else "no gradient reached the adapter: the trained policy "
                "is the base policy, and judging it against the base measures nothing",
                fix=None
                if changed
                else "give rewards a spread within groups (row above), or "
                "more steps (train.max_steps)",
            )
        )
    return rows


def _judge_rows(summary: Summary) -> list[SignalRow]:
    pairwise = summary.pairwise
    if pairwise is None:
        return []
    rows = [_identical_row(pairwise)] if pairwise.num_identical is not None else []
    total = (pairwise.n or 0) + (pairwise.unscored or 0)
    unmeasured = (
        "not measured (every pair's two sides wrote the same text)"
        if total and pairwise.num_identical == total
        else "not measured (no pair judged in both orders)"
    )
    rows.append(_flip_row("hard", pairwise.position_flip_rate, HARD_FLIP, unmeasured))
    if pairwise.score == "soft" or pairwise.soft_position_flip_rate is not None:
        soft = _flip_row("soft", pairwise.soft_position_flip_rate, SOFT_FLIP, unmeasured)
        bias = _real(pairwise.position_bias)
        if soft.value is not None and bias is not None:
            soft = soft.model_copy(update={"shown": f"{soft.shown} (lean toward the first "
                                                     f"shown: {bias:+.3f} in P)"})  # fmt: skip
        rows.append(soft)
    return rows


def _identical_row(pairwise: PairwiseSummary) -> SignalRow:
    total = (pairwise.n or 0) + (pairwise.unscored or 0)
    share = pairwise.num_identical / total if total else None
    ok = None if share is None else share <= MAX_IDENTICAL_SHARE
    return SignalRow(
        signal="judged pairs whose two sides wrote the same text",
        value=share,
        shown=f"{fmt_pct(share)} ({pairwise.num_identical} of {total})",
        ok=ok,
        why=None
        if ok in (True, None)
        else "the trained policy wrote what the base policy "
        "wrote: training moved it too little for a judge to see, so the win rate is ties",
        fix=None
        if ok in (True, None)
        else "train longer or faster (train.max_steps, "
        "train.learning_rate), with a reward that has signal (rows above)",
    )


HARD_FLIP = (
    "the judge's verdict follows which response comes first more often than the responses "
    "themselves, so its hard win rate is mostly ties",
    "judge.score: soft (P(A) averaged over both orders), or a larger judge",
)
SOFT_FLIP = (
    "even with its lean toward one position taken out, the judge's P(A) disagrees between the "
    "two orders on most pairs: it has no preference of its own to measure",
    "a larger judge, or more judged pairs (judge.samples) to tell a weak preference from none",
)


def _flip_row(
    score: str, rate: float | None, reasons: tuple[str, str], unmeasured: str
) -> SignalRow:
    value = _real(rate)
    row = SignalRow(
        signal=f"judge position flip rate ({score})",
        value=value,
        shown=fmt_pct(value),
        ok=None if value is None else value <= MAX_FLIP_RATE,
    )
    if row.ok is None:
        return row.model_copy(update={"shown": unmeasured})
    if row.ok:
        return row
    return row.model_copy(update={"why": reasons[0], "fix": reasons[1]})


def _discrimination_row(discrimination: Discrimination) -> SignalRow:
    soft = discrimination.score == "soft"
    share = _real(discrimination.constant_share_soft if soft else discrimination.constant_share)
    constant = discrimination.num_constant_soft if soft else discrimination.num_constant
    total = discrimination.num_criteria_soft if soft else discrimination.num_criteria
    ok = None if share is None else share <= MAX_CONSTANT_SHARE
    shown = f"{fmt_pct(share)} ({constant} of {total} criteria, {discrimination.score})"
    other = discrimination.constant_share if soft else discrimination.constant_share_soft
    if _real(other) is not None:
        shown += f"; {'hard' if soft else 'soft'} {fmt_pct(other)}"
    return SignalRow(
        signal="criteria that cannot discriminate",
        value=share,
        shown=shown if share is not None else "not measured (no prompt with two candidates)",
        ok=ok,
        why=None if ok in (True, None) else "most criteria gave every candidate of their "
        "prompt the same verdict, so they cannot tell its responses apart",
        fix=None if ok in (True, None) else "more refinement iterations (refine.iterations), "
        "more diverse candidates (rollouts.models), or a stronger verifier",
    )  # fmt: skip


MIN_SOFT_SPAN = 0.1  # a criterion's P(yes) must span this much over a prompt's candidates


def criteria_discrimination(verdicts: Sequence[Verdict], score: str = "hard") -> Discrimination:
    """Of the (prompt, rubric version, criterion) with verdicts on two or more candidates, how
    many had the same hard verdict on all of them, and (where P(yes) was read) how many had a
    P(yes) spanning less than MIN_SOFT_SPAN."""
    met: dict[tuple[str, int, str], list[bool]] = {}
    p_yes: dict[tuple[str, int, str], list[float]] = {}
    for verdict in verdicts:
        key = (verdict.prompt_id, verdict.rubric_version, verdict.criterion_id)
        if verdict.met is not None:
            met.setdefault(key, []).append(verdict.met)
        if verdict.met is not None and verdict.p_yes is not None:
            p_yes.setdefault(key, []).append(verdict.p_yes)
    hard = [len(set(values)) == 1 for values in met.values() if len(values) >= 2]
    soft = [max(v) - min(v) < MIN_SOFT_SPAN for v in p_yes.values() if len(v) >= 2]
    return Discrimination(
        num_criteria=len(hard),
        num_constant=sum(hard),
        constant_share=sum(hard) / len(hard) if hard else None,
        num_criteria_soft=len(soft) if soft else None,
        num_constant_soft=sum(soft) if soft else None,
        constant_share_soft=sum(soft) / len(soft) if soft else None,
        score="soft" if score == "soft" else "hard",
    )
