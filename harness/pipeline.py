"""The rubric pipeline over a run folder: prompts -> rollouts -> propose -> refine -> verify.

Each stage reads the files of the stages before it, writes its own files atomically, and
records its input fingerprint in `stages.json`; rerunning a finished stage does nothing, and a
killed stage reruns from its last checkpoint with its model calls answered from the cache.
A stage whose backend went away (`BackendGone`) or whose verdicts are mostly unscored
(`verify.max_unscored_share`) raises and is not marked done; the stages after it do not run.

Run folder: `prompts.jsonl`, `candidates.jsonl`, `rubrics.jsonl` (every version, with
lineage), `refine.jsonl` (per-iteration statistics), `verdicts.jsonl`, `rewards.jsonl`,
`grading.json` (HealthBench-style scores per model and tag),
`skipped.jsonl` (every item a stage could not produce, with the reason), `stages.json`.

    harness verify -c configs/default.yaml
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.backends.base import BackendGone
from harness.config import HarnessConfig
from harness.datasets import (
    PROPOSE_ALL,
    GivenData,
    carries_rubrics,
    export_rubric_dataset,
    load_candidates,
    load_given,
    load_prompts,
    load_rubrics,
)
from harness.grading import grade
from harness.jsonl import InputError, read_records, write_json, write_records
from harness.prompts import PROMPTS_DIR
from harness.proposer import propose
from harness.refiner import IterationStats, RefineRoles, refine
from harness.reward import rewards
from harness.roles import RolePool
from harness.rollouts import order_pool, roll_out
from harness.runstate import RunPaths, RunState, fingerprint
from harness.types import Prompt, Rubric, Skip, Verdict, latest_versions
from harness.verifier import Job, check_unscored, latest_rubric_jobs, met_by_candidate, verify


@dataclass
class StageResult:
    stage: str
    reused: bool
    counts: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


class Run(RunPaths):
    """A run folder (its files named by `RunPaths`), its stage state, and the roles its stages
    share."""

    def __init__(self, config: HarnessConfig, pool: RolePool) -> None:
        super().__init__(config.run_dir)
        self.config = config
        self.state = RunState(self.dir)
        self.pool = pool
        custom = config.prompts_dir
        self.templates = config.project_path(custom) if custom else PROMPTS_DIR

    def template_files(self) -> list[Path]:
        return sorted(self.templates.glob("*.j2"))

    def prompts(self) -> list[Prompt]:
        return read_records(self.prompts_path, Prompt)

    def rubrics(self) -> list[Rubric]:
        return load_rubrics(self.rubrics_path)

    def latest_rubrics(self) -> dict[str, Rubric]:
        return latest_versions(self.rubrics())

    def judge_prompts(self) -> list[Prompt]:
        """`judge.prompts` (held out), else the run's prompts, else the profile's data."""
        settings, config = self.config.judge, self.config
        if settings.prompts:
            prompts = load_prompts(config.project_path(settings.prompts))
        elif self.prompts_path.is_file():
            prompts = self.prompts()
        else:
            prompts = load_prompts(config.project_path(config.data.prompts))
        return prompts[: settings.max_prompts]

    def record_skips(self, stage: str, skips: list[Skip]) -> None:
        """Replace this stage's lines in skipped.jsonl (so reruns never double them)."""
        path = self.skipped_path
        kept = [s for s in (read_records(path, Skip) if path.exists() else []) if s.stage != stage]
        write_records(path, kept + skips)


def run_stage(
    run: Run, stage: str, inputs: list[Any], outputs: list[Path], body: Callable[[], dict[str, Any]]
) -> StageResult:
    """Run `body` unless the stage is already done with these inputs."""
    stage_fingerprint = fingerprint(stage, *inputs)
    if run.state.is_done(stage, stage_fingerprint, outputs):
        return StageResult(stage, reused=True, counts=run.state.counts(stage))
    started, calls_before = time.perf_counter(), run.pool.cache_counts()
    try:
        counts = body()
    except BackendGone as gone:
        raise BackendGone(f"{stage} stopped, not marked done: {gone}", gone.finished) from gone
    seconds = round(time.perf_counter() - started, 2)
    hits, misses = (after - before for after, before in zip(run.pool.cache_counts(), calls_before))
    counts |= {"model_calls": hits + misses, "cache_hits": hits}
    run.state.mark_done(stage, stage_fingerprint, {**counts, "seconds": seconds})
    return StageResult(stage, reused=False, counts=counts, seconds=seconds)


