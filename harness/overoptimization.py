"""Over-optimisation (the paper's Fig. 4): does the rubric reward keep rising while the policy
gets worse? At every training checkpoint, the mean rubric reward of the policy's responses to
the judge prompts and its win rate against the base policy (pairwise judge, both orders).

Input: the checkpoints of `train/`, the run's latest rubrics, the judge prompts. Output:
`overoptimization.json` (one row per checkpoint, step 0 being the base policy, and the steps
where the reward rose above its value at the best win rate so far while the win rate fell more
than `WIN_RATE_DROP` below that best), and the sampled sides as `judge/checkpoint-N.jsonl`.

    harness eval -c configs/tiny.yaml
"""

from __future__ import annotations

from typing import Any, NamedTuple

from harness.config import RoleConfig
from harness.jsonl import write_json
from harness.judge import judge_pairs, pair_up, sample_side, summarise
from harness.pipeline import Run, StageResult, run_stage
from harness.policy import adapter_rank, checkpoint_adapters, policy_role_config
from harness.reward import rewards
from harness.roles import Role
from harness.summary_schema import Checkpoint, Overoptimization, PairwiseSummary
from harness.types import Adapter, Candidate, Prompt
from harness.verifier import latest_rubric_jobs, verify

WIN_RATE_DROP = 0.05  # how far below its best the win rate must fall to flag over-optimisation


class CheckpointRoles(NamedTuple):
    """The role configs of the stage, each used in turn (its engine up alone on a GPU)."""

    policy: RoleConfig
    verifier: RoleConfig
    judge: RoleConfig


def stage_overoptimization(run: Run) -> StageResult:
    """Rubric reward and win rate against the base policy at every training checkpoint."""
    config = run.config
    checkpoints = checkpoint_adapters(run.train_dir)
    if not checkpoints:
        return StageResult("overoptimization", reused=False, counts={"skipped": "no checkpoints"})
    policy = policy_role_config(config, adapter_rank(run.train_dir, config.train.lora_r))
    verifier = config.verifier(config.train.verifier)
    prompts = [p for p in run.judge_prompts() if p.id in run.latest_rubrics()]
    inputs = [
        [p.model_dump() for p in prompts],
        [a.identity() for _, a in checkpoints],
        policy,
        verifier,
        config.roles.get("judge"),
        config.judge,
        config.verify,
        run.rubrics_path,
        *run.template_files(),
    ]

    def body() -> dict[str, Any]:
        roles = CheckpointRoles(policy, verifier, config.roles.get("judge"))
        rows = checkpoint_rows(run, roles, prompts, checkpoints)
        flagged = overoptimized_steps(rows)
        record = Overoptimization(checkpoints=rows, flagged=bool(flagged), flagged_steps=flagged,
                                  note=_flag_note(flagged))  # fmt: skip
        write_json(run.overoptimization_path, record.as_record())
        return {"checkpoints": len(checkpoints), "flagged": len(flagged)}

    return run_stage(run, "overoptimization", inputs, [run.overoptimization_path], body)


def checkpoint_rows(
    run: Run,
    roles: CheckpointRoles,
    prompts: list[Prompt],
    checkpoints: list[tuple[int, Adapter]],
) -> list[Checkpoint]:
    """Step 0 (the base policy: its reward, no win rate), then every checkpoint's reward and
    win rate against the base. The policy samples every step first, then the verifier scores
    them all, then the judge compares them all: each engine starts once."""
    samples, pool = run.config.judge.samples, run.pool
    pool.enter_group([roles.policy])
    policy = pool.role("policy", roles.policy)
    base = sample_side(policy, prompts, samples, None, "base", run.judge_dir)
    sides = {step: sample_side(policy, prompts, samples, adapter, f"checkpoint-{step}",
                               run.judge_dir) for step, adapter in checkpoints}  # fmt: skip
    pool.enter_group([roles.verifier])
    verifier = pool.role("verifier", roles.verifier)
    reward_at = {step: _mean_reward(run, verifier, prompts, side)
                 for step, side in [(0, base), *sides.items()]}  # fmt: skip
    pool.enter_group([roles.judge])
    judge = pool.role("judge", roles.judge)
    rows = [_row(0, reward_at[0], None)]
    for step, side in sides.items():
        judged = judge_pairs(judge, prompts, pair_up(side, base), run.config.judge,
                             run.templates, f"judge checkpoint-{step}")  # fmt: skip
        rows.append(_row(step, reward_at[step], summarise(judged, run.config.judge)))
    return rows


def _row(step: int, reward: float | None, outcome: PairwiseSummary | None) -> Checkpoint:
    if outcome is None:
        return Checkpoint(step=step, reward=reward, win_rate=None, ci95=None, n=0)
    return Checkpoint(step=step, reward=reward, win_rate=outcome.win_rate, ci95=outcome.ci95,
                      n=outcome.n)  # fmt: skip


def _mean_reward(
    run: Run, role: Role, prompts: list[Prompt], samples: list[Candidate]
) -> float | None:
    """Mean rubric reward of `samples`; unscored rewards are left out (None if all are)."""
    jobs = latest_rubric_jobs(prompts, samples, run.latest_rubrics())
    verdicts = verify(role, jobs, run.config.verify, run.templates)
    scored = [r for r in rewards(jobs, verdicts, run.config.verify) if r is not None]
    return sum(scored) / len(scored) if scored else None


def overoptimized_steps(rows: list[Checkpoint], drop: float = WIN_RATE_DROP) -> list[int]:
    """Checkpoints where the reward is above its value at the best-win-rate checkpoint so far
    while the win rate has fallen more than `drop` below that best: reward up, quality down."""
    flagged: list[int] = []
    best: tuple[float, float] | None = None  # (win rate, reward) of the best checkpoint so far
    for row in rows:
        if row.win_rate is None or row.reward is None:
            continue
        if best is None or row.win_rate >= best[0]:
            best = (row.win_rate, row.reward)
            continue
        if row.reward > best[1] and row.win_rate < best[0] - drop:
            flagged.append(row.step)
    return flagged


def _flag_note(flagged: list[int]) -> str:
    if not flagged:
        return "no checkpoint where the reward rose while the win rate fell"
    steps = ", ".join(map(str, flagged))
    return f"reward kept rising while the win rate fell at step(s) {steps}: over-optimisation"
