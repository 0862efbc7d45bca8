"""Rubric reward: verdicts -> one number per response. `rewards` is the one path from a batch
of verifier jobs and their verdicts to rewards: it scores candidates in refinement, writes
`rewards.jsonl`, rewards the policy in training and scores responses in the verifier
comparison and the over-optimisation check.

Forms:
- `paper`: r = sum(w * v) / sum(w), weights 1..3 (Chasing the Tail, section 2).
- `healthbench`: r = sum(points of criteria met) / sum(positive points), clipped to [0, 1]; a
  negative criterion is a penalty that "yes" triggers. With only positive weights it equals
  `paper`.
- `unweighted`: the share of criteria satisfied (a penalty counts as satisfied when not met).

Scores (`verify.score`):
- `hard`: a criterion counts its points when its verdict is "yes".
- `soft`: expected points, a criterion counting its points x P(yes) (a penalty its expected
  penalty), under the same normalisation and clipping. A verdict without a usable P(yes) is
  unscored under `soft`: a hard 0/1 is not mixed into expected values.

Unscored verdicts (`None`) are never counted as "no". Policy for a partly unscored rubric:
the reward is computed over the scored criteria alone, provided they carry at least
`min_scored_share` of the rubric's absolute weight (default 0.5); otherwise, and always when
every verdict is unscored or the rubric is empty, the reward is `None` (unscored), which
training leaves out of the group baseline.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

from harness.config import ConfigError, VerifyConfig
from harness.types import Criterion, Verdict
from harness.verifier import Job, met_by_candidate, p_yes_by_candidate

RewardForm = Literal["paper", "healthbench", "unweighted"]
MIN_SCORED_SHARE = 0.5

Met = bool | float | None  # a verdict, or P(yes) under soft scoring; None: unscored
CandidateRewards = dict[str, float | None]  # candidate id -> reward
PromptRewards = dict[str, CandidateRewards]  # prompt id -> candidate id -> reward


def rewards(
    jobs: Sequence[Job], verdicts: Sequence[Verdict], settings: VerifyConfig
) -> list[float | None]:
    """The reward of every job from its candidate's verdicts, in the profile's `verify:`
    reward form; None where too little of the rubric was scored."""
    table = p_yes_by_candidate(verdicts) if settings.score == "soft" else met_by_candidate(verdicts)
    return [
        score(job.rubric.criteria, table.get(job.candidate.id, {}), settings.reward,
              settings.min_scored_share)
        for job in jobs
    ]  # fmt: skip


def score(
    criteria: Sequence[Criterion],
    met: Mapping[str, Met],
    form: RewardForm = "healthbench",
    min_scored_share: float = MIN_SCORED_SHARE,
) -> float | None:
    """The reward of one response, or None when too little of the rubric could be scored."""
    scored = scored_criteria(criteria, met, min_scored_share)
    if not scored:
        return None
    if form == "unweighted":
        return sum(_satisfied(c, met[c.id]) for c in scored) / len(scored)
    if form == "paper" and any(c.weight < 0 for c in criteria):
        raise ConfigError(
            "verify.reward: 'paper' needs positive weights; this rubric has penalties, "
            "use 'healthbench'"
        )
    share = points_share(scored, met)
    return None if share is None else min(1.0, max(0.0, share))


def _satisfied(criterion: Criterion, met: Met) -> float:
    """1 when a criterion's verdict is the good one (met, or a penalty not met), in
    expectation under soft scoring."""
    value = float(met)  # type: ignore[arg-type]
    return value if criterion.weight > 0 else 1.0 - value


def unclipped_score(
    criteria: Sequence[Criterion],
    met: Mapping[str, Met],
    min_scored_share: float = MIN_SCORED_SHARE,
) -> float | None:
    """HealthBench's score of one response before any clipping (a penalty can take it below
    0): points met over positive points, under the same unscored policy as `score`."""
    scored = scored_criteria(criteria, met, min_scored_share)
    return points_share(scored, met) if scored else None


def scored_criteria(
    criteria: Sequence[Criterion], met: Mapping[str, Met], min_scored_share: float
) -> list[Criterion]:
    """The criteria with a verdict; none when they carry less than `min_scored_share` of the
    criteria's absolute weight (or when there are no criteria)."""
    scored = [c for c in criteria if met.get(c.id) is not None]
    total = sum(abs(c.weight) for c in criteria)
    if not scored or sum(abs(c.weight) for c in scored) < min_scored_share * total:
        return []
    return scored


def points_share(scored: Sequence[Criterion], met: Mapping[str, Met]) -> float | None:
    """Points of the criteria met (expected points under soft scoring) over the positive
    points; None without positive points."""
    positive = sum(c.weight for c in scored if c.weight > 0)
    if positive == 0:
        return None
    return sum(c.weight * float(met[c.id]) for c in scored) / positive  # type: ignore[arg-type]


def raw_points(criteria: Sequence[Criterion], met: Mapping[str, bool | None]) -> int:
    """The unnormalised sum of points met (how the paper's code ranks responses)."""
    return sum(c.weight for c in criteria if met.get(c.id))
