"""`harness eval`: the whole job on one profile, resumable stage by stage.

    prompts -> rollouts -> propose -> refine -> verify      (harness.pipeline)
    -> compare    every verifier size on the same verification set (harness.compare)
    -> train      a few LoRA GRPO steps with the rubric reward (harness.training)
    -> judge      trained policy vs base policy, both orders (harness.judge)
    -> overoptimization  reward and win rate per training checkpoint
    -> theory     Theorem 1 and Fig. 2 of the paper (harness.theory)
    -> report     report.md, report.html, summary.json (harness.report)

The stages after `verify` can be switched off in the profile (`eval: {train: false}`); a
rerun skips every finished stage whose inputs did not change, and a killed stage resumes from
its checkpoints and the completion cache.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from harness.backends import capabilities_of
from harness.compare import compare_verifiers
from harness.config import HarnessConfig, RoleConfig
from harness.datasets import load_candidates, load_prompts
from harness.jsonl import read_json, read_lines, write_atomic, write_records
from harness.judge import judge_pairs, pair_up, summarise
from harness.pipeline import STAGE_FUNCTIONS, STAGES, Run, StageResult, run_stage
from harness.policy import adapter_rank, checkpoint_adapters, final_adapter, policy_role_config
from harness.reward import rewards
from harness.roles import Role, RolePool, run_context
from harness.rollouts import roll_out
from harness.runstate import fingerprint
from harness.types import Adapter, Candidate, Prompt
from harness.verifier import Job, latest_rubric_jobs, verify

EVAL_STAGES = ("compare", "train", "judge", "overoptimization", "theory")
WIN_RATE_DROP = 0.05  # how far below its best the win rate must fall to flag over-optimisation


def verification_jobs(run: Run) -> list[Job]:
    """Every candidate of the run against its prompt's latest rubric."""
    candidates = load_candidates(run.path("candidates.jsonl"))
    return latest_rubric_jobs(run.prompts(), candidates, run.latest_rubrics())


def stage_compare(run: Run) -> StageResult:
    config = run.config
    labels = [config.project_path(config.compare.labels)] if config.compare.labels else []
    inputs = [
        run.path("candidates.jsonl"),
        run.path("rubrics.jsonl"),
        [v.model_dump() for v in config.roles.verifier],
        config.verify,
        config.compare,
        config.refine.pair,
        *labels,
        *run.template_files(),
    ]

    def body() -> dict[str, Any]:
        summary = compare_verifiers(
            run.pool,
            verification_jobs(run),
            config,
            run.templates,
            run.path("compare"),
            fingerprint("compare", *inputs),
        )
        return {
            "verifiers": len(summary["verifiers"]),
            "requests": sum(r["num_requests"] for r in summary["verifiers"]),
            "verdicts": sum(r["num_verdicts"] for r in summary["verifiers"]),
            "unscored": sum(r["num_unscored"] for r in summary["verifiers"]),
        }

    return run_stage(run, "compare", inputs, ["compare/metrics.json"], body)


def stage_train(run: Run) -> StageResult:
    from harness.training import train

    config = run.config
    verifier = config.verifier(config.train.verifier)
    rubrics = [config.project_path(config.train.rubrics)] if config.train.rubrics else []
    inputs = [
        run.path("prompts.jsonl"),
        run.path("rubrics.jsonl"),
        *rubrics,
        config.train,
        config.roles.get("policy"),
        verifier,
        config.verify,
        *run.template_files(),
    ]
    train_dir = run.path("train")

    def body() -> dict[str, Any]:
        _start_fresh_unless_resuming(train_dir, fingerprint("train", *inputs))
        own_server = capabilities_of(verifier).serves_endpoint  # started by the training run
        shared = None if own_server else run.pool.role("verifier", verifier)
        result = train(config, verifier_role=shared)
        rows = _jsonl(train_dir / "rewards.jsonl")
        summary = {
            "steps": result.steps,
            "reward_first": result.reward_first,
            "reward_last": result.reward_last,
            "peak_memory_mb": result.peak_memory_mb,
            "adapter_weights_changed": result.adapter_weights_changed,
            "base_weights_unchanged": result.base_weights_unchanged,
            "step_split": result.step_split,
            "resumed_from": result.resumed_from,
            "unscored_rewards": sum(r["num_unscored"] for r in rows),
        }
        write_atomic(train_dir / "summary.json", [json.dumps(summary, indent=2)])
        return {"steps": result.steps, "unscored": summary["unscored_rewards"]}

    return run_stage(run, "train", inputs, ["train/summary.json", "train/adapter"], body)


