"""A LoRA adapter applied per request: the vLLM engine (LoRA enabled) and the transformers
backend answer differently with and without it, and switch back to the base model."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.backends import create_backend
from harness.config import RoleConfig
from harness.policy import adapter_at, policy_role_config
from harness.types import ChatMessage, ChatRequest, Sampling

pytestmark = pytest.mark.integration
ENGINE = {"dtype": "float32", "enforce_eager": True, "max_model_len": 1024}


@pytest.fixture(scope="module")
def adapter_dir(tiny_models, tmp_path_factory) -> Path:
    """A LoRA adapter on tiny-s with random (non-zero) weights, as PEFT saves one."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_models / "tiny-s")
    lora = LoraConfig(r=8, lora_alpha=64, target_modules="all-linear", task_type="CAUSAL_LM",
                      init_lora_weights=False)  # fmt: skip
    folder = tmp_path_factory.mktemp("adapter")
    get_peft_model(model, lora).save_pretrained(folder)
    return folder


def requests(adapter) -> list[ChatRequest]:
    return [
        ChatRequest(messages=(ChatMessage(role="user", content=f"Question {i}?"),),
                    sampling=Sampling(temperature=0.0, max_tokens=12), adapter=adapter)
        for i in range(3)
    ]  # fmt: skip


def answers(backend, adapter) -> list[str]:
    return [c.text for c in backend.generate(requests(adapter))]


@pytest.mark.parametrize("backend_name", ["vllm", "transformers"])
def test_the_adapter_changes_the_answers_and_the_base_comes_back(
    backend_name, adapter_dir, context
):
    adapter = adapter_at(adapter_dir, "trained")
    config = RoleConfig(backend=backend_name, model="tiny-s",
                        engine=ENGINE if backend_name == "vllm" else {})  # fmt: skip
    if backend_name == "vllm":
        from harness.config import HarnessConfig

        profile = HarnessConfig(roles={"policy": config.model_dump()})
        config = policy_role_config(profile, max_lora_rank=8)
        assert config.engine["enable_lora"] and config.engine["max_lora_rank"] == 8
    with create_backend("policy", config, context) as backend:
        base = answers(backend, None)
        tuned = answers(backend, adapter)
        assert tuned != base
        assert answers(backend, None) == base  # the adapter is switched off again
        assert answers(backend, adapter) == tuned


def test_the_adapter_fingerprint_follows_its_weights(adapter_dir, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(adapter_dir, copy)
    assert adapter_at(copy, "x").fingerprint == adapter_at(adapter_dir, "x").fingerprint
    weights = copy / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert adapter_at(copy, "x").fingerprint != adapter_at(adapter_dir, "x").fingerprint
