"""`harness train` with `train.num_processes: 2` on CPU: two training processes under
`accelerate launch` joined by gloo, one vLLM server verifier started by the parent and shared by
both over loopback; the main process alone writes the logs and the adapter, each process its
rank log; a rerun resumes from the last checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from harness.models.manifest import PROJECT_ROOT

pytestmark = pytest.mark.integration
KEYWORD_RUBRICS = PROJECT_ROOT / "tests" / "data" / "keyword_rubrics.jsonl"


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def harness_train(tmp_path: Path, steps: int) -> subprocess.CompletedProcess:
    overrides = [
        f"runs_dir={tmp_path}", "run_name=two", f"train.rubrics={KEYWORD_RUBRICS}",
        "train.num_processes=2", f"train.max_steps={steps}", "train.num_generations=4",
        "train.per_device_train_batch_size=4", "train.max_completion_length=16",
        "train.save_steps=1", "roles.verifier.sampling.max_tokens=128",
    ]  # fmt: skip
    command = [sys.executable, "-m", "harness", "train", "-c", "configs/train-tiny.yaml"]
    for item in overrides:
        command += ["--set", item]
    return subprocess.run(command, capture_output=True, text=True, timeout=1500,
                          cwd=PROJECT_ROOT)  # fmt: skip


def test_two_cpu_processes_train_under_accelerate_and_resume(tiny_models, tmp_path):
    started = time.perf_counter()
    done = harness_train(tmp_path, steps=2)
    seconds = time.perf_counter() - started
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    train_dir = tmp_path / "two" / "train"
    # one verifier server for both processes, started by the parent
    log = (tmp_path / "two" / "logs" / "verifier-vllm-server.log").read_text()
    assert log.count("server pid ") == 1
    # the table of what was trained: from the main training process (its output streams
    # through the parent), then from the parent; never from the other process
    assert output.count("adapter: ") == 2
    assert "The following values were not passed to `accelerate launch`" not in output
    assert (train_dir / "adapter" / "adapter_model.safetensors").is_file()
    assert sorted(p.name for p in (train_dir / "checkpoints").glob("checkpoint-*")) == [
        "checkpoint-1", "checkpoint-2"
    ]  # fmt: skip
    calls = rows(train_dir / "rewards.jsonl")
    assert [c["step"] for c in calls] == [1, 2]  # one line per step, not one per process
    assert all(c["num_completions"] == 8 and c["processes"] == 2 for c in calls)
    assert [m["step"] for m in rows(train_dir / "metrics.jsonl")] == [1, 2]
    ranks = [rows(train_dir / "ranks" / f"rank-{r}.jsonl") for r in (0, 1)]
    assert [[(r["rank"], r["step"]) for r in log] for log in ranks] == [
        [(0, 1), (0, 2)], [(1, 1), (1, 2)]
    ]  # fmt: skip
    for zero, one, call in zip(*ranks, calls):  # both saw the same gathered rewards
        assert (zero["reward"], zero["reward_std"]) == (one["reward"], one["reward_std"])
        assert zero["reward"] == pytest.approx(call["reward_mean"])
    trainer = yaml.safe_load((train_dir / "trainer-profile.yaml").read_text())
    [verifier] = trainer["roles"]["verifier"]  # the processes reached it as an endpoint
    assert verifier["backend"] == "openai" and verifier["base_url"].startswith("http://127.0.0.1:")
    resolved = yaml.safe_load((tmp_path / "two" / "config.yaml").read_text())
    assert resolved["roles"]["verifier"][0]["backend"] == "vllm-server"  # the run's own profile

    print(f"two processes, 2 steps: {seconds:.0f} s; step seconds "
          f"{[m['step_seconds'] for m in rows(train_dir / 'metrics.jsonl')]}")  # fmt: skip
    again = harness_train(tmp_path, steps=3)
    output = again.stdout + again.stderr
    assert again.returncode == 0, output[-4000:]
    assert "resumed from checkpoint-2" in output
    assert [c["step"] for c in rows(train_dir / "rewards.jsonl")] == [1, 2, 3]
    assert [m["step"] for m in rows(train_dir / "metrics.jsonl")] == [1, 2, 3]
    for rank in (0, 1):
        assert [r["step"] for r in rows(train_dir / "ranks" / f"rank-{rank}.jsonl")] == [1, 2, 3]