def stage_prompts(run: Run) -> StageResult:
    """The run's prompts, and the rubrics and reference answers the data brings with them."""
    data = run.config.data
    source = prompts_source(run.config)
    rubrics = rubrics_source(run.config)
    imported = run.imported_dir / "candidates.jsonl"
    inputs = [source, rubrics or "no given rubrics", imported, data]

    def body() -> dict[str, Any]:
        prompts = load_prompts(source)[: data.max_prompts]
        given = load_given(rubrics, prompts) if rubrics else GivenData()
        candidates = given.candidates + (load_candidates(imported) if imported.is_file() else [])
        if data.references == "ignore":
            candidates = [c for c in candidates if not c.reference]
        write_records(run.prompts_path, prompts)
        write_records(run.given_rubrics_path, given.rubrics)
        write_records(run.given_candidates_path, candidates)
        return _data_counts(prompts, given, candidates)

    outputs = [run.prompts_path, run.given_rubrics_path, run.given_candidates_path]
    return run_stage(run, "prompts", inputs, outputs, body)


def prompts_source(config: HarnessConfig) -> Path:
    """The prompts `harness import` brought into the run folder, else the profile's."""
    imported = RunPaths(config.run_dir).imported_dir / "prompts.jsonl"
    return imported if imported.is_file() else config.project_path(config.data.prompts)


def rubrics_source(config: HarnessConfig) -> Path | None:
    """Where version-0 rubrics come from: `data.rubrics`, else the imported ones, else the
    prompts file's own (HealthBench, the published dataset); None: the proposer writes all."""
    setting = config.data.rubrics
    if setting == PROPOSE_ALL:
        return None
    if setting:
        return config.project_path(setting)
    imported = RunPaths(config.run_dir).imported_dir / "rubrics.jsonl"
    if imported.is_file():
        return imported
    prompts = prompts_source(config)
    return prompts if carries_rubrics(prompts) else None


def gives_rubrics(config: HarnessConfig) -> bool:
    return rubrics_source(config) is not None


def _data_counts(prompts: list[Prompt], given: GivenData, candidates: list) -> dict[str, Any]:
    criteria = [c for r in given.rubrics for c in r.criteria]
    return {
        "prompts": len(prompts),
        "given_rubrics": len(given.rubrics),
        "given_criteria": len(criteria),
        "penalty_criteria": sum(c.weight < 0 for c in criteria),
        "references": sum(c.reference for c in candidates),
        "given_responses": sum(not c.reference for c in candidates),
        "rubrics_outside_run": given.outside_run,
    }


def stage_rollouts(run: Run) -> StageResult:
    models = run.config.rollout_models() if run.config.rollouts.num_samples else []

    def body() -> dict[str, Any]:
        prompts, candidates, skips = run.prompts(), [], []
        for model in models:  # one model's engine up at a time
            run.pool.enter_group([model])
            found, missed = roll_out(run.pool.role("rollouts", model), prompts,
                                     run.config.rollouts.num_samples)  # fmt: skip
            candidates += found
            skips += missed
        given = load_candidates(run.given_candidates_path)
        write_records(run.candidates_path, order_pool(candidates + given, prompts, models))
        run.record_skips("rollouts", skips)
        return {"candidates": len(candidates) + len(given), "given": len(given),
                "skipped": len(skips)}  # fmt: skip

    inputs = [run.prompts_path, run.given_candidates_path, run.config.rollouts,
              [m.model_dump() for m in models]]  # fmt: skip
    return run_stage(run, "rollouts", inputs, [run.candidates_path], body)


