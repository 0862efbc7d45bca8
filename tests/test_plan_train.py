"""The memory plan of training on several GPUs: one training process per GPU (a whole policy
copy each under plain data parallelism, sharded under ZeRO-3), TRL's generation server on
GPUs of its own, and the launch settings refused before anything starts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.config import ConfigError, load_config
from harness.plan import parse_gpus, plan_run, refuse_impossible_plan

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def train_group(overrides: list[str], gpus: str = "4x80GB"):
    config = load_config(CONFIGS / "train-gpu.yaml", overrides)
    [group] = plan_run(config, parse_gpus(gpus), gpus, ["train"]).groups
    return group


def test_each_training_process_holds_a_policy_copy_on_its_own_gpu() -> None:
    one = train_group([]).trainer
    group = train_group(["train.num_processes=2"])
    trainer = group.trainer
    assert one.gpus == [3] and trainer.gpus == [2, 3]  # the last GPUs the verifier leaves
    assert trainer.weights_gib == one.weights_gib  # plain DDP: a whole copy per process
    assert group.per_gpu_gib[2] == group.per_gpu_gib[3] == round(trainer.total_gib, 2)
    assert group.per_gpu_gib[1] == 0.0 and group.per_gpu_gib[0] > 0  # the verifier's GPU
    listed = train_group(["train.gpus=[1, 2, 3]"]).trainer
    assert listed.gpus == [1, 2, 3] and listed.gpu == 1


def test_zero3_shards_the_weights_and_zero2_the_optimizer(tmp_path: Path) -> None:
    plain = train_group(["train.num_processes=4"], "5x80GB").trainer
    sharded = {}
    for stage in (2, 3):
        path = tmp_path / f"zero{stage}.json"
        path.write_text(json.dumps({"zero_optimization": {"stage": stage}}))
        sharded[stage] = train_group(["train.num_processes=4", f"train.deepspeed={path}"],
                                     "5x80GB").trainer  # fmt: skip
    assert sharded[3].zero_stage == 3
    assert sharded[3].weights_gib == pytest.approx(plain.weights_gib / 4, abs=0.01)
    assert sharded[2].weights_gib == plain.weights_gib
    for stage in (2, 3):
        assert sharded[stage].lora_optimizer_gib == pytest.approx(
            plain.lora_optimizer_gib / 4, abs=0.01
        )


def test_the_generation_server_is_planned_on_its_gpus() -> None:
    group = train_group(["train.vllm_mode=server", "train.vllm_server_gpus=[3]",
                         "train.vllm_max_model_len=8192"])  # fmt: skip
    [server] = [e for e in group.engines if e.label == "generation server"]
    assert server.gpus == [3] and server.reservation_gib == 0.9 * 80
    assert server.weights_gib == pytest.approx(15.26, abs=0.01)  # Qwen3-8B in bfloat16
    assert group.trainer.gpus == [2] and group.trainer.generation_gib == 0.0  # not colocated
    assert group.per_gpu_gib[3] == 72.0 and group.ok
    wrong = train_group(["train.vllm_mode=server", "train.vllm_server_gpus=[7]"])
    assert "train.vllm_server_gpus names GPU 7" in wrong.problems[0]


def test_a_missing_deepspeed_config_is_refused_before_anything_starts(tmp_path, monkeypatch):
    monkeypatch.setattr("harness.plan.read_gpus", lambda: [])  # on any machine
    config = load_config(CONFIGS / "train-tiny.yaml", [f"train.deepspeed={tmp_path}/z.json"])
    with pytest.raises(ConfigError, match=r"^train\.deepspeed: .*z\.json does not exist"):
        refuse_impossible_plan(config, ["train"])
    refuse_impossible_plan(config, ["verify"])  # not training: not checked


def test_the_terminal_plan_names_every_training_gpu() -> None:
    from rich.console import Console

    from harness.report.plan_view import print_plan

    config = load_config(CONFIGS / "train-gpu.yaml", ["train.num_processes=2"])
    console = Console(record=True, width=200)
    print_plan(plan_run(config, parse_gpus("4x80GB"), "4x80GB", ["train"]), console)
    [trainer_line] = [line for line in console.export_text().splitlines() if "│ trainer" in line]
    assert "│ 2,3 " in trainer_line
