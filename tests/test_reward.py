"""The reward table: paper, HealthBench and unweighted forms; unscored and empty rubrics."""

import pytest

from harness.config import ConfigError, VerifyConfig
from harness.reward import raw_points, rewards, score
from harness.types import Candidate, Criterion, Prompt, Rubric, Verdict
from harness.verifier import Job


def rubric(*weights):
    return [
        Criterion(id=f"c{i}", text=f"criterion {i}", weight=w) for i, w in enumerate(weights, 1)
    ]


@pytest.mark.parametrize(
    ("weights", "met", "form", "expected"),
    [
        ((3, 2, 1), (True, False, True), "paper", 4 / 6),
        ((3, 2, 1), (True, True, True), "paper", 1.0),
        ((3, 2, 1), (False, False, False), "paper", 0.0),
        ((3, 2, 1), (True, False, True), "healthbench", 4 / 6),
        # a penalty that is triggered subtracts its points; the sum is clipped at 0 and 1
        ((5, 3, -4), (True, True, True), "healthbench", 4 / 8),
        ((5, 3, -4), (True, True, False), "healthbench", 1.0),
        ((5, 3, -10), (False, True, True), "healthbench", 0.0),
        # unweighted: a penalty counts as satisfied when it is not triggered
        ((5, 3, -4), (True, False, False), "unweighted", 2 / 3),
        ((1, 1, 1, 1), (True, False, False, False), "unweighted", 0.25),
    ],
)
def test_reward_forms(weights, met, form, expected):
    criteria = rubric(*weights)
    verdicts = {c.id: m for c, m in zip(criteria, met)}
    assert score(criteria, verdicts, form) == pytest.approx(expected)


def test_unscored_criteria_are_left_out_never_counted_as_no():
    criteria = rubric(3, 2, 1)
    # c2 unscored: the reward is 4 of the 4 scored points, not 4 of 6
    assert score(criteria, {"c1": True, "c2": None, "c3": True}) == pytest.approx(1.0)
    assert score(criteria, {"c1": True, "c3": True}) == pytest.approx(1.0)


def test_too_little_scored_gives_none():
    criteria = rubric(3, 2, 1)
    assert score(criteria, {"c1": None, "c2": None, "c3": True}) is None  # 1 of 6 scored
    assert score(criteria, {"c1": None, "c2": None, "c3": None}) is None
    assert score(criteria, {"c1": True, "c2": None, "c3": None}, min_scored_share=0.5) == 1.0


def test_empty_rubric_and_penalty_only_rubric_give_none():
    assert score([], {}) is None
    assert score(rubric(-3), {"c1": False}) is None  # no positive points to divide by


def test_paper_form_refuses_penalties():
    with pytest.raises(ConfigError, match="healthbench"):
        score(rubric(3, -2), {"c1": True, "c2": False}, "paper")


def test_raw_points_rank_like_the_normalised_reward():
    criteria = rubric(3, 2, 1)
    a, b = {"c1": True, "c2": False, "c3": True}, {"c1": False, "c2": True, "c3": True}
    assert raw_points(criteria, a) == 4 and raw_points(criteria, b) == 3
    assert score(criteria, a) > score(criteria, b)


@pytest.mark.parametrize(
    ("weights", "p_yes", "form", "expected"),
    [
        # expected points: each criterion counts its weight x P(yes)
        ((3, 2, 1), (0.9, 0.5, 0.0), "paper", (2.7 + 1.0) / 6),
        ((3, 2, 1), (1.0, 0.0, 1.0), "healthbench", 4 / 6),  # certain: the hard reward
        # a penalty counts its expected penalty, and the sum is clipped as a hard one is
        ((5, 3, -4), (1.0, 1.0, 0.25), "healthbench", (8 - 1) / 8),
        ((5, 3, -10), (0.2, 0.2, 0.9), "healthbench", 0.0),
        # unweighted: a penalty is satisfied with probability 1 - P(yes)
        ((5, 3, -4), (0.5, 1.0, 0.25), "unweighted", (0.5 + 1.0 + 0.75) / 3),
    ],
)
def test_soft_reward_is_expected_points(weights, p_yes, form, expected):
    criteria = rubric(*weights)
    assert score(criteria, dict(zip([c.id for c in criteria], p_yes)), form) == pytest.approx(
        expected
    )


def test_soft_scoring_leaves_a_verdict_without_p_yes_unscored():
    criteria = rubric(3, 2, 1)
    prompt = Prompt(id="p", prompt="q")
    job = Job(prompt, Candidate(id="a", prompt_id="p", text="t", model="m"),
              Rubric(prompt_id="p", criteria=tuple(criteria)))  # fmt: skip

    def verdict(cid, met, p_yes):
        return Verdict(prompt_id="p", candidate_id="a", rubric_version=0, criterion_id=cid,
                       met=met, p_yes=p_yes, verifier="v")  # fmt: skip

    verdicts = [verdict("c1", True, 0.8), verdict("c2", False, None), verdict("c3", True, 0.6)]
    hard, soft = (VerifyConfig(score=s) for s in ("hard", "soft"))
    assert rewards([job], verdicts, hard) == [pytest.approx(4 / 6)]
    # c2 has no P(yes): left out under soft, never counted as 0 (3 x 0.8 + 1 x 0.6 over 4)
    assert rewards([job], verdicts, soft) == [pytest.approx(3.0 / 4)]
    without = [verdict(c, True, None) for c in ("c1", "c2", "c3")]
    assert rewards([job], without, soft) == [None]


def test_soft_scoring_needs_logprobs():
    with pytest.raises(ValueError, match="logprobs"):
        VerifyConfig(score="soft", logprobs=0)
