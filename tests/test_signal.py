""" "Does this run measure anything?": each check's number, its verdict, and why it fails;
"At a glance" never recommends a verifier that is no better than chance."""

from __future__ import annotations

import pytest

from harness.config import JudgeConfig
from harness.judge import judge_pairs, pair_up, summarise
from harness.prompts import PROMPTS_DIR
from harness.report.sections import build_sections, glance_items, pick_verifier
from harness.report.signal import criteria_discrimination, signal_rows
from harness.roles import build_role
from harness.summary_schema import (
    Discrimination,
    PairwiseSummary,
    Summary,
    TrainSummary,
    VerifierRow,
)
from harness.types import Candidate, Prompt, Verdict

from .conftest import scripted_role


def verifier(label: str, accuracy: float, ci95: list[float], **fields) -> VerifierRow:
    return VerifierRow(label=label, off_topic_accuracy=accuracy, off_topic_ci95=ci95,
                       off_topic_pairs=24, **fields)  # fmt: skip


GOOD = Summary(
    verifiers=[verifier("big", 0.85, [0.75, 0.95], reference=True, params=500)],
    train=TrainSummary(zero_spread_share=0.25, adapter_weights_changed=True),
    pairwise=PairwiseSummary(score="soft", position_flip_rate=0.8, soft_position_flip_rate=0.25),
    discrimination=Discrimination(num_criteria=10, num_constant=3, constant_share=0.3),
)


def rows_by_name(summary: Summary) -> dict[str, object]:
    return {r.signal + (f": {r.subject}" if r.subject else ""): r for r in signal_rows(summary)}


def test_a_run_with_signal_passes_every_check_but_the_one_that_fails():
    rows = rows_by_name(GOOD)
    assert list(rows) == [
        "off-topic accuracy: big",
        "GRPO groups with zero reward spread",
        "LoRA adapter changed",
        "judge position flip rate (hard)",
        "judge position flip rate (soft)",
        "criteria that cannot discriminate",
    ]
    failing = [name for name, row in rows.items() if row.ok is False]
    assert failing == ["judge position flip rate (hard)"]  # 80% of pairs flip with the order
    for name, row in rows.items():
        assert (row.why is None) == (row.ok is not False), name
        assert (row.fix is None) == (row.ok is not False), name
    assert rows["off-topic accuracy: big"].shown.startswith("0.850 (95% CI [0.750, 0.950]")


@pytest.mark.parametrize(
    ("update", "name", "why"),
    [
        ({"verifiers": [verifier("v", 0.6, [0.45, 0.75])]}, "off-topic accuracy: v", "rubric"),
        ({"train": TrainSummary(zero_spread_share=1.0, adapter_weights_changed=True)},
         "GRPO groups with zero reward spread", "same reward"),
        ({"train": TrainSummary(zero_spread_share=0.0, adapter_weights_changed=False)},
         "LoRA adapter changed", "no gradient"),
        ({"pairwise": PairwiseSummary(score="soft", position_flip_rate=0.0,
                                      soft_position_flip_rate=0.75)},
         "judge position flip rate (soft)", "no preference of its own"),
        ({"discrimination": Discrimination(num_criteria=4, num_constant=4, constant_share=1.0)},
         "criteria that cannot discriminate", "same verdict"),
    ],
)  # fmt: skip
def test_each_check_fails_with_why_and_what_to_change(update, name, why):
    row = rows_by_name(GOOD.model_copy(update=update))[name]
    assert row.ok is False and why in row.why and row.fix


def test_an_interval_that_touches_chance_is_no_signal():
    at_chance = verifier("constant", 0.5, [0.5, 0.5])
    assert rows_by_name(Summary(verifiers=[at_chance]))["off-topic accuracy: constant"].ok is False


def test_checks_without_numbers_say_not_measured():
    rows = rows_by_name(
        Summary(
            verifiers=[VerifierRow(label="v", off_topic_pairs=0)],
            pairwise=PairwiseSummary(score="soft", position_flip_rate=None),
            discrimination=Discrimination(num_criteria=0, num_constant=0),
        )
    )
    assert {name: row.ok for name, row in rows.items()} == {
        "off-topic accuracy: v": None,
        "judge position flip rate (hard)": None,
        "judge position flip rate (soft)": None,
        "criteria that cannot discriminate": None,
    }
    assert all(row.shown.startswith("not measured") for row in rows.values())