def stage_propose(run: Run) -> StageResult:
    """Version 0: the given rubrics, and the proposer's for the prompts without one."""
    proposer = run.config.roles.proposer

    def body() -> dict[str, Any]:
        prompts, given = run.prompts(), load_rubrics(run.given_rubrics_path)
        have = {r.prompt_id for r in given}
        missing = [p for p in prompts if p.id not in have]
        proposed, skips = [], []
        if missing:
            role = run.pool.role("proposer", _proposer_for(run, missing, len(prompts)))
            proposed, skips = propose(role, missing, run.config.propose, run.templates)
        order = {p.id: i for i, p in enumerate(prompts)}
        rubrics = sorted(given + proposed, key=lambda r: order[r.prompt_id])
        write_records(run.rubrics_path, rubrics)
        run.record_skips("propose", skips)
        criteria = sum(len(r.criteria) for r in rubrics)
        return {"rubrics": len(rubrics), "given": len(given), "proposed": len(proposed),
                "skipped": len(skips), "criteria": criteria}  # fmt: skip

    inputs = [run.prompts_path, run.given_rubrics_path, proposer, run.config.propose,
              *run.template_files()]  # fmt: skip
    return run_stage(run, "propose", inputs, [run.rubrics_path], body)


def _proposer_for(run: Run, missing: list[Prompt], total: int) -> Any:
    proposer = run.config.roles.proposer
    if proposer is None:
        raise InputError(
            f"{len(missing)} of {total} prompts have no given rubric (first: {missing[0].id!r}) "
            "and no proposer is configured (roles.proposer): give rubrics for every prompt "
            "(data.rubrics) or configure a proposer"
        )
    return proposer


def stage_refine(run: Run) -> StageResult:
    config = run.config
    proposer = config.roles.proposer  # both are needed only when refining
    verifier = config.verifier(config.refine.verifier) if config.roles.verifier else None
    settings = [proposer, verifier, config.refine, config.verify, config.propose]
    # rubrics.jsonl is rewritten by this stage, so only its version-0 lines are an input.
    inputs = [run.candidates_path, _initial_rubrics_key(run), *settings,
              *run.template_files()]  # fmt: skip

    def body() -> dict[str, Any]:
        initial = [r for r in run.rubrics() if r.version == 0]
        if not initial or run.config.refine.iterations == 0:
            write_records(run.refine_stats_path, [])
            return {"iterations": 0, "new_rubrics": 0, "skipped": 0}
        roles = RefineRoles(run.pool.role("proposer", config.roles.get("proposer")),
                            run.pool.role("verifier", verifier or config.verifier()))  # fmt: skip
        checkpoints = run.refine_dir / fingerprint(*inputs)
        state = refine(roles, run.prompts(), load_candidates(run.candidates_path),
                       initial, run.config, run.templates, checkpoints)  # fmt: skip
        write_records(run.rubrics_path, initial + state.new_rubrics)
        write_records(run.refine_stats_path, state.stats)
        run.record_skips("refine", state.skips)
        return {"iterations": state.iteration, "new_rubrics": len(state.new_rubrics),
                "skipped": len(state.skips)}  # fmt: skip

    return run_stage(run, "refine", inputs, [run.rubrics_path, run.refine_stats_path], body)


def _initial_rubrics_key(run: Run) -> list[Any]:
    path = run.rubrics_path
    if not path.exists():
        return []
    return [r.model_dump(mode="json") for r in load_rubrics(path) if r.version == 0]


