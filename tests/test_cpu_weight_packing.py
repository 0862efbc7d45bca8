"""vllm-cpu drops its linear weights after loading on most CPUs (packed for oneDNN / AMX), so
TRL's colocate weight sync cannot work there: the detection mirrors vLLM's dispatch, and
`train.generation: vllm` is refused before anything heavy starts."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from harness import machine, training
from harness.config import ConfigError, load_config
from harness.machine import vllm_cpu_drops_linear_weights
from harness.models.manifest import PROJECT_ROOT

AVX2 = {"sse4_2", "fma", "avx", "avx2", "f16c"}
ALDER_LAKE = AVX2 | {"avx_vnni"}  # AVX-VNNI, no AVX-512
ARROW_LAKE = ALDER_LAKE | {"avx_vnni_int8", "avx_ne_convert"}  # oneDNN's avx2_vnni_2
SKYLAKE_X = AVX2 | {"avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd"}
COOPER_LAKE = SKYLAKE_X | {"avx512_vnni", "avx512_bf16"}
SAPPHIRE_RAPIDS = COOPER_LAKE | {"avx512_fp16", "amx_tile", "amx_bf16", "amx_int8"}
GRANITE_RAPIDS = SAPPHIRE_RAPIDS | {"amx_fp16"}
ZEN4 = COOPER_LAKE  # AVX-512 with bf16, no AMX, no avx512_fp16


@pytest.mark.parametrize(
    ("flags", "bf16", "fp16"),
    [
        (AVX2, False, False),
        (ALDER_LAKE, False, False),
        (ARROW_LAKE, True, True),
        (SKYLAKE_X, True, False),
        (COOPER_LAKE, True, False),
        (ZEN4, True, False),
        (SAPPHIRE_RAPIDS, True, True),
        (GRANITE_RAPIDS, True, True),
    ],
)
def test_which_cpus_and_dtypes_lose_their_weights(flags, bf16, fp16):
    assert vllm_cpu_drops_linear_weights(flags, "bfloat16") is bf16
    assert vllm_cpu_drops_linear_weights(flags, "float16") is fp16
    # oneDNN builds an f32 matmul on every ISA vllm-cpu runs on
    assert vllm_cpu_drops_linear_weights(flags, "float32")


def test_amx_alone_packs_bf16_and_amx_fp16_packs_fp16():
    # the sgl AMX kernel path of check_cpu_sgl_kernel, whatever the AVX-512 flags say
    assert vllm_cpu_drops_linear_weights({"amx_tile"}, "bfloat16")
    assert not vllm_cpu_drops_linear_weights({"amx_tile"}, "float16")
    assert vllm_cpu_drops_linear_weights({"amx_tile", "amx_fp16"}, "float16")


def test_zen_platform_always_drops():
    assert vllm_cpu_drops_linear_weights(AVX2, "bfloat16", zen_platform=True)
    assert vllm_cpu_drops_linear_weights(AVX2, "float16", zen_platform=True)


def test_unknown_dtype_keeps():
    assert not vllm_cpu_drops_linear_weights(SAPPHIRE_RAPIDS, "int8")


@pytest.mark.parametrize(
    ("settings", "dtype"),
    [
        ({"dtype": "float32"}, "bfloat16"),  # vLLM's auto dtype downcasts float32 on x86
        ({"torch_dtype": "bfloat16"}, "bfloat16"),
        ({"torch_dtype": "float16"}, "float16"),
        ({"text_config": {"dtype": "float16"}}, "float16"),
        ({}, "bfloat16"),
    ],
)
def test_engine_dtype_follows_vllm_auto(tmp_path, settings, dtype):
    (tmp_path / "config.json").write_text(json.dumps(settings))
    assert training.vllm_cpu_engine_dtype(str(tmp_path)) == dtype


def fake_machine(monkeypatch, flags: set[str], vllm_cpu: bool = True) -> None:
    monkeypatch.setattr(training.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(machine, "vllm_cpu_build", lambda: vllm_cpu)
    monkeypatch.setattr(machine, "cpu_flags", lambda: frozenset(flags))
    monkeypatch.setattr(machine, "zen_cpu_platform", lambda: False)


def float32_model(tmp_path: Path) -> str:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"dtype": "float32"}))
    return str(model)


def test_refusal_message_names_cause_and_alternative(monkeypatch, tmp_path):
    fake_machine(monkeypatch, SAPPHIRE_RAPIDS)
    message = training.vllm_generation_refusal(float32_model(tmp_path))
    assert message is not None and "\n" not in message
    assert "AMX CPU" in message and "bfloat16" in message
    assert "oneDNN" in message and "AVX-512/AMX" in message
    assert "cannot be synced into the engine" in message
    assert "train.generation: transformers" in message and "GPU" in message


def test_no_refusal_on_avx2_or_without_vllm_cpu(monkeypatch, tmp_path):
    model = float32_model(tmp_path)
    fake_machine(monkeypatch, AVX2)
    assert training.vllm_generation_refusal(model) is None
    fake_machine(monkeypatch, SAPPHIRE_RAPIDS, vllm_cpu=False)  # the CUDA build keeps weights
    assert training.vllm_generation_refusal(model) is None


def test_this_machine_matches_the_flags(tmp_path):
    """The real check runs without torch and agrees with the pure rule for this CPU."""
    model = float32_model(tmp_path)
    refused = training.vllm_generation_refusal(model) is not None
    expected = (
        machine.vllm_cpu_build()
        and training.platform.machine().lower() in ("x86_64", "amd64")
        and vllm_cpu_drops_linear_weights(
            machine.cpu_flags(), "bfloat16", machine.zen_cpu_platform()
        )
    )
    assert refused == expected


def test_train_refuses_vllm_generation_before_anything_heavy(monkeypatch, tmp_path):
    fake_machine(monkeypatch, SAPPHIRE_RAPIDS)
    model = float32_model(tmp_path)
    monkeypatch.setattr("harness.models.manifest.resolve_model", lambda name, offline: model)

    def heavy(*args, **kwargs):
        raise AssertionError("started before the refusal")

    monkeypatch.setattr(training, "served_verifier", heavy)
    monkeypatch.setattr(training, "_trainer", heavy)
    monkeypatch.setattr("harness.rubric_reward.build_role", heavy)
    for name in ("vllm", "trl", "peft"):  # an import of one of these would start the engine
        monkeypatch.setitem(sys.modules, name, None)
    config = load_config(PROJECT_ROOT / "configs" / "train-learnable.yaml",
                         [f"runs_dir={tmp_path}", "train.generation=vllm"])  # fmt: skip
    with pytest.raises(ConfigError, match=r"train\.generation: vllm cannot run"):
        training.train(config)
    assert not (config.run_dir / "train").exists()


def test_train_with_transformers_generation_is_not_refused(monkeypatch, tmp_path):
    fake_machine(monkeypatch, SAPPHIRE_RAPIDS)
    model = float32_model(tmp_path)
    monkeypatch.setattr("harness.models.manifest.resolve_model", lambda name, offline: model)

    class Reached(Exception):
        pass

    def served(*args, **kwargs):
        raise Reached

    monkeypatch.setattr(training, "served_verifier", served)
    config = load_config(PROJECT_ROOT / "configs" / "train-learnable.yaml",
                         [f"runs_dir={tmp_path}", "train.generation=transformers"])  # fmt: skip
    with pytest.raises(Reached):
        training.train(config)