def _start_fresh_unless_resuming(train_dir: Path, stage_fingerprint: str) -> None:
    """Checkpoints of a training run with other inputs must not be resumed from."""
    marker = train_dir / "inputs.fingerprint"
    if marker.is_file() and marker.read_text().strip() != stage_fingerprint:
        shutil.rmtree(train_dir)
    train_dir.mkdir(parents=True, exist_ok=True)
    marker.write_text(stage_fingerprint)


def judge_prompts(run: Run) -> list[Prompt]:
    """`judge.prompts` (held out), else the run's prompts, else the profile's data."""
    settings, config = run.config.judge, run.config
    if settings.prompts:
        prompts = load_prompts(config.project_path(settings.prompts))
    elif run.path("prompts.jsonl").is_file():
        prompts = run.prompts()
    else:
        prompts = load_prompts(config.project_path(config.data.prompts))
    return prompts[: settings.max_prompts]


def stage_judge(run: Run) -> StageResult:
    """The trained policy against the base policy, on the judge prompts."""
    config, train_dir = run.config, run.path("train")
    adapter = final_adapter(train_dir)
    if adapter is None:
        return StageResult("judge", reused=False, counts={"skipped": "no trained adapter"})
    policy = policy_role_config(config, adapter_rank(train_dir, config.train.lora_r))
    prompts = judge_prompts(run)
    judge_config = config.roles.get("judge")
    inputs = [
        [p.model_dump() for p in prompts],
        adapter,
        policy,
        judge_config,
        config.judge,
        *run.template_files(),
    ]

    def body() -> dict[str, Any]:
        role = run.pool.role("policy", policy)
        base = _samples(run, role, prompts, None, "base")
        trained = _samples(run, role, prompts, adapter, "trained")
        judgements = judge_pairs(
            run.pool.role("judge", judge_config),
            prompts,
            pair_up(trained, base),
            config.judge,
            run.templates,
        )
        write_records(run.path("judge/judgements.jsonl"), judgements)
        summary = {
            "a": "trained",
            "b": "base",
            "judge": judge_config.label,
            **summarise(judgements, config.judge),
        }
        write_atomic(run.path("judge/summary.json"), [json.dumps(summary, indent=2)])
        return {"pairs": len(judgements), "unscored": summary["unscored"]}

    outputs = ["judge/summary.json", "judge/judgements.jsonl"]
    return run_stage(run, "judge", inputs, outputs, body)


def _samples(
    run: Run, role: Role, prompts: list[Prompt], adapter: Adapter | None, label: str
) -> list[Candidate]:
    """The policy's responses with `adapter` (None: the base), saved as judge/<label>.jsonl."""
    candidates, skips = roll_out(role, prompts, run.config.judge.samples, adapter, label)
    write_records(run.path(f"judge/{label}.jsonl"), candidates)
    if skips:
        write_records(run.path(f"judge/{label}.skipped.jsonl"), skips)
    return candidates


