"""Refinement-through-Differentiation (the paper's Algorithm 1).

Each iteration, for every prompt still in play (batched across prompts): score the remaining
candidate pool with the current rubric, select a pair (`top2`: stable sort by score, ties to
the earlier candidate; `diverse`: the best candidate and the best one from another model,
falling back to `top2`), ask the proposer to rewrite the whole rubric from the prompt, the
rubric and the pair, and remove the pair from the pool. A prompt stops when fewer than two
candidates remain. Each iteration records how many prompts had their top two tied before and
how many of those the new rubric separates, and the criteria count.

Every iteration is checkpointed atomically under `refine/`, so a killed run resumes at the
next iteration and ends with the same records as an uninterrupted one. An iteration whose
verification is mostly unscored (`verify.max_unscored_share`) stops refinement before any
rubric is rewritten from it.

    harness refine -c configs/default.yaml
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from harness.config import HarnessConfig, VerifyConfig
from harness.jsonl import write_atomic, write_records
from harness.proposer import Refinement, rewrite
from harness.reward import CandidateRewards, rewards
from harness.roles import Role
from harness.types import Candidate, Prompt, Record, Rubric, Skip, Verdict
from harness.verifier import Job, check_unscored, verify


class IterationStats(Record):
    iteration: int
    num_prompts: int
    num_refined: int
    num_failed: int
    tied_before: int
    separated_after: int
    num_criteria_mean: float
    num_unscored_verdicts: int


def ranked(pool: Sequence[Candidate], scores: CandidateRewards) -> list[Candidate]:
    """Best first; a stable sort, so ties keep pool order; unscored candidates go last."""
    return sorted(pool, key=lambda c: (scores.get(c.id) is None, -(scores.get(c.id) or 0.0)))


def select_pair(
    pool: Sequence[Candidate], scores: CandidateRewards, strategy: str = "top2"
) -> tuple[Candidate, Candidate] | None:
    if len(pool) < 2:
        return None
    order = ranked(pool, scores)
    if strategy == "diverse":
        other = next((c for c in order[1:] if c.model != order[0].model), None)
        if other is not None:
            return order[0], other
    return order[0], order[1]


def is_tied(pair: tuple[Candidate, Candidate], scores: CandidateRewards) -> bool:
    return scores.get(pair[0].id) == scores.get(pair[1].id)


@dataclass
class RefineState:
    """What a checkpoint holds: enough to continue after the last finished iteration."""

    iteration: int = 0
    current: dict[str, Rubric] = field(default_factory=dict)
    used: set[str] = field(default_factory=set)
    new_rubrics: list[Rubric] = field(default_factory=list)
    stats: list[IterationStats] = field(default_factory=list)
    skips: list[Skip] = field(default_factory=list)

    def as_record(self) -> str:
        return json.dumps({
            "iteration": self.iteration,
            "current": [r.model_dump(mode="json") for r in self.current.values()],
            "used": sorted(self.used),
            "new_rubrics": [r.model_dump(mode="json") for r in self.new_rubrics],
            "stats": [s.model_dump(mode="json") for s in self.stats],
            "skips": [s.model_dump(mode="json") for s in self.skips],
        })  # fmt: skip

    @classmethod
    def from_json(cls, text: str) -> RefineState:
        data = json.loads(text)
        return cls(
            iteration=data["iteration"],
            current={r["prompt_id"]: Rubric.model_validate(r) for r in data["current"]},
            used=set(data["used"]),
            new_rubrics=[Rubric.model_validate(r) for r in data["new_rubrics"]],
            stats=[IterationStats.model_validate(s) for s in data["stats"]],
            skips=[Skip.model_validate(s) for s in data["skips"]],
        )


def load_checkpoint(folder: Path, initial: Sequence[Rubric]) -> RefineState:
    checkpoints = sorted(folder.glob("iteration-*.json"), key=lambda p: int(p.stem.split("-")[1]))
    if checkpoints:
        return RefineState.from_json(checkpoints[-1].read_text(encoding="utf-8"))
    return RefineState(current={r.prompt_id: r for r in initial})


def score_pool(
    jobs: Sequence[Job], verdicts: Sequence[Verdict], settings: VerifyConfig
) -> CandidateRewards:
    return {
        job.candidate.id: reward
        for job, reward in zip(jobs, rewards(jobs, verdicts, settings), strict=True)
    }


@dataclass(frozen=True)
class RefineRoles:
    proposer: Role
    verifier: Role


def refine(
    roles: RefineRoles,
    prompts: Sequence[Prompt],
    candidates: Sequence[Candidate],
    initial: Sequence[Rubric],
    config: HarnessConfig,
    templates: Path,
    folder: Path,
) -> RefineState:
    """Run the remaining iterations (resuming from the last checkpoint in `folder`)."""
    state = load_checkpoint(folder, initial)
    pools = {p.id: [c for c in candidates if c.prompt_id == p.id] for p in prompts}
    while state.iteration < config.refine.iterations:
        active = [p for p in prompts if p.id in state.current
                  and len(_remaining(pools[p.id], state.used)) >= 2]  # fmt: skip
        if not active:
            break
        _iterate(roles, active, pools, state, config, templates, folder)
    return state


def _remaining(pool: Sequence[Candidate], used: set[str]) -> list[Candidate]:
    return [c for c in pool if c.id not in used]


def _iterate(
    roles: RefineRoles,
    active: Sequence[Prompt],
    pools: dict[str, list[Candidate]],
    state: RefineState,
    config: HarnessConfig,
    templates: Path,
    folder: Path,
) -> None:
    iteration = state.iteration + 1
    jobs = [Job(p, c, state.current[p.id]) for p in active
            for c in _remaining(pools[p.id], state.used)]  # fmt: skip
    verdicts = verify(roles.verifier, jobs, config.verify, templates)
    write_records(folder / f"iteration-{iteration}.verdicts.jsonl", verdicts)
    # rubrics are never rewritten from a verifier that mostly gave no answer
    check_unscored(verdicts, config.verify, f"refine iteration {iteration}")
    scores = score_pool(jobs, verdicts, config.verify)
    pairs = {p.id: select_pair(_remaining(pools[p.id], state.used), scores, config.refine.pair)
             for p in active}  # fmt: skip
    items = [Refinement(p, state.current[p.id], pairs[p.id]) for p in active if pairs[p.id]]
    rubrics, skips = rewrite(roles.proposer, items, config.propose, templates)
    tied = {pid for pid, pair in pairs.items() if pair and is_tied(pair, scores)}
    separated = _separated(roles.verifier, items, rubrics, tied, config, templates)
    for item in items:
        state.used.update(c.id for c in item.pair)
    state.current.update({r.prompt_id: r for r in rubrics})
    state.new_rubrics.extend(rubrics)
    state.skips.extend(skips)
    state.stats.append(IterationStats(
        iteration=iteration, num_prompts=len(active), num_refined=len(rubrics),
        num_failed=len(skips), tied_before=len(tied), separated_after=separated,
        num_criteria_mean=_mean_criteria([state.current[p.id] for p in active]),
        num_unscored_verdicts=sum(v.met is None for v in verdicts),
    ))  # fmt: skip
    state.iteration = iteration
    write_atomic(folder / f"iteration-{iteration}.json", [state.as_record()])


def _separated(
    verifier: Role,
    items: Sequence[Refinement],
    rubrics: Sequence[Rubric],
    tied: set[str],
    config: HarnessConfig,
    templates: Path,
) -> int:
    """How many prompts whose pair was tied does the new rubric score apart?"""
    new = {r.prompt_id: r for r in rubrics}
    jobs = [Job(i.prompt, c, new[i.prompt.id]) for i in items
            if i.prompt.id in tied and i.prompt.id in new for c in i.pair]  # fmt: skip
    if not jobs:
        return 0
    scores = score_pool(jobs, verify(verifier, jobs, config.verify, templates), config.verify)
    pairs = [jobs[k : k + 2] for k in range(0, len(jobs), 2)]
    return sum(
        scores[a.candidate.id] is not None and scores[a.candidate.id] != scores[b.candidate.id]
        for a, b in pairs
    )


def _mean_criteria(rubrics: Sequence[Rubric]) -> float:
    return round(sum(len(r.criteria) for r in rubrics) / len(rubrics), 3) if rubrics else 0.0
