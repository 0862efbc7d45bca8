"""The memory plan on simulated GPUs: hand-worked figures, the shipped GPU profiles on their
stated hardware and on smaller ones, `harness plan` for every profile, and the refusal of an
impossible plan before `harness eval` or `harness train` starts anything."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness.cli import main
from harness.config import ConfigError, load_config
from harness.errors import explain
from harness.memory import GIB, model_shape, shape_from_config
from harness.plan import parse_gpus, plan_run, read_gpus, train_gpu

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
GPU_PROFILES = {"medical": "2x80GB", "workstation": "2x80GB", "train-gpu": "1x80GB"}
SMALLER = {"medical": "1x80GB", "workstation": "1x48GB", "train-gpu": "1x48GB"}

# Qwen3-8B's config.json (the values that size it)
QWEN3_8B = {
    "model_type": "qwen3",
    "hidden_size": 4096,
    "num_hidden_layers": 36,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "intermediate_size": 12288,
    "vocab_size": 151936,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "max_position_embeddings": 40960,
}


def plan_of(profile: str, gpus: str, stages: list[str] | None = None):
    return plan_run(load_config(CONFIGS / f"{profile}.yaml"), parse_gpus(gpus), gpus, stages)


def test_qwen3_8b_figures_by_hand() -> None:
    shape = shape_from_config(QWEN3_8B)
    # per layer: q and o 2 x 4096 x (32 x 128) = 33_554_432; k and v 2 x 4096 x (8 x 128)
    # = 8_388_608; q_norm and k_norm 2 x 128 = 256; MLP 3 x 4096 x 12288 = 150_994_944;
    # two norms 2 x 4096 = 8192 -> 192_946_432 per layer, x 36 = 6_946_071_552; embedding
    # and LM head 2 x 151936 x 4096 = 1_244_659_712; final norm 4096
    assert shape.parameters == 6_946_071_552 + 1_244_659_712 + 4096 == 8_190_735_360
    assert shape.weight_bytes("bfloat16") == 16_381_470_720  # 15.26 GiB
    assert shape.weight_bytes("float32") == 32_762_941_440  # the 33 GB of TRL's default
    # KV per token: 2 (K and V) x 36 layers x 8 heads x 128 x 2 bytes = 147_456 (144 KiB)
    assert shape.kv_bytes_per_token("bfloat16") == 147_456
    # LoRA r=64 on all linear layers: per layer q, o (4096 + 4096) x 2, k, v (4096 + 1024)
    # x 2, gate, up, down 3 x (4096 + 12288) = 75_776 -> x 64 x 36 = 174_587_904
    assert shape.lora_parameters(64) == 174_587_904
    assert model_shape("Qwen/Qwen3-8B").parameters == shape.parameters  # the table agrees


def test_an_engine_and_the_trainer_by_hand() -> None:
    plan = plan_of("medical", "2x80GB")
    propose = next(g for g in plan.groups if g.stage == "propose")
    [proposer] = propose.engines
    # Qwen3-32B: 32_762_123_264 parameters x 2 bytes / TP 2 = 30.51 GiB per GPU; KV 2 x 64 x
    # 8 x 128 x 2 = 262_144 bytes per token x 16384 / 2 = 2 GiB; reservation 0.75 x 80 GiB
    assert proposer.gpus == [0, 1]
    assert proposer.weights_gib == round(32_762_123_264 * 2 / 2 / GIB, 2) == 30.51
    assert proposer.kv_gib == 2.0
    assert proposer.reservation_gib == 60.0
    [train] = [g for g in plan.groups if g.stage == "train"]
    trainer = train.trainer
    assert trainer is not None and trainer.gpu == 1  # the verifier engine holds GPU 0
    # 8 sequences of 1024 + 2048 tokens, checkpointed: 24_576 x 2 bytes x (36 x 4096 +
    # 10 x 4096 + 4 x 12288) = 10.88 GiB
    assert trainer.activations_gib == round(24_576 * 2 * (36 * 4096 + 40_960 + 49_152) / GIB, 2)
    assert trainer.lora_optimizer_gib == round(174_587_904 * 16 / GIB, 2)  # 2.6 GiB
    assert trainer.generation_gib == 0.35 * 80  # the colocated vLLM's share


@pytest.mark.parametrize("profile", sorted(GPU_PROFILES))
def test_gpu_profiles_fit_their_stated_hardware(profile: str) -> None:
    hardware = GPU_PROFILES[profile]
    header = (CONFIGS / f"{profile}.yaml").read_text().splitlines()[0]
    count, size = hardware.removesuffix("GB").split("x")
    assert header.startswith(f"# hardware: {count} x {size} GB")
    plan = plan_of(profile, hardware)
    assert plan.ok, plan.first_problem()
    assert all(g.engines or g.trainer for g in plan.groups)


@pytest.mark.parametrize("profile", sorted(SMALLER))
def test_gpu_profiles_fail_on_smaller_gpus_naming_stage_and_gpu(profile: str) -> None:
    problem = plan_of(profile, SMALLER[profile]).first_problem()
    assert problem is not None
    assert problem.startswith("stage ") and "GPU 0" in problem
    assert any(word in problem for word in ("raise", "lower", "set", "use"))


def test_the_sum_on_a_gpu_names_the_share_to_lower() -> None:
    config = load_config(
        CONFIGS / "medical.yaml", ["roles.proposer.engine.gpu_memory_utilization=0.85"]
    )
    plan = plan_run(config, parse_gpus("2x80GB"), "test")
    refine = next(g for g in plan.groups if g.stage == "refine")
    # 0.85 x 80 + 0.2 x 80 = 84 GiB > 79 usable: the proposer gives up 5 GiB -> 0.75
    assert refine.per_gpu_gib[0] == 84.0
    assert refine.problems == [
        "stage refine, GPU 0: 84.0 GiB (qwen3-32b 68.0 + qwen3-4b 16.0) > 79.0 GiB usable of "
        "80 GiB; lower roles.proposer.engine.gpu_memory_utilization to 0.75"
    ]


def test_weights_larger_than_the_share_name_a_larger_share() -> None:
    # the finding: the 14B verifier at 0.30 cannot hold its 27.5 GiB of weights
    config = load_config(
        CONFIGS / "medical.yaml", ["roles.verifier.3.engine.gpu_memory_utilization=0.3"]
    )
    problem = plan_run(config, parse_gpus("2x80GB"), "test").first_problem()
    assert problem is not None and problem.startswith("stage compare (group 4), qwen3-14b on GPU 0")
    assert "weights 27.5" in problem
    assert problem.endswith("raise roles.verifier.3.engine.gpu_memory_utilization to 0.45")


def test_engines_pile_up_without_stopping_idle_ones() -> None:
    config = load_config(CONFIGS / "medical.yaml", ["eval.stop_idle_engines=false"])
    plan = plan_run(config, parse_gpus("8x80GB"), "test")
    propose = next(g for g in plan.groups if g.stage == "propose")
    assert [e.label for e in propose.engines] == ["qwen3-8b", "qwen3-14b", "qwen3-32b"]
    assert not plan.ok


def test_without_gpus_engines_are_planned_in_host_memory() -> None:
    plan = plan_run(load_config(CONFIGS / "tiny.yaml"), [], "none found")
    engines = [e for g in plan.groups for e in g.engines]
    assert engines and {e.place for e in engines} <= {"cpu", "none"}
    assert plan.ok


def test_medical_fits_an_h100_as_nvidia_smi_reports_it() -> None:
    # an H100 80GB reports 81559 MiB = 79.65 GiB: the plan keeps a margin below "80 GB"
    assert plan_of("medical", "2x79.65GB").ok


def test_the_trainer_gets_a_gpu_the_verifier_leaves_free() -> None:
    medical, train = (load_config(CONFIGS / f"{p}.yaml") for p in ("medical", "train-gpu"))
    assert train_gpu(medical, parse_gpus("2x80GB")) == 1
    assert train_gpu(train, parse_gpus("1x80GB")) == 0  # one GPU: shared
    assert train_gpu(train, parse_gpus("4x80GB")) == 3
    assert train_gpu(train, []) is None


def test_gpus_read_from_nvidia_smi_in_gib(monkeypatch) -> None:
    rows = ["0, NVIDIA H100 80GB HBM3, 81559, 80000", "1, NVIDIA H100 80GB HBM3, 81559, 1024"]
    monkeypatch.setattr("harness.machine.nvidia_smi", lambda *query: rows)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    gpus = read_gpus()
    assert [(g.index, g.total_gib, g.free_gib) for g in gpus] == [
        (0, 79.65, 78.12),
        (1, 79.65, 1.0),
    ]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    [only] = read_gpus()
    assert (only.index, only.free_gib) == (0, 1.0)  # renumbered from 0, as CUDA does
    monkeypatch.setattr("harness.machine.nvidia_smi", lambda *query: None)
    assert read_gpus() == []


def test_gpu_sizes_parse_as_gib() -> None:
    assert [g.total_gib for g in parse_gpus("2x80GB")] == [80.0, 80.0]
    assert parse_gpus("1x24GB")[0].total_gib == 24.0
    with pytest.raises(ConfigError, match="2x80GB"):
        parse_gpus("80GB")


@pytest.mark.parametrize("profile", sorted(p.stem for p in CONFIGS.glob("*.yaml")))
def test_plan_command_prints_every_profile(profile: str) -> None:
    runner = CliRunner()
    args = ["plan", "-c", str(CONFIGS / f"{profile}.yaml"), "--gpus", "8x80GB"]
    shown = runner.invoke(main, args)
    assert shown.exit_code in (0, 2), shown.output
    assert "sum per GPU" in shown.output and "plan: " in shown.output
    as_json = runner.invoke(main, [*args, "--json"])
    record = json.loads(as_json.output)
    assert record["gpus_from"] == "--gpus 8x80GB" and record["groups"]
    assert (as_json.exit_code == 0) == record["ok"]


def test_eval_refuses_an_impossible_plan_at_once(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr("harness.plan.read_gpus", lambda: parse_gpus("1x24GB"))
    started = time.perf_counter()
    result = CliRunner().invoke(
        main, ["eval", "-c", str(CONFIGS / "workstation.yaml"), "--set", f"runs_dir={tmp_path}"]
    )
    assert time.perf_counter() - started < 2
    message, status = explain(result.exception)
    assert status == 2
    assert "\n" not in message
    assert message.startswith("memory plan: stage rollouts, Qwen/Qwen3-8B-Base on GPU 0")
    assert not (tmp_path / "workstation").exists()  # nothing started, nothing written


def test_train_plans_only_the_train_stage(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr("harness.plan.read_gpus", lambda: parse_gpus("1x48GB"))
    result = CliRunner().invoke(
        main, ["train", "-c", str(CONFIGS / "train-gpu.yaml"), "--set", f"runs_dir={tmp_path}"]
    )
    message, status = explain(result.exception)
    assert status == 2 and message.startswith("memory plan: stage train, ")


def test_no_gpu_no_refusal(monkeypatch) -> None:
    from harness.plan import refuse_impossible_plan

    monkeypatch.setattr("harness.plan.read_gpus", lambda: [])
    refuse_impossible_plan(load_config(CONFIGS / "medical.yaml"))  # a CPU machine: unchanged


def test_an_in_process_train_verifier_is_planned_on_the_trainers_gpu() -> None:
    # an in-process engine cannot be shared with the training process: it runs inside it,
    # on the one GPU the trainer sees, so the plan puts both there
    config = load_config(CONFIGS / "medical.yaml", ["roles.verifier.0.backend=vllm"])
    [train] = [g for g in plan_run(config, parse_gpus("2x80GB"), "2x80GB").groups
               if g.stage == "train"]  # fmt: skip
    [verifier] = [e for e in train.engines if e.label == "qwen3-4b"]
    assert train.trainer.gpu == 1 and verifier.gpus == [1]
    served = plan_run(load_config(CONFIGS / "medical.yaml"), parse_gpus("2x80GB"), "2x80GB")
    [train] = [g for g in served.groups if g.stage == "train"]
    [verifier] = [e for e in train.engines if e.label == "qwen3-4b"]
    assert train.trainer.gpu == 1 and verifier.gpus == [0]  # a server stays on its own GPU