def test_the_signal_section_comes_first_and_counts_what_fails():
    summary = GOOD.model_copy(update={"signal": signal_rows(GOOD)})
    first = build_sections(summary)[0]
    assert first.title == "Does this run measure anything?"
    assert "1 of 6 checks carry no signal" in first.blocks[1]


def test_at_a_glance_never_recommends_a_verifier_at_chance():
    summary = Summary(
        verifiers=[
            verifier("random", 0.5, [0.4, 0.6], params=1, tail_pairwise_accuracy=0.9),
            verifier("real", 0.8, [0.7, 0.9], params=100, tail_pairwise_accuracy=0.7),
            verifier("ref", 0.9, [0.8, 1.0], params=500, reference=True),
        ]
    )
    picked, best = pick_verifier(summary)
    assert picked.label == best.label == "real"  # the random one's tail accuracy is luck


def test_at_a_glance_says_so_when_no_verifier_beats_chance():
    summary = Summary(
        verifiers=[
            verifier("a", 0.55, [0.45, 0.65], params=1, tail_pairwise_accuracy=0.9),
            verifier("b", 0.5, [0.5, 0.5], params=9, reference=True),
        ]
    )
    text = dict(glance_items(summary))["Verifier"]
    assert text.startswith("none recommended: no verifier beats chance")
    assert "a 0.550 (at chance)" in text


def verdict(prompt: str, candidate: str, criterion: str, met: bool | None) -> Verdict:
    return Verdict(prompt_id=prompt, candidate_id=candidate, rubric_version=1,
                   criterion_id=criterion, met=met, verifier="v")  # fmt: skip


def test_a_criterion_with_one_verdict_for_every_candidate_cannot_discriminate():
    verdicts = [
        verdict("p", "a", "c1", True), verdict("p", "b", "c1", True),    # constant
        verdict("p", "a", "c2", True), verdict("p", "b", "c2", False),   # discriminates
        verdict("p", "a", "c3", True), verdict("p", "b", "c3", None),    # one scored: left out
        verdict("q", "x", "c1", False), verdict("q", "y", "c1", False),  # constant
    ]  # fmt: skip
    assert criteria_discrimination(verdicts) == Discrimination(
        num_criteria=3, num_constant=2, constant_share=2 / 3
    )


def test_a_blind_judge_on_pairs_that_differ_fails_both_flip_checks(context):
    """The scripted judge of `rule: blind` (always "the first response", P = 0.9) on a
    trained and a base side that wrote different texts."""
    judge = build_role("judge", scripted_role(rule="blind"), context)
    prompts = [Prompt(id=f"p{i}", prompt=f"question {i}") for i in range(3)]
    side = {
        name: [Candidate(id=f"p{i}:{name}", prompt_id=f"p{i}", text=f"{name} answer {i}",
                         model=name) for i in range(3)]
        for name in ("trained", "base")
    }  # fmt: skip
    settings = JudgeConfig(score="soft")
    judgements = judge_pairs(judge, prompts, pair_up(side["trained"], side["base"]), settings,
                             PROMPTS_DIR)  # fmt: skip
    summary = Summary(pairwise=summarise(judgements, settings))
    rows = rows_by_name(summary)
    assert rows["judged pairs whose two sides wrote the same text"].ok is True
    for score in ("hard", "soft"):
        row = rows[f"judge position flip rate ({score})"]
        assert row.ok is False and row.value == 1.0 and row.why and row.fix
    assert "+0.400 in P" in rows["judge position flip rate (soft)"].shown


def test_scored_soft_a_criterion_discriminates_when_its_p_yes_spans_a_tenth():
    def soft(candidate, criterion, p_yes):
        return verdict("p", candidate, criterion, p_yes > 0.5).model_copy(update={"p_yes": p_yes})

    verdicts = [soft("a", "c1", 0.30), soft("b", "c1", 0.35),  # both "no", and close: constant
                soft("a", "c2", 0.20), soft("b", "c2", 0.45)]  # both "no", but apart  # fmt: skip
    found = criteria_discrimination(verdicts, "soft")
    assert (found.constant_share, found.constant_share_soft) == (1.0, 0.5)
    row = rows_by_name(Summary(discrimination=found))["criteria that cannot discriminate"]
    assert row.ok is True and row.shown == "50.0% (1 of 2 criteria, soft); hard 100.0%"
