"""The train stage of `harness eval` trains in a child process (`harness train` on the run's
resolved profile) on CPU, with its own verifier engine, and writes the stage's records."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from harness.models.manifest import PROJECT_ROOT

pytestmark = pytest.mark.integration
LATER_STAGES_OFF = [f"eval.{s}=false" for s in ("compare", "judge", "overoptimization", "theory")]


def test_the_train_stage_of_eval_trains_in_a_child_process(tiny_models, tmp_path):
    overrides = [f"runs_dir={tmp_path}", *LATER_STAGES_OFF]
    command = [sys.executable, "-m", "harness", "eval", "-c", "configs/tiny.yaml"]
    for item in overrides:
        command += ["--set", item]
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800,
                          cwd=PROJECT_ROOT)  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    run_dir = tmp_path / "tiny"
    # the child's own output, streamed through: `harness train` names its adapter
    assert "adapter: " in done.stderr
    summary = json.loads((run_dir / "train" / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["resumed_from"] == 0
    assert summary["adapter_weights_changed"] and summary["base_weights_unchanged"]
    assert summary["reward_first"] is not None and summary["reward_last"] is not None
    assert (run_dir / "train" / "adapter" / "adapter_model.safetensors").is_file()
    checkpoints = sorted(p.name for p in (run_dir / "train" / "checkpoints").glob("checkpoint-*"))
    assert checkpoints == ["checkpoint-2", "checkpoint-4"]
    rewards = (run_dir / "train" / "rewards.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in rewards] == [1, 2, 3, 4]
