"""The tiny models are deterministic and their tokenizer survives a reload."""

import hashlib

import pytest

from harness.models.manifest import ModelNotFoundError, resolve_model
from harness.models.tiny import TINY_SIZES, build_tiny_models


def digests(root):
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_build_twice_gives_byte_identical_files(tmp_path):
    first, second = tmp_path / "a" / "weights", tmp_path / "b" / "weights"
    rows = build_tiny_models(first)
    build_tiny_models(second)
    assert digests(first) == digests(second)
    assert len(digests(first)) >= 3 * 6
    sizes = [row["num_params"] for row in rows]
    assert sizes == sorted(sizes) and sizes[0] < 1_000_000 and sizes[-1] > 10_000_000


def test_tokenizer_agrees_after_reload_and_has_a_chat_template(tiny_models):
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    folder = tiny_models / TINY_SIZES[0].name
    text = 'Ünïcode  naïve 3.14 {"c1": "yes"}\n\tThe verifier\'s answer: NO!'
    raw = Tokenizer.from_file(str(folder / "tokenizer.json"))
    loaded = AutoTokenizer.from_pretrained(str(folder))
    assert loaded(text).input_ids == raw.encode(text).ids
    assert loaded.decode(raw.encode(text).ids) == text
    chat = loaded.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert chat == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_names_resolve_to_local_folders_first(tiny_models):
    assert resolve_model("tiny-m", offline=True) == str((tiny_models / "tiny-m").resolve())
    with pytest.raises(ModelNotFoundError, match="harness models fetch Qwen/Qwen3-4B --online"):
        resolve_model("Qwen/Qwen3-4B", offline=True)
    assert resolve_model("Qwen/Qwen3-4B", offline=False) == "Qwen/Qwen3-4B"