def stage_verify(run: Run) -> StageResult:
    verifier = run.config.verifier()

    def body() -> dict[str, Any]:
        role = run.pool.role("verifier", verifier)
        jobs = latest_rubric_jobs(run.prompts(), load_candidates(run.candidates_path),
                                  run.latest_rubrics())  # fmt: skip
        verdicts = verify(role, jobs, run.config.verify, run.templates)
        write_records(run.verdicts_path, verdicts)
        rows = reward_rows(jobs, verdicts, run.config)
        write_records(run.rewards_path, rows)
        on_given = write_grading(run, role, jobs, verdicts)
        unscored = sum(v.met is None for v in verdicts)
        check_unscored(verdicts, run.config.verify, "verify")
        return {"verdicts": len(verdicts), "unscored": unscored,
                "unscored_rewards": sum(r["reward"] is None for r in rows),
                "graded_on_given_rubrics": on_given}  # fmt: skip

    inputs = [run.candidates_path, run.rubrics_path, run.given_rubrics_path, verifier,
              run.config.verify, *run.template_files()]  # fmt: skip
    outputs = [run.verdicts_path, run.rewards_path, run.grading_path, run.grading_verdicts_path]
    return run_stage(run, "verify", inputs, outputs, body)


def write_grading(run: Run, role: Any, jobs: list[Job], verdicts: list[Verdict]) -> int:
    """grading.json; the number of candidates graded under a rubric the data brought."""
    graded_jobs, graded = grading_set(run, role, jobs, verdicts)
    write_json(run.grading_path, grade(graded_jobs, graded, run.config.verify).as_record())
    given = _given_ids(run)
    return sum(j.prompt.id in given for j in graded_jobs)


def grading_set(
    run: Run, role: Any, jobs: list[Job], verdicts: list[Verdict]
) -> tuple[list[Job], list[Verdict]]:
    """What grading scores: each candidate under the rubric the data brought (version 0),
    where its prompt has one, as HealthBench grades by the clinicians' rubric; else under the
    latest rubric. Candidates of a prompt refined past its given rubric are verified against
    that rubric too (`grading_verdicts.jsonl`); the reward stays the latest rubric's."""
    graded = given_rubric_jobs(run, jobs)
    again = [g for g, j in zip(graded, jobs) if g.rubric is not j.rubric]
    extra = verify(role, again, run.config.verify, run.templates) if again else []
    write_records(run.grading_verdicts_path, extra)
    moved = {job.prompt.id for job in again}
    return graded, [v for v in verdicts if v.prompt_id not in moved] + extra


def given_rubric_jobs(run: Run, jobs: list[Job]) -> list[Job]:
    """`jobs` with each rubric replaced by the one the data brought (version 0), where the
    prompt has one and refinement moved past it."""
    given = _given_ids(run)
    originals = {r.prompt_id: r for r in run.rubrics() if r.version == 0 and r.prompt_id in given}
    return [Job(j.prompt, j.candidate, originals[j.prompt.id])
            if j.prompt.id in originals and j.rubric.version > 0 else j for j in jobs]  # fmt: skip


def _given_ids(run: Run) -> set[str]:
    path = run.given_rubrics_path
    return {r.prompt_id for r in load_rubrics(path)} if path.is_file() else set()


def reward_rows(jobs: list[Job], verdicts: list, config: HarnessConfig) -> list[dict[str, Any]]:
    table = met_by_candidate(verdicts)
    rows = []
    for job, reward in zip(jobs, rewards(jobs, verdicts, config.verify)):
        met = table.get(job.candidate.id, {})
        rows.append({
            "prompt_id": job.prompt.id, "candidate_id": job.candidate.id,
            "model": job.candidate.model, "rubric_version": job.rubric.version,
            "reward": reward,
            "num_unscored": sum(v is None for v in met.values()),
        })  # fmt: skip
    return rows


def refine_stats(run_dir: Path) -> list[IterationStats]:
    return read_records(RunPaths(run_dir).refine_stats_path, IterationStats)


def export_rubrics(run_dir: Path, output_path: Path) -> int:
    """The run's latest rubrics in the paper authors' published dataset schema; the count."""
    paths = RunPaths(run_dir)
    prompts = read_records(paths.prompts_path, Prompt)
    rubrics = load_rubrics(paths.rubrics_path)
    with_rubric = {r.prompt_id for r in rubrics}
    return export_rubric_dataset(output_path, [p for p in prompts if p.id in with_rubric], rubrics)