def stage_overoptimization(run: Run) -> StageResult:
    """Rubric reward and win rate against the base policy at every training checkpoint."""
    config, train_dir = run.config, run.path("train")
    checkpoints = checkpoint_adapters(train_dir)
    if not checkpoints:
        return StageResult("overoptimization", reused=False, counts={"skipped": "no checkpoints"})
    policy = policy_role_config(config, adapter_rank(train_dir, config.train.lora_r))
    verifier = config.verifier(config.train.verifier)
    prompts = [p for p in judge_prompts(run) if p.id in run.latest_rubrics()]
    inputs = [
        [p.model_dump() for p in prompts],
        [a for _, a in checkpoints],
        policy,
        verifier,
        config.roles.get("judge"),
        config.judge,
        config.verify,
        run.path("rubrics.jsonl"),
        *run.template_files(),
    ]

    def body() -> dict[str, Any]:
        role = run.pool.role("policy", policy)
        judge = run.pool.role("judge", config.roles.get("judge"))
        checker = run.pool.role("verifier", verifier)
        base = _samples(run, role, prompts, None, "base")
        rows = [
            {
                "step": 0,
                "reward": _mean_reward(run, checker, prompts, base),
                "win_rate": None,
                "ci95": None,
                "n": 0,
            }
        ]
        for step, adapter in checkpoints:
            samples = _samples(run, role, prompts, adapter, f"checkpoint-{step}")
            judged = judge_pairs(
                judge,
                prompts,
                pair_up(samples, base),
                config.judge,
                run.templates,
                f"judge checkpoint-{step}",
            )
            outcome = summarise(judged, config.judge)
            rows.append(
                {
                    "step": step,
                    "reward": _mean_reward(run, checker, prompts, samples),
                    "win_rate": outcome["win_rate"],
                    "ci95": outcome["ci95"],
                    "n": outcome["n"],
                }
            )
        flagged = overoptimized_steps(rows)
        result = {
            "checkpoints": rows,
            "flagged": bool(flagged),
            "flagged_steps": flagged,
            "note": _flag_note(flagged),
        }
        write_atomic(run.path("overoptimization.json"), [json.dumps(result, indent=2)])
        return {"checkpoints": len(checkpoints), "flagged": len(flagged)}

    return run_stage(run, "overoptimization", inputs, ["overoptimization.json"], body)


def _mean_reward(
    run: Run, role: Role, prompts: list[Prompt], samples: list[Candidate]
) -> float | None:
    """Mean rubric reward of `samples`; unscored rewards are left out (None if all are)."""
    jobs = latest_rubric_jobs(prompts, samples, run.latest_rubrics())
    verdicts = verify(role, jobs, run.config.verify, run.templates)
    scored = [r for r in rewards(jobs, verdicts, run.config.verify) if r is not None]
    return sum(scored) / len(scored) if scored else None


def overoptimized_steps(rows: list[dict[str, Any]], drop: float = WIN_RATE_DROP) -> list[int]:
    """Checkpoints where the reward is above its value at the best-win-rate checkpoint so far
    while the win rate has fallen more than `drop` below that best: reward up, quality down."""
    flagged, best = [], None
    for row in rows:
        if row["win_rate"] is None or row["reward"] is None:
            continue
        if best is None or row["win_rate"] >= best["win_rate"]:
            best = row
            continue
        if row["reward"] > best["reward"] and row["win_rate"] < best["win_rate"] - drop:
            flagged.append(row["step"])
    return flagged


def _flag_note(flagged: list[int]) -> str:
    if not flagged:
        return "no checkpoint where the reward rose while the win rate fell"
    steps = ", ".join(map(str, flagged))
    return f"reward kept rising while the win rate fell at step(s) {steps}: over-optimisation"


def stage_theory(run: Run) -> StageResult:
    from harness.theory import plot_theory, theory_summary

    def body() -> dict[str, Any]:
        summary = theory_summary()
        plots = plot_theory(run.path("plots"))
        summary["plots"] = {f"theory_{k}": str(p.relative_to(run.dir)) for k, p in plots.items()}
        write_atomic(run.path("theory.json"), [json.dumps(summary, indent=2)])
        return {"kl_points": len(summary["kl_table"])}

    source = Path(__file__).with_name("theory.py")
    return run_stage(run, "theory", [source], ["theory.json"], body)


EVAL_FUNCTIONS = {
    "compare": stage_compare,
    "train": stage_train,
    "judge": stage_judge,
    "overoptimization": stage_overoptimization,
    "theory": stage_theory,
}


def run_eval(config: HarnessConfig) -> list[StageResult]:
    """Every stage of the profile, in order; the results of switched-off stages are absent.
    With `eval.stop_idle_engines`, each stage after `verify` runs with only its own engines
    started (on a GPU, the proposer and judge must not hold memory while the policy trains)."""
    results = []
    with RolePool(run_context(config)) as pool:
        run = Run(config, pool)
        results += [STAGE_FUNCTIONS[stage](run) for stage in STAGES]
        for stage in EVAL_STAGES:
            if getattr(config.eval, stage):
                if config.eval.stop_idle_engines:
                    pool.keep_only(roles_of(config, stage))
                results.append(EVAL_FUNCTIONS[stage](run))
    return results


