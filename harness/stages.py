"""The one list of stages, in the order they run: what each runs, the roles it calls, and
whether the profile's `eval:` section switches it. `harness eval`, the single-stage commands,
the role check before any engine starts, the engines kept up per stage and the report's stage
table all read this list.

    prompts -> rollouts -> propose -> refine -> verify      (harness.pipeline)
    -> compare    every verifier size on the same verification set (harness.compare)
    -> train      a few LoRA GRPO steps with the rubric reward (harness.training)
    -> judge      trained policy vs base policy, both orders (harness.judge)
    -> overoptimization  reward and win rate per training checkpoint (harness.overoptimization)
    -> theory     Theorem 1 and Fig. 2 of the paper (harness.theory)

This module also holds the run-folder side of compare, train, judge and theory: which inputs
make each rerun, and where each writes.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.backends import capabilities_of
from harness.compare import compare_verifiers, labels_source
from harness.config import HarnessConfig, RoleConfig, dump_config
from harness.datasets import load_candidates
from harness.jsonl import read_rows, write_json, write_records
from harness.judge import Judgement, judge_pairs, pair_up, sample_side, summarise
from harness.overoptimization import stage_overoptimization
from harness.pipeline import (
    Run,
    StageResult,
    given_rubric_jobs,
    gives_rubrics,
    run_stage,
    stage_prompts,
    stage_propose,
    stage_refine,
    stage_rollouts,
    stage_verify,
)
from harness.policy import adapter_rank, final_adapter, policy_role_config
from harness.roles import Role
from harness.runstate import fingerprint
from harness.summary_schema import PairwiseSummary, StepSplit, Theory, TrainSummary
from harness.trust import (
    build_probe_set,
    gate_training,
    run_rewards,
    without_gate,
    write_perturbations,
)
from harness.types import Candidate, Prompt
from harness.verifier import Job, latest_rubric_jobs

EngineGroups = Callable[[HarnessConfig], list[list[RoleConfig]]]


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[[Run], StageResult]
    roles: Callable[[HarnessConfig], list[RoleConfig]]  # a missing role raises ConfigError
    switchable: bool = False  # switched on and off in the profile's `eval:` section
    # the engines that are up together, group after group, in the order the stage uses them
    # (the memory plan and the engine lifecycle both read this); default: all its roles at once
    engines: EngineGroups | None = None

    def switched_on(self, config: HarnessConfig) -> bool:
        return not self.switchable or getattr(config.eval, self.name)

    def engine_groups(self, config: HarnessConfig) -> list[list[RoleConfig]]:
        groups = self.engines(config) if self.engines else [self.roles(config)]
        return [group for group in groups if group]


def verification_jobs(run: Run, labelled: bool = False) -> list[Job]:
    """Every candidate of the run against its prompt's latest rubric; `labelled`: against the
    rubric the data brought where there is one (clinicians label their own criteria)."""
    candidates = load_candidates(run.candidates_path)
    jobs = latest_rubric_jobs(run.prompts(), candidates, run.latest_rubrics())
    return given_rubric_jobs(run, jobs) if labelled else jobs


def stage_compare(run: Run) -> StageResult:
    config = run.config
    labels_path = labels_source(config, run)
    labels = [labels_path] if labels_path is not None else []
    inputs = [
        run.candidates_path,
        run.rubrics_path,
        *([run.given_rubrics_path] if labels else []),  # labels are on the given criteria
        [v.model_dump() for v in config.roles.verifier],
        config.verify,
        config.compare,
        config.refine.pair,
        *labels,
        *run.template_files(),
    ]
    measured = fingerprint("compare", *inputs)  # what the verifiers' stored verdicts answer
    inputs += [config.probes, run.rewards_path]  # the probes (their originals ranked by reward)

    def body() -> dict[str, Any]:
        jobs = verification_jobs(run, labelled=labels_path is not None)
        probe_set = build_probe_set(jobs, config, run_rewards(run))
        if probe_set.originals:
            write_perturbations(probe_set, run.probes_dir)
        metrics = compare_verifiers(
            run.pool,
            jobs,
            config,
            run.templates,
            run.compare_dir,
            measured,
            labels=labels_path,
            probe_set=probe_set,
            probes_folder=run.probes_dir,
        )
        rows = metrics.verifiers
        return {
            "verifiers": len(rows),
            "requests": sum(r.num_requests or 0 for r in rows),
            "verdicts": sum(r.num_verdicts or 0 for r in rows),
            "unscored": sum(r.num_unscored or 0 for r in rows),
        }

    return run_stage(run, "compare", inputs, [run.compare_metrics_path], body)


def stage_train(run: Run) -> StageResult:
    """Training runs in a child process (harness.train_process) that opens its own verifier;
    with `eval.stop_idle_engines` (GPU profiles) the run's engines are stopped first, so
    that their memory is free."""
    from harness.train_process import train_in_child

    config = run.config
    verifier = config.verifier(config.train.verifier)
    rubrics = [config.project_path(config.train.rubrics)] if config.train.rubrics else []
    inputs = [
        run.prompts_path,
        run.rubrics_path,
        *rubrics,
        config.train,
        config.roles.get("policy"),
        verifier,
        config.verify,
        config.probes,
        run.candidates_path,  # the probes' originals
        *run.template_files(),
    ]

    def body() -> dict[str, Any]:
        _start_fresh_unless_resuming(run.train_dir, fingerprint("train", *inputs))
        gate = gate_training(config, run, run.pool)
        result = train_in_child(
            _trainer_config(run, verifier), run.train_dir / "trainer-profile.yaml"
        )
        run.config_path.write_text(dump_config(config), encoding="utf-8")  # the child wrote its own
        summary = TrainSummary(
            steps=result.steps,
            reward_first=result.reward_first,
            reward_last=result.reward_last,
            peak_memory_mb=result.peak_memory_mb,
            adapter_weights_changed=result.adapter_weights_changed,
            base_weights_unchanged=result.base_weights_unchanged,
            step_split=StepSplit.model_validate(result.step_split),
            resumed_from=result.resumed_from,
            unscored_rewards=sum(r["num_unscored"] for r in read_rows(run.train_rewards_path)),
            hack_gate=gate,
        )
        write_json(run.train_summary_path, summary.as_record())
        return {"steps": result.steps, "unscored": summary.unscored_rewards}

    return run_stage(run, "train", inputs, [run.train_summary_path, run.adapter_dir], body)


def _trainer_config(run: Run, verifier: RoleConfig) -> HarnessConfig:
    """The profile the training processes run. A served verifier (`vllm-server`) stays up
    here, on the GPUs the memory plan gives it, and every training process reaches it over
    loopback; an in-process engine cannot be shared with another process, so the one training
    process opens its own (on its own GPU; refused with several) and this process stops its
    copy first, when idle engines are stopped."""
    from harness.training import endpoint_role

    config = without_gate(run.config)  # the gate ran here, on the verifier as profiled
    if not capabilities_of(verifier).serves_endpoint:
        run.pool.enter_group([])
        return config
    run.pool.enter_group([verifier])
    server = run.pool.role("verifier", verifier, cached=False).backend
    served = endpoint_role(verifier, server)
    verifiers = [served if v.label == verifier.label else v for v in config.roles.verifier]
    return config.model_copy(
        update={"roles": config.roles.model_copy(update={"verifier": verifiers})}
    )


def _start_fresh_unless_resuming(train_dir: Path, stage_fingerprint: str) -> None:
    """Checkpoints of a training run with other inputs must not be resumed from."""
    marker = train_dir / "inputs.fingerprint"
    if marker.is_file() and marker.read_text().strip() != stage_fingerprint:
        shutil.rmtree(train_dir)
    train_dir.mkdir(parents=True, exist_ok=True)
    marker.write_text(stage_fingerprint)


def stage_judge(run: Run) -> StageResult:
    """The trained policy against the base policy, on the judge prompts."""
    config = run.config
    adapter = final_adapter(run.train_dir)
    if adapter is None:
        return StageResult("judge", reused=False, counts={"skipped": "no trained adapter"})
    policy = policy_role_config(config, adapter_rank(run.train_dir, config.train.lora_r))
    prompts = run.judge_prompts()
    judge_config = config.roles.get("judge")
    inputs = [[p.model_dump() for p in prompts], adapter.identity(), policy, judge_config,
              config.judge, *run.template_files()]  # fmt: skip

    def body() -> dict[str, Any]:
        run.pool.enter_group([policy])  # both sides are sampled before the judge starts
        role, samples = run.pool.role("policy", policy), config.judge.samples
        base = sample_side(role, prompts, samples, None, "base", run.judge_dir)
        trained = sample_side(role, prompts, samples, adapter, "trained", run.judge_dir)
        run.pool.enter_group([judge_config])
        judgements, summary = judge_sides(run, run.pool.role("judge", judge_config), prompts,
                                          pair_up(trained, base), ("trained", "base"))  # fmt: skip
        return {"pairs": len(judgements), "unscored": summary.unscored}

    return run_stage(run, "judge", inputs, [run.judge_summary_path, run.judgements_path], body)


def judge_sides(
    run: Run,
    judge: Role,
    prompts: list[Prompt],
    pairs: list[tuple[Candidate, Candidate]],
    names: tuple[str, str],
    folder: Path | None = None,
) -> tuple[list[Judgement], PairwiseSummary]:
    """Judge every pair in both orders; write the judgements and the summary (win rate of
    side `names[0]` over `names[1]`) into `folder` (default: the run's judge folder)."""
    folder = folder or run.judge_dir
    judgements = judge_pairs(judge, prompts, pairs, run.config.judge, run.templates)
    write_records(folder / run.judgements_path.name, judgements)
    outcome = summarise(judgements, run.config.judge)
    summary = PairwiseSummary(a=names[0], b=names[1], judge=judge.config.label,
                              **outcome.as_record())  # fmt: skip
    write_json(folder / run.judge_summary_path.name, summary.as_record())
    return judgements, summary


def stage_theory(run: Run) -> StageResult:
    from harness.theory import plot_theory, theory_summary

    def body() -> dict[str, Any]:
        table = theory_summary()
        plots = plot_theory(run.plots_dir)
        table["plots"] = {f"theory_{k}": str(p.relative_to(run.dir)) for k, p in plots.items()}
        summary = Theory.model_validate(table)
        write_json(run.theory_path, summary.as_record())
        return {"kl_points": len(summary.kl_table)}

    source = Path(__file__).with_name("theory.py")
    return run_stage(run, "theory", [source], [run.theory_path], body)


def _proposing(config: HarnessConfig) -> list[RoleConfig]:
    """The proposer, unless the data gives rubrics and none is configured (then the propose
    stage fails, naming a prompt, only if some prompt has no given rubric)."""
    if config.roles.proposer is None and gives_rubrics(config):
        return []
    return [config.roles.get("proposer")]


def _train_verifier(config: HarnessConfig) -> list[RoleConfig]:
    return [config.verifier(config.train.verifier)] if config.roles.verifier else []


def _judging(config: HarnessConfig) -> list[RoleConfig]:
    both = config.roles.judge and config.roles.policy
    return [config.roles.judge, policy_role_config(config)] if both else []


def _sampling_models(config: HarnessConfig) -> list[RoleConfig]:
    """The rollout models, none when only the data's own responses are graded."""
    return list(config.rollout_models()) if config.rollouts.num_samples else []


def _one_at_a_time(roles: Callable[[HarnessConfig], list[RoleConfig]]) -> EngineGroups:
    return lambda c: [[role] for role in roles(c)]


def _judging_groups(config: HarnessConfig) -> list[list[RoleConfig]]:
    """The policy samples both sides first; then the judge alone."""
    return [[role] for role in reversed(_judging(config))]


def _overoptimization_groups(config: HarnessConfig) -> list[list[RoleConfig]]:
    """Per checkpoint the policy samples, then the verifier scores, then the judge compares."""
    judging = _judging(config)
    if not judging:
        return []
    judge, policy = judging
    return [[policy], *[[v] for v in _train_verifier(config)], [judge]]


STAGES = (
    Stage("prompts", stage_prompts, lambda c: []),
    Stage("rollouts", stage_rollouts, _sampling_models,
          engines=_one_at_a_time(_sampling_models)),
    Stage("propose", stage_propose, _proposing),
    Stage("refine", stage_refine, lambda c: [c.roles.get("proposer"), c.verifier(c.refine.verifier)]
          if c.refine.iterations else []),
    Stage("verify", stage_verify, lambda c: [c.verifier()]),
    # compare starts and stops each verifier in turn
    Stage("compare", stage_compare, lambda c: [], switchable=True,
          engines=lambda c: [[v] for v in c.roles.verifier]),
    # the trainer runs beside the verifier engine (planned apart: it is not a served engine)
    Stage("train", stage_train, _train_verifier, switchable=True),
    Stage("judge", stage_judge, _judging, switchable=True, engines=_judging_groups),
    Stage("overoptimization", stage_overoptimization,
          lambda c: _judging(c) + _train_verifier(c), switchable=True,
          engines=_overoptimization_groups),
    Stage("theory", stage_theory, lambda c: [], switchable=True),
)  # fmt: skip
RUBRIC_STAGES = tuple(s for s in STAGES if not s.switchable)  # always run, never switched off


def stage_named(name: str) -> Stage:
    return next(s for s in STAGES if s.name == name)


def stages_through(last: str) -> tuple[Stage, ...]:
    """Every stage up to and including `last`, in order."""
    return STAGES[: STAGES.index(stage_named(last)) + 1]


def check_roles(config: HarnessConfig, stages: Sequence[Stage] = RUBRIC_STAGES) -> None:
    """Raise the ConfigError a stage would raise for a role missing from the profile, before
    the stages before it start their engines."""
    for stage in stages:
        stage.roles(config)
