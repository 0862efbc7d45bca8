"""summary.json: what the report says, gathered from the files of a run folder (and the stage
results of the command that just ran, if any). No model is called; `harness report RUN_DIR`
rebuilds it from the folder alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.config import HarnessConfig
from harness.jsonl import read_json, read_records, read_rows
from harness.report.signal import criteria_discrimination, signal_rows
from harness.runstate import RunPaths
from harness.stages import STAGES
from harness.summary_schema import (
    SCHEMA_VERSION,
    CompareMetrics,
    Discrimination,
    EndpointRow,
    Grading,
    Machine,
    Overoptimization,
    PairwiseSummary,
    RefineRow,
    RunFacts,
    StageRow,
    Summary,
    Theory,
    TrainSummary,
    Unscored,
    read_record,
    validate_record,
)
from harness.types import Verdict


def build_summary(config: HarnessConfig, profile: str, results: list | None = None) -> Summary:
    """summary.json from the run folder's files (and this invocation's stage results)."""
    paths = RunPaths(config.run_dir)
    stages_done = _json(paths.stages_path) or {}
    compare = read_record(paths.compare_metrics_path, CompareMetrics)
    judge = read_record(paths.judge_summary_path, PairwiseSummary)
    train = read_record(paths.train_summary_path, TrainSummary)
    if train is not None:
        train = train.model_copy(update={"zero_spread_share": _zero_spread_share(paths)})
    theory = _json(paths.theory_path)
    plots = dict((theory or {}).pop("plots", {}))
    if paths.train_reward_plot_path.is_file():
        plots["train_reward"] = paths.train_reward_plot_path.relative_to(paths.dir).as_posix()
    summary = Summary(
        schema_version=SCHEMA_VERSION,
        run=_run_facts(config, profile),
        stages=_stage_rows(config, stages_done, results),
        unscored=_unscored(stages_done, compare, train, judge),
        refine=[RefineRow.model_validate(r) for r in read_rows(paths.refine_stats_path)],
        verifiers=compare.verifiers if compare else None,
        reference=compare.reference if compare else None,
        clinicians=compare.clinicians if compare else None,
        probe_settings=compare.probe_settings if compare else None,
        recommended_verifier=compare.recommended if compare else None,
        verifier_recommendation=compare.recommendation if compare else None,
        pairwise=judge,
        train=train,
        overoptimization=read_record(paths.overoptimization_path, Overoptimization),
        theory=validate_record(paths.theory_path, Theory, theory),
        grading=read_record(paths.grading_path, Grading),
        endpoints=_endpoint_rows(paths.endpoint_stats_path),
        plots=plots,
        discrimination=_discrimination(paths, config.verify.score),
    )
    return summary.model_copy(update={"signal": signal_rows(summary)})


def _zero_spread_share(paths: RunPaths) -> float | None:
    """The mean over logged steps of TRL's share of groups with zero reward spread."""
    path = paths.train_dir / "metrics.jsonl"
    rows = read_rows(path) if path.is_file() else []
    shares = [r["frac_reward_zero_std"] for r in rows if r.get("frac_reward_zero_std") is not None]
    return sum(shares) / len(shares) if shares else None


def _discrimination(paths: RunPaths, score: str) -> Discrimination | None:
    """The reward verifier's verdicts of the verify stage, criterion by criterion."""
    if not paths.verdicts_path.is_file():
        return None
    return criteria_discrimination(read_records(paths.verdicts_path, Verdict), score)


def _endpoint_rows(path: Path) -> list[EndpointRow] | None:
    """Per endpoint of each endpoint pool the run used, one row per backend session; None
    when it used none."""
    rows = [validate_record(path, EndpointRow, r) for r in read_rows(path)]
    return [r for r in rows if r is not None] or None


def _json(path: Path) -> Any:
    return read_json(path) if path.is_file() else None


def _stage_rows(
    config: HarnessConfig, done: dict[str, Any], results: list | None
) -> list[StageRow]:
    """One row per stage of the pipeline, in order: off, skipped, reused, ran or not run."""
    this_time = {r.stage: r for r in results or []}
    return [
        _stage_row(s.name, s.switched_on(config), done.get(s.name), this_time.get(s.name))
        for s in STAGES
    ]


def _stage_row(stage: str, switched_on: bool, entry: Any, result: Any) -> StageRow:
    if not switched_on:
        return StageRow(stage=stage, status="off", seconds=0.0, counts={})
    if result is not None and not entry:  # returned without running (nothing to do)
        return StageRow(stage=stage, status="skipped", seconds=0.0, counts=dict(result.counts))
    if entry:
        counts = {k: v for k, v in entry.items() if k not in ("fingerprint", "seconds")}
        reused = result is not None and result.reused
        return StageRow(stage=stage, status="reused" if reused else "ran",
                        seconds=entry.get("seconds", 0.0), counts=counts)  # fmt: skip
    return StageRow(stage=stage, status="not run", seconds=0.0, counts={})


def _unscored(
    done: dict[str, Any],
    compare: CompareMetrics | None,
    train: TrainSummary | None,
    judge: PairwiseSummary | None,
) -> Unscored:
    def count(stage: str, key: str) -> int | None:
        return done.get(stage, {}).get(key)

    return Unscored(
        rollouts=count("rollouts", "skipped"),
        propose=count("propose", "skipped"),
        refine=count("refine", "skipped"),
        verify=count("verify", "unscored"),
        compare={r.label: r.num_unscored for r in compare.verifiers} if compare else None,
        train=train.unscored_rewards if train else None,
        judge=judge.unscored if judge else None,
    )


def _run_facts(config: HarnessConfig, profile: str) -> RunFacts:
    import datetime
    import importlib.metadata

    from harness.machine import machine_info

    return RunFacts(
        name=config.run_name,
        dir=str(config.run_dir),
        profile=profile,
        created=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        harness_version=importlib.metadata.version("harness"),
        machine=Machine.model_validate(machine_info()),
    )
