"""Grading: HealthBench-style scores of each source model, overall and by tag, from the verify
stage's jobs and verdicts. Written to RUN_DIR/grading.json by the verify stage; the report and
the terminal read it through `harness.summary_schema.Grading`.

How a model is graded (one model at a time, as HealthBench does):
- a response's score is the points of the criteria met over the rubric's positive points,
  NOT clipped (a penalty can take it below 0), under the harness's unscored policy
  (`harness.reward.unclipped_score` with `verify.min_scored_share`): a response whose verdicts
  leave too little of the rubric scored is unscored, left out of every mean and counted;
- the model's score is the mean of its responses' scores, clipped to [0, 1], with a 95%
  percentile bootstrap interval over responses (BOOTSTRAP_RESAMPLES, seed BOOTSTRAP_SEED; the
  ends of the interval of the mean are clipped, as clipping keeps the order of the means);
- a prompt tag (`Prompt.metadata["example_tags"]`, e.g. theme:emergency_referrals) scores the
  responses to the prompts that carry it; a criterion tag (`Criterion.tags`, e.g.
  axis:accuracy) scores each response over only the criteria with that tag, under the same
  unscored policy, leaving out responses whose tagged criteria have no positive points.

The score is always the HealthBench form, whatever `verify.reward` says: with positive weights
alone it equals the paper's form.

    harness verify -c configs/default.yaml
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from harness.config import VerifyConfig
from harness.metrics import bootstrap_ci
from harness.reward import unclipped_score
from harness.summary_schema import Grading, ModelGrade, TagScore
from harness.types import Verdict
from harness.verifier import Job, met_by_candidate

BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0


@dataclass
class ResponseScores:
    """One response's unclipped scores: overall (None when unscored) and per criterion tag
    (only the tags it has a score under)."""

    model: str
    reference: bool
    prompt_tags: tuple[str, ...]
    overall: float | None
    by_tag: dict[str, float] = field(default_factory=dict)


def grade(jobs: Sequence[Job], verdicts: Sequence[Verdict], settings: VerifyConfig) -> Grading:
    """Every source model's grade, in the order the models first appear among the jobs."""
    table = met_by_candidate(verdicts)
    share = settings.min_scored_share
    responses = [score_response(job, table.get(job.candidate.id, {}), share) for job in jobs]
    prompt_tags = sorted({t for job in jobs for t in example_tags(job)})
    criterion_tags = sorted({t for job in jobs for c in job.rubric.criteria for t in c.tags})
    models = list(dict.fromkeys(r.model for r in responses))
    return Grading(
        resamples=BOOTSTRAP_RESAMPLES,
        seed=BOOTSTRAP_SEED,
        min_scored_share=share,
        models=[
            grade_model([r for r in responses if r.model == m], prompt_tags, criterion_tags)
            for m in models
        ],
    )


def example_tags(job: Job) -> tuple[str, ...]:
    return tuple(str(tag) for tag in job.prompt.metadata.get("example_tags", []))


def score_response(job: Job, met: Mapping[str, bool | None], min_share: float) -> ResponseScores:
    criteria = job.rubric.criteria
    overall = unclipped_score(criteria, met, min_share)
    by_tag: dict[str, float] = {}
    if overall is not None:  # an unscored response is left out of its tags too
        for tag in sorted({t for c in criteria for t in c.tags}):
            tagged = [c for c in criteria if tag in c.tags]
            value = unclipped_score(tagged, met, min_share)
            if value is not None:
                by_tag[tag] = value
    candidate = job.candidate
    return ResponseScores(candidate.model, candidate.reference, example_tags(job), overall, by_tag)


def grade_model(
    responses: list[ResponseScores], prompt_tags: list[str], criterion_tags: list[str]
) -> ModelGrade:
    scored = [r for r in responses if r.overall is not None]
    overall = [r.overall for r in scored]
    score, ci95 = clipped_mean(overall)
    tags = [
        tag_score(tag, "prompt", [r.overall for r in scored if tag in r.prompt_tags])
        for tag in prompt_tags
    ]
    tags += [
        tag_score(tag, "criterion", [r.by_tag[tag] for r in scored if tag in r.by_tag])
        for tag in criterion_tags
    ]
    return ModelGrade(
        model=responses[0].model,
        reference=any(r.reference for r in responses),
        score=score,
        ci95=ci95,
        n=len(overall),
        num_unscored=len(responses) - len(overall),
        tags=tags,
    )


def tag_score(tag: str, kind: Literal["prompt", "criterion"], values: list) -> TagScore:
    score, ci95 = clipped_mean(values)
    return TagScore(tag=tag, kind=kind, score=score, ci95=ci95, n=len(values))


def clipped_mean(values: Sequence[float]) -> tuple[float | None, list[float] | None]:
    """The mean of the scores clipped to [0, 1] and its 95% percentile bootstrap interval
    (clipped likewise); (None, None) without scores."""
    if not values:
        return None, None
    low, high = bootstrap_ci(values, BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED)
    return _clip(sum(values) / len(values)), [_clip(low), _clip(high)]


def _clip(value: float) -> float:
    return min(1.0, max(0.0, value))
