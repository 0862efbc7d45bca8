"""`harness eval`: the whole job on one profile, resumable stage by stage; and the other
commands that run some of the stages (`harness verify`, `compare-verifiers`, `judge`).

The stages and their order are `harness.stages.STAGES`. The ones after `verify` can be
switched off in the profile (`eval: {train: false}`); a rerun skips every finished stage whose
inputs did not change, and a killed stage resumes from its checkpoints and the completion
cache. The report (`harness.report`) is written from the run folder afterwards.

    harness eval -c configs/tiny.yaml
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from harness.config import HarnessConfig
from harness.datasets import load_candidates
from harness.judge import pair_up
from harness.pipeline import Run, StageResult
from harness.roles import RolePool, run_context
from harness.runstate import RunPaths
from harness.stages import STAGES, Stage, judge_sides, stage_named, stages_through
from harness.summary_schema import PairwiseSummary, read_record


def run_stages(config: HarnessConfig, stages: Sequence[Stage]) -> list[StageResult]:
    """Run `stages` in order over the profile's run folder; finished ones are reused. With
    `eval.stop_idle_engines`, each stage starts with only the engines of its first group up
    (`Stage.engine_groups`) and moves through its other groups itself (on a GPU, the
    proposer and judge must not hold memory while the policy samples or trains)."""
    stop_idle = config.eval.stop_idle_engines
    with RolePool(run_context(config), stop_idle=stop_idle) as pool:
        run, results = Run(config, pool), []
        for stage in stages:
            if stop_idle:
                pool.enter_group(next(iter(stage.engine_groups(config)), []))
            results.append(stage.run(run))
        return results


def run_through(config: HarnessConfig, last: str) -> list[StageResult]:
    """Every stage up to and including `last`, whether or not the profile switches it on."""
    return run_stages(config, stages_through(last))


def run_eval(config: HarnessConfig) -> list[StageResult]:
    """Every stage the profile switches on, in order; switched-off stages have no result."""
    stages = [s for s in STAGES if s.switched_on(config)]
    return run_stages(config, stages)


def judge_trained_vs_base(config: HarnessConfig) -> PairwiseSummary | None:
    """The judge stage alone: its summary, or None when there is no trained adapter."""
    [result] = run_stages(config, [stage_named("judge")])
    if "skipped" in result.counts:
        return None
    return read_record(RunPaths(config.run_dir).judge_summary_path, PairwiseSummary)


def judge_files(config: HarnessConfig, side_a: Path, side_b: Path) -> PairwiseSummary | None:
    """Two candidate files judged against each other on the judge prompts, written into
    RUN_DIR/judge/A-vs-B/; None when they share no (prompt, sample) pair to judge."""
    with RolePool(run_context(config), stop_idle=config.eval.stop_idle_engines) as pool:
        run = Run(config, pool)
        prompts = run.judge_prompts()
        ids = {p.id for p in prompts}
        a = [c for c in load_candidates(side_a) if c.prompt_id in ids]
        b = [c for c in load_candidates(side_b) if c.prompt_id in ids]
        pairs = pair_up(a, b)
        if not pairs:
            return None
        judge = pool.role("judge", config.roles.get("judge"))
        folder = run.judge_dir / f"{side_a.stem}-vs-{side_b.stem}"
        return judge_sides(run, judge, prompts, pairs, (side_a.stem, side_b.stem), folder)[1]
