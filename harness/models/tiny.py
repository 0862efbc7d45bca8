"""Build the tiny local chat models that tests and the default `make eval` run on.

A byte-level BPE tokenizer is trained on the project's own corpus (`models/tiny/corpus.txt`)
with Qwen2's normalizer and pre-tokenizer, so that tokenizers,
transformers, vLLM and outlines all split text the same way; then three randomly initialised
Qwen2 models of different sizes are saved next to it. Same seed, same bytes.

    harness models build-tiny
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from harness.models.manifest import WEIGHTS_DIR
from harness.project import PROJECT_ROOT

CORPUS_PATH = PROJECT_ROOT / "models" / "tiny" / "corpus.txt"
VOCAB_SIZE = 1024
SEED = 20260922

# The pre-tokenizer split of Qwen2 (the same regex the real models use).
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
PAD_TOKEN, BOS_TOKEN, EOS_TOKEN = "<|endoftext|>", "<|im_start|>", "<|im_end|>"


@dataclass(frozen=True)
class TinySize:
    """Shape of one tiny model; head_dim 64 suits vLLM's CPU attention kernels."""

    name: str
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int


TINY_SIZES = (
    TinySize(
        "tiny-s", hidden_size=128, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=512
    ),
    TinySize(
        "tiny-m", hidden_size=256, num_layers=3, num_heads=4, num_kv_heads=2, intermediate_size=768
    ),
    TinySize(
        "tiny-l", hidden_size=384, num_layers=6, num_heads=6, num_kv_heads=2, intermediate_size=1536
    ),
)


def training_texts() -> list[str]:
    """The offline text the tokenizer learns from: the project's own corpus, line by line."""
    return CORPUS_PATH.read_text(encoding="utf-8").splitlines(keepends=True)


def train_tokenizer(texts: list[str]):  # -> tokenizers.Tokenizer
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
    from tokenizers.trainers import BpeTrainer

    tokenizer = Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=1,
        special_tokens=[PAD_TOKEN, BOS_TOKEN, EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def save_tokenizer(tokenizer, out_dir: Path) -> int:
    """Write tokenizer.json and its config; returns the vocabulary size."""
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=None,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        model_max_length=4096,
    )
    fast.chat_template = CHATML_TEMPLATE
    fast.save_pretrained(str(out_dir))
    return tokenizer.get_vocab_size()


def build_model(size: TinySize, vocab_size: int, eos_id: int, pad_id: int, out_dir: Path) -> int:
    """Randomly initialise one Qwen2 model and save it; returns its parameter count."""
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=size.hidden_size,
        intermediate_size=size.intermediate_size,
        num_hidden_layers=size.num_layers,
        num_attention_heads=size.num_heads,
        num_key_value_heads=size.num_kv_heads,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        torch_dtype="float32",
    )
    torch.manual_seed(SEED)
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(
        eos_token_id=eos_id, pad_token_id=pad_id, bos_token_id=eos_id
    )
    model.save_pretrained(str(out_dir), safe_serialization=True)
    return sum(p.numel() for p in model.parameters())


def build_tiny_models(weights_dir: Path = WEIGHTS_DIR) -> list[dict]:
    """Build every tiny model into `weights_dir/<name>`; returns one summary row per model."""
    tokenizer = train_tokenizer(training_texts())
    eos_id, pad_id = tokenizer.token_to_id(EOS_TOKEN), tokenizer.token_to_id(PAD_TOKEN)
    rows = []
    weights_dir.mkdir(parents=True, exist_ok=True)
    for size in TINY_SIZES:
        with tempfile.TemporaryDirectory(dir=weights_dir, prefix=".build-") as tmp:
            staging = Path(tmp) / size.name
            vocab_size = save_tokenizer(tokenizer, staging)
            num_params = build_model(size, vocab_size, eos_id, pad_id, staging)
            (staging / "harness-tiny.json").write_text(
                json.dumps({"name": size.name, "seed": SEED, "num_params": num_params}) + "\n"
            )
            final = weights_dir / size.name
            shutil.rmtree(final, ignore_errors=True)
            staging.rename(final)
        rows.append({"name": size.name, "num_params": num_params, "path": str(final)})
    return rows


def tiny_models_ready(weights_dir: Path = WEIGHTS_DIR) -> bool:
    return all((weights_dir / s.name / "harness-tiny.json").is_file() for s in TINY_SIZES)
