"""The real small models that ship inside PyPI packages (SmolLM2-135M-Instruct, Gemma-3-270M):
import determinism, their chat templates as the models expect them, grammar-constrained
verdicts through the vLLM engine and server, and one LoRA GRPO step on SmolLM2."""

from __future__ import annotations

import filecmp
import json
from pathlib import Path

import pytest

from harness.backends import create_backend
from harness.config import RoleConfig, load_config
from harness.models.gguf import import_gguf
from harness.models.manifest import PROJECT_ROOT, WEIGHTS_DIR
from harness.models.packaged import packaged_entries, part_path
from harness.roles import Role
from harness.training import train
from harness.types import ChatMessage, ChatRequest, Sampling

from ..conftest import assert_all_verdicts, verdict_requests

pytestmark = pytest.mark.integration
CPU_ENGINE = {"dtype": "float32", "enforce_eager": True, "max_model_len": 2048}
KEYWORD_RUBRICS = PROJECT_ROOT / "tests" / "data" / "keyword_rubrics.jsonl"
SMOLLM2_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


def tokenizer(name: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(WEIGHTS_DIR / name)


def test_import_of_the_same_file_is_byte_identical(tmp_path: Path):
    entry = packaged_entries(["smollm2-135m"])[0]
    source = part_path(entry.package.files[0])
    first = import_gguf(source, "m", weights_dir=tmp_path / "a")
    second = import_gguf(source, "m", weights_dir=tmp_path / "b")
    assert not first.reused and not second.reused
    names = sorted(p.name for p in first.path.iterdir())
    assert names == sorted(p.name for p in second.path.iterdir())
    assert {"model.safetensors", "tokenizer.json", "chat_template.jinja", "provenance.json",
            "config.json", "generation_config.json"} <= set(names)  # fmt: skip
    _, mismatch, errors = filecmp.cmpfiles(first.path, second.path, names, shallow=False)
    assert mismatch == [] and errors == []
    provenance = json.loads((first.path / "provenance.json").read_text())
    assert provenance["source"]["sha256"] == entry.package.sha256
    assert provenance["gguf"] | {"tensor_types": None} == {
        "architecture": "llama", "file_type": "Q4_1", "tensor_types": None,
        "name": "Smollm2 135M 8k Lc100K Mix1 Ep2", "license": "apache-2.0"}  # fmt: skip
    assert provenance["num_params"] == first.num_params == 134_515_008
    again = import_gguf(source, "m", weights_dir=tmp_path / "a")
    assert again.reused, "an up-to-date folder is left alone"


def test_smollm2_uses_its_own_chatml_template(real_models):
    text = tokenizer("smollm2-135m").apply_chat_template(
        [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True
    )
    assert text == (
        f"<|im_start|>system\n{SMOLLM2_SYSTEM}<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )


def test_gemma_gets_the_project_turn_template_and_stops_at_end_of_turn(real_models):
    gemma = tokenizer("gemma3-270m")
    text = gemma.apply_chat_template(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
         {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Bye"}],
        tokenize=False, add_generation_prompt=True,
    )  # fmt: skip
    assert text == (
        "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n"
        "<start_of_turn>model\nHello.<end_of_turn>\n"
        "<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n"
    )
    config = json.loads((WEIGHTS_DIR / "gemma3-270m" / "generation_config.json").read_text())
    end_of_turn = gemma.convert_tokens_to_ids("<end_of_turn>")
    assert config["eos_token_id"] == [gemma.eos_token_id, end_of_turn]


def real_role(model: str, backend: str) -> RoleConfig:
    return RoleConfig(backend=backend, model=model, engine=CPU_ENGINE,
                      sampling=Sampling(temperature=0.0, max_tokens=256))  # fmt: skip


@pytest.mark.parametrize(
    ("model", "backend"),
    [("smollm2-135m", "vllm"), ("smollm2-135m", "vllm-server"), ("gemma3-270m", "vllm")],
)
def test_constrained_verdicts_from_a_real_model(real_models, context, model, backend):
    verifier = create_backend("verifier", real_role(model, backend), context)
    try:
        requests = verdict_requests(12, temperature=0.0)
        completions = Role("verifier", verifier.config, verifier).generate(requests)
        assert_all_verdicts(completions, 12, distinct=False)
        question = ChatRequest(
            messages=(ChatMessage(role="user", content="Name three colours."),),
            sampling=Sampling(temperature=0.0, max_tokens=200),
            id="colours",
        )
        [answer] = verifier.generate([question])
    finally:
        verifier.close()
    assert answer.error is None and answer.text.strip()
    if model == "smollm2-135m":  # the instruct model answers and ends its turn by itself
        assert answer.finish_reason == "stop", answer.text
        assert any(c in answer.text.lower() for c in ("red", "blue", "green", "yellow"))


def test_one_lora_grpo_step_on_smollm2(real_models, tiny_models, tmp_path):
    config = load_config(
        PROJECT_ROOT / "configs" / "train-tiny.yaml",
        [f"runs_dir={tmp_path}", "run_name=smollm2", f"train.rubrics={KEYWORD_RUBRICS}",
         "roles.policy.model=smollm2-135m", "roles.verifier.backend=vllm",
         "train.max_steps=1", "train.num_generations=4", "train.per_device_train_batch_size=4",
         "train.max_completion_length=16", "train.learning_rate=0.001", "train.save_steps=1",
         "train.warmup_ratio=0"],  # a warm-up would make the one step's learning rate 0
    )  # fmt: skip
    result = train(config)
    assert result.steps == 1
    assert result.adapter_weights_changed and result.base_weights_unchanged
    [call] = [json.loads(line) for line in (result.train_dir / "rewards.jsonl").open()]
    assert call["num_completions"] == 4 and call["unscored_verdicts"] == 0
