"""(5) The share of a LoRA GRPO step spent in generation, verification and the update, per
verifier layout, rewarded by the bench's engine."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.bench.engine import Engine
from harness.bench.workload import RUBRIC_MODES
from harness.config import HarnessConfig
from harness.verifier import Job


def measure_train_split(
    config: HarnessConfig, engine: Engine, jobs: Sequence[Job], out_dir: Path
) -> dict[str, Any]:
    """A few LoRA GRPO steps of the profile's policy, rewarded by this engine, per layout."""
    from harness.datasets import export_rubric_dataset
    from harness.training import train

    if config.roles.policy is None:
        return {"skipped": "the profile has no policy role"}
    prompts = list({job.prompt.id: job.prompt for job in jobs}.values())
    rubric_path = out_dir / "train" / "rubrics.jsonl"
    export_rubric_dataset(rubric_path, prompts, [job.rubric for job in jobs])
    split: dict[str, Any] = {}
    for mode in RUBRIC_MODES:
        run_config = config.model_copy(
            update={
                "runs_dir": str(out_dir / "train"),
                "run_name": mode,
                "cache": False,
                "verify": config.verify.model_copy(update={"mode": mode}),
                "train": config.train.model_copy(
                    update={"rubrics": str(rubric_path), "verifier": None}
                ),
            }
        )
        shutil.rmtree(run_config.run_dir, ignore_errors=True)  # no resume: every step is timed
        result = train(run_config, verifier_role=engine.role()[0])
        completions = config.train.per_device_train_batch_size * (
            config.train.gradient_accumulation_steps
        )
        split[mode] = {**result.step_split, "steps": result.steps,
                       "completions_per_step": completions}  # fmt: skip
    return split
