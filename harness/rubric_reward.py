"""The rubric reward as TRL calls it: the completions of a training step -> one reward each,
from one batched call to the `verifier` role and the pipeline's own reward function
(`harness.reward.rewards`). A reward that cannot be computed is None, which TRL leaves out of
the group baseline. Each call appends one line to `train/rewards.jsonl`: mean, spread,
unscored, per-criterion pass rates, verifier seconds, group sizes.

    harness train -c configs/train-tiny.yaml
"""

from __future__ import annotations

import json
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any

from harness.backends import RunContext
from harness.config import RoleConfig, VerifyConfig
from harness.reward import rewards
from harness.roles import Role, build_role
from harness.types import Candidate, Prompt, Rubric
from harness.verifier import Job, verify


class RubricReward:
    """TRL reward function: completions of a step -> rubric rewards, one verifier batch.

    Picklable: it holds configs, not connections; the verifier role is (re)opened lazily in
    whichever process calls it."""

    __name__ = "rubric_reward"

    def __init__(
        self,
        prompts: dict[str, Prompt],
        rubrics: dict[str, Rubric],
        verifier: RoleConfig,
        context: RunContext,
        settings: VerifyConfig,
        templates: Path,
        log_path: Path,
    ) -> None:
        self.prompts, self.rubrics = prompts, rubrics
        self.verifier, self.context, self.settings = verifier, context, settings
        self.templates, self.log_path = templates, log_path
        self.num_calls = 0
        self._role: Role | None = None
        self._owned = True  # False when the caller lent a started role (and closes it)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_role": None, "_owned": True}

    def role(self) -> Role:
        if self._role is None:
            self._role = build_role("verifier", self.verifier, self.context)
        return self._role

    def use_role(self, role: Role) -> None:
        """Verify with an already started role (owned and closed by its caller)."""
        self._role, self._owned = role, False

    def close(self) -> None:
        if self._role is not None and self._owned:
            self._role.close()
        self._role = None

    def __call__(
        self, prompts: list, completions: list, prompt_id: list[str], **kwargs: Any
    ) -> list[float | None]:
        texts = [c[-1]["content"] if isinstance(c, list) else str(c) for c in completions]
        self.num_calls += 1
        jobs = [
            Job(self.prompts[pid], Candidate(id=f"call{self.num_calls}:{i}", prompt_id=pid,
                                             text=text, model="policy", sample_index=i),
                self.rubrics[pid])
            for i, (pid, text) in enumerate(zip(prompt_id, texts))
        ]  # fmt: skip
        started = time.perf_counter()
        verdicts = verify(self.role(), jobs, self.settings, self.templates)
        seconds = time.perf_counter() - started
        values = rewards(jobs, verdicts, self.settings)
        self._log(kwargs, prompt_id, values, verdicts, seconds)
        return values

    def _log(
        self,
        kwargs: dict[str, Any],
        prompt_ids: list[str],
        rewards: list[float | None],
        verdicts: list,
        seconds: float,
    ) -> None:
        scored = [r for r in rewards if r is not None]
        passed: dict[str, list[bool]] = {}
        for v in verdicts:
            if v.met is not None:
                passed.setdefault(f"{v.prompt_id}/{v.criterion_id}", []).append(v.met)
        state = kwargs.get("trainer_state")
        row = {
            "step": state.global_step + 1 if state is not None else self.num_calls,
            "reward_mean": statistics.fmean(scored) if scored else None,
            "reward_std": statistics.pstdev(scored) if len(scored) > 1 else 0.0,
            "num_completions": len(rewards),
            "num_unscored": len(rewards) - len(scored),
            "unscored_verdicts": sum(v.met is None for v in verdicts),
            "pass_rates": {k: sum(v) / len(v) for k, v in sorted(passed.items())},
            "group_sizes": dict(Counter(prompt_ids)),
            "verifier_seconds": round(seconds, 4),
        }
        with self.log_path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")
        if callable(log_metric := kwargs.get("log_metric")):
            log_metric("verifier_seconds", seconds)
            log_metric("unscored_rewards", float(row["num_unscored"]))
