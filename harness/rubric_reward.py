"""The rubric reward as TRL calls it: the completions of a training step -> one reward each,
from one batched call to the `verifier` role and the pipeline's own reward function
(`harness.reward.rewards`). A reward that cannot be computed is None, which TRL leaves out of
the group baseline. Each call appends one line to `train/rewards.jsonl`: mean, spread,
unscored, per-criterion pass rates, verifier seconds, group sizes.

With several training processes each verifies its own share of the step's completions; what
each saw is gathered to all (torch.distributed), and the main process writes the step's one
line over all of them (the slowest process's verifier seconds, `processes`: how many), so
the file has one line per step whatever the number of processes.

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
        share = {"prompt_ids": list(prompt_id), "rewards": values, "seconds": seconds,
                 "unscored_verdicts": sum(v.met is None for v in verdicts),
                 "passed": passed_by_criterion(verdicts)}  # fmt: skip
        shares = gathered(share)
        if process_rank() == 0:
            self._log(kwargs, shares)
        if callable(log_metric := kwargs.get("log_metric")):
            log_metric("verifier_seconds", seconds)
            log_metric("unscored_rewards", float(sum(r is None for r in values)))
        return values

    def _log(self, kwargs: dict[str, Any], shares: list[dict[str, Any]]) -> None:
        values = [r for s in shares for r in s["rewards"]]
        scored = [r for r in values if r is not None]
        passed: dict[str, list[bool]] = {}
        for s in shares:
            for key, met in s["passed"].items():
                passed.setdefault(key, []).extend(met)
        state = kwargs.get("trainer_state")
        row = {
            "step": state.global_step + 1 if state is not None else self.num_calls,
            "reward_mean": statistics.fmean(scored) if scored else None,
            "reward_std": statistics.pstdev(scored) if len(scored) > 1 else 0.0,
            "num_completions": len(values),
            "num_unscored": len(values) - len(scored),
            "unscored_verdicts": sum(s["unscored_verdicts"] for s in shares),
            "pass_rates": {k: sum(v) / len(v) for k, v in sorted(passed.items())},
            "group_sizes": dict(Counter(p for s in shares for p in s["prompt_ids"])),
            "verifier_seconds": round(max(s["seconds"] for s in shares), 4),
        }
        if len(shares) > 1:
            row["processes"] = len(shares)
        with self.log_path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")


def passed_by_criterion(verdicts: list) -> dict[str, list[bool]]:
    """The scored verdicts per `prompt/criterion`."""
    passed: dict[str, list[bool]] = {}
    for v in verdicts:
        if v.met is not None:
            passed.setdefault(f"{v.prompt_id}/{v.criterion_id}", []).append(v.met)
    return passed


def process_rank() -> int:
    """This training process's rank (0 in a single process)."""
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def gathered(item: Any) -> list[Any]:
    """`item` of every training process, in rank order, on every process (`[item]` alone)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [item]
    items: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(items, item)
    return items
