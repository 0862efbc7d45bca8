"""The real small models that ship inside PyPI packages (SmolLM2-135M-Instruct, Gemma-3-270M,
Qwen2.5-Coder-0.5B-Instruct): import determinism, their chat templates as the models expect
them, grammar-constrained verdicts through the vLLM server and engine, a soft verdict from
Qwen. LoRA GRPO on SmolLM2 runs in tests/integration/test_eval.py."""

from __future__ import annotations

import filecmp
import json
from pathlib import Path

import pytest

from harness.backends import create_backend
from harness.config import RoleConfig, VerifyConfig
from harness.models.gguf import import_gguf
from harness.models.manifest import WEIGHTS_DIR
from harness.models.packaged import packaged_entries, part_path
from harness.prompts import PROMPTS_DIR
from harness.roles import Role
from harness.types import Candidate, ChatMessage, ChatRequest, Criterion, Prompt, Rubric, Sampling
from harness.verifier import Job, verify

from ..conftest import assert_all_verdicts, verdict_requests

pytestmark = pytest.mark.integration
CPU_ENGINE = {"dtype": "float32", "enforce_eager": True, "max_model_len": 2048}
SMOLLM2_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
QWEN = "qwen2.5-coder-0.5b"
QWEN_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."


def tokenizer(name: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(WEIGHTS_DIR / name)


def test_import_of_the_same_file_is_byte_identical(real_models, tmp_path: Path):
    """A second import, into another folder, writes the bytes `make install` wrote."""
    entry = packaged_entries(["smollm2-135m"])[0]
    installed = real_models / entry.name
    source = part_path(entry.package.files[0])
    again = import_gguf(source, entry.name, weights_dir=tmp_path)
    assert not again.reused
    names = sorted(p.name for p in again.path.iterdir())
    assert names == sorted(p.name for p in installed.iterdir())
    assert {"model.safetensors", "tokenizer.json", "chat_template.jinja", "provenance.json",
            "config.json", "generation_config.json"} <= set(names)  # fmt: skip
    # provenance.json of the installed folder adds the manifest's origin line
    files = [name for name in names if name != "provenance.json"]
    _, mismatch, errors = filecmp.cmpfiles(installed, again.path, files, shallow=False)
    assert mismatch == [] and errors == []
    provenance = json.loads((again.path / "provenance.json").read_text())
    installed_provenance = json.loads((installed / "provenance.json").read_text())
    installed_provenance["source"]["origin"] = None
    assert provenance == installed_provenance
    assert provenance["source"]["sha256"] == entry.package.sha256
    assert provenance["gguf"] | {"tensor_types": None} == {
        "architecture": "llama", "file_type": "Q4_1", "tensor_types": None,
        "name": "Smollm2 135M 8k Lc100K Mix1 Ep2", "license": "apache-2.0"}  # fmt: skip
    assert provenance["num_params"] == again.num_params == 134_515_008
    assert import_gguf(source, entry.name, weights_dir=tmp_path).reused, (
        "an up-to-date folder is left alone"
    )


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


def test_qwen_imports_as_a_qwen2_folder_with_its_chatml_template(real_models):
    folder = WEIGHTS_DIR / QWEN
    assert json.loads((folder / "config.json").read_text())["model_type"] == "qwen2"
    provenance = json.loads((folder / "provenance.json").read_text())
    assert provenance["source"]["file"] == "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
    assert provenance["source"]["sha256"] == packaged_entries([QWEN])[0].package.sha256
    assert provenance["gguf"] | {"tensor_types": None} == {
        "architecture": "qwen2", "file_type": "Q4_K_M", "tensor_types": None,
        "name": "Qwen2.5 Coder 0.5B Instruct AWQ", "license": None}  # fmt: skip
    # Qwen counts 494 M; the file's output matrix (136 M) is not tied to the embedding
    assert provenance["num_params"] == 630_167_424
    text = tokenizer(QWEN).apply_chat_template(
        [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True
    )
    assert text == (
        f"<|im_start|>system\n{QWEN_SYSTEM}<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )


def test_a_soft_verdict_from_qwen_lies_on_the_side_of_its_hard_one(real_models, context):
    """`each` mode with logprobs: P(yes) strictly between 0 and 1, above 0.5 exactly when the
    grammar-constrained answer is "yes"."""
    engine = CPU_ENGINE | {"max_model_len": 1024}
    config = RoleConfig(backend="vllm", model=QWEN, engine=engine,
                        sampling=Sampling(temperature=0.0, max_tokens=32))  # fmt: skip
    prompt = Prompt(id="p", prompt="What is the capital of France?")
    candidate = Candidate(id="p:m:0", prompt_id="p", text="The capital of France is Paris.",
                          model="m")  # fmt: skip
    # measured here: P(yes) 0.75 and 0.18, far from 0.5 and from the ends
    rubric = Rubric(prompt_id="p", criteria=(
        Criterion(id="c1", text="The response says the capital of France is Paris.", weight=3),
        Criterion(id="c2", text="The response says the capital is Berlin.", weight=1)))  # fmt: skip
    verifier = create_backend("verifier", config, context)
    try:
        verdicts = verify(Role("verifier", verifier.config, verifier),
                          [Job(prompt, candidate, rubric)],
                          VerifyConfig(mode="each", logprobs=5), PROMPTS_DIR)  # fmt: skip
    finally:
        verifier.close()
    assert len(verdicts) == 2
    for verdict in verdicts:
        assert verdict.met is not None, verdict.unscored_reason
        assert verdict.p_yes is not None and 0 < verdict.p_yes < 1, verdict
        assert (verdict.p_yes > 0.5) == verdict.met, verdict
    assert verdicts[0].p_yes > verdicts[1].p_yes, "the met criterion is the likelier yes"


def real_role(model: str, backend: str) -> RoleConfig:
    return RoleConfig(backend=backend, model=model, engine=CPU_ENGINE,
                      sampling=Sampling(temperature=0.0, max_tokens=256))  # fmt: skip


@pytest.mark.parametrize(
    ("model", "backend", "num_verdicts", "answer_tokens"),
    # SmolLM2 through the in-process engine runs in tests/integration/test_eval.py. Gemma, a base
    # model, does not end its turn: a few tokens show that it writes text; its 262k-token
    # vocabulary makes each constrained step slow here, so it answers fewer requests.
    [("smollm2-135m", "vllm-server", 12, 200), ("gemma3-270m", "vllm", 4, 8)],
)
def test_constrained_verdicts_from_a_real_model(
    real_models, context, model, backend, num_verdicts, answer_tokens
):
    verifier = create_backend("verifier", real_role(model, backend), context)
    try:
        requests = verdict_requests(num_verdicts, temperature=0.0)
        completions = Role("verifier", verifier.config, verifier).generate(requests)
        assert_all_verdicts(completions, num_verdicts, distinct=False)
        question = ChatRequest(
            messages=(ChatMessage(role="user", content="Name three colours."),),
            sampling=Sampling(temperature=0.0, max_tokens=answer_tokens),
            id="colours",
        )
        [answer] = verifier.generate([question])
    finally:
        verifier.close()
    assert answer.error is None and answer.text.strip()
    if model == "smollm2-135m":  # the instruct model answers and ends its turn by itself
        assert answer.finish_reason == "stop", answer.text
        assert any(c in answer.text.lower() for c in ("red", "blue", "green", "yellow"))