def roles_of(config: HarnessConfig, stage: str) -> list[RoleConfig]:
    """The roles `stage` calls."""
    train_verifier = [config.verifier(config.train.verifier)] if config.roles.verifier else []
    both = config.roles.judge and config.roles.policy
    judging = [config.roles.judge, policy_role_config(config)] if both else []
    return {
        "compare": [],  # it starts and stops each verifier in turn
        "train": train_verifier,
        "judge": judging,
        "overoptimization": judging + train_verifier,
        "theory": [],
    }[stage]


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [row for _, row in read_lines(path)] if path.is_file() else []


def build_summary(
    config: HarnessConfig, profile: str, results: list[StageResult] | None = None
) -> dict[str, Any]:
    """summary.json from the run folder's files (and this invocation's stage results)."""
    run_dir = config.run_dir
    stages_done = _json(run_dir / "stages.json") or {}
    compare = _json(run_dir / "compare" / "metrics.json")
    judge = _json(run_dir / "judge" / "summary.json")
    train = _json(run_dir / "train" / "summary.json")
    theory = _json(run_dir / "theory.json")
    plots = dict((theory or {}).pop("plots", {}))
    if (run_dir / "train" / "reward.png").is_file():
        plots["train_reward"] = "train/reward.png"
    return {
        "run": _run_facts(config, profile),
        "stages": _stage_rows(config, stages_done, results),
        "unscored": _unscored(stages_done, compare, train, judge),
        "refine": _jsonl(run_dir / "refine.jsonl"),
        "verifiers": compare["verifiers"] if compare else None,
        "reference": compare["reference"] if compare else None,
        "pairwise": judge,
        "train": train,
        "overoptimization": _json(run_dir / "overoptimization.json"),
        "theory": theory,
        "plots": plots,
    }


def _json(path: Path) -> Any:
    return read_json(path) if path.is_file() else None


def _stage_rows(
    config: HarnessConfig, done: dict[str, Any], results: list[StageResult] | None
) -> list[dict[str, Any]]:
    this_time = {r.stage: r for r in results or []}
    rows = []
    for stage in (*STAGES, *EVAL_STAGES):
        switched_on = stage in STAGES or getattr(config.eval, stage)
        entry = done.get(stage)
        result = this_time.get(stage)
        if not switched_on:
            rows.append({"stage": stage, "status": "off", "seconds": 0.0, "counts": {}})
        elif result is not None and not entry:  # returned without running (nothing to do)
            rows.append(
                {"stage": stage, "status": "skipped", "seconds": 0.0, "counts": dict(result.counts)}
            )
        elif entry:
            counts = {k: v for k, v in entry.items() if k not in ("fingerprint", "seconds")}
            reused = result is not None and result.reused
            rows.append(
                {
                    "stage": stage,
                    "status": "reused" if reused else "ran",
                    "seconds": entry.get("seconds", 0.0),
                    "counts": counts,
                }
            )
        else:
            rows.append({"stage": stage, "status": "not run", "seconds": 0.0, "counts": {}})
    return rows


def _unscored(done: dict[str, Any], compare: Any, train: Any, judge: Any) -> dict[str, Any]:
    def count(stage: str, key: str) -> int | None:
        return done.get(stage, {}).get(key)

    return {
        "rollouts": count("rollouts", "skipped"),
        "propose": count("propose", "skipped"),
        "refine": count("refine", "skipped"),
        "verify": count("verify", "unscored"),
        "compare": {r["label"]: r["num_unscored"] for r in compare["verifiers"]}
        if compare
        else None,
        "train": train["unscored_rewards"] if train else None,
        "judge": judge["unscored"] if judge else None,
    }


def _run_facts(config: HarnessConfig, profile: str) -> dict[str, Any]:
    import datetime
    import importlib.metadata

    from harness.machine import machine_info

    return {
        "name": config.run_name,
        "dir": str(config.run_dir),
        "profile": profile,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "harness_version": importlib.metadata.version("harness"),
        "machine": machine_info(),
    }
