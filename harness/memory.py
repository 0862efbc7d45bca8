"""Memory figures of one model, without loading it: its parameter count and shape (from the
safetensors headers and config.json of a local folder, else a table of the manifest's models
not fetched yet), the bytes of its weights in a dtype, and its KV cache per token; and the
memory of the training process (`trainer_row`). `harness.plan` places them on the GPUs.

    shape = model_shape("Qwen/Qwen3-8B")          # 8.19e9 parameters, 36 layers, 8 KV heads
    shape.weight_bytes("bfloat16")                  # 16.4e9
    shape.kv_bytes_per_token("bfloat16")            # 2 x 36 x 8 x 128 x 2 = 147456

The parameter count of a config follows the Qwen2 / Qwen3 / Llama layout: per layer the
attention projections (q and o: hidden x heads x head_dim; k and v: hidden x kv_heads x
head_dim; Qwen2 adds their biases, Qwen3 a norm of head_dim on q and k), the gated MLP (3 x
hidden x intermediate) and two norms; then the embedding, the LM head unless tied, and the
final norm.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from harness.config import HarnessConfig
from harness.models.manifest import local_model_dir

GIB = 2**30
ENGINE_OVERHEAD_GIB = 1.5  # activations of vLLM's profiling pass and its CUDA context
CUDA_GRAPHS_GIB = 1.0  # captured graphs; none with enforce_eager
TRAINER_OVERHEAD_GIB = 1.0  # the trainer's CUDA context and allocator slack
PROMPT_TOKENS = 1024  # prompt length the trainer is planned for, unless trl.max_prompt_length
FUSED_HEAD_TOKENS = 4096  # TRL 1.16's fused LM head projects 4096 tokens per tile
STEP = 0.05  # memory shares are suggested in steps of 5%
DTYPE_BYTES = {"float32": 4, "float": 4, "float16": 2, "half": 2, "bfloat16": 2, "fp8": 1,
               "float8_e4m3fn": 1, "int8": 1}  # fmt: skip
SAFETENSORS_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2,
                     "I8": 1, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}  # fmt: skip


@dataclass(frozen=True)
class ModelShape:
    """What the memory plan needs to know of a model."""

    parameters: int
    layers: int
    hidden: int
    intermediate: int
    vocab: int
    heads: int
    kv_heads: int
    head_dim: int
    dtype: str  # the checkpoint's own dtype (what `dtype: auto` loads)
    source: str  # "safetensors", "config.json" or "known size"
    max_positions: int = 40960  # vLLM's max_model_len when the engine gives none

    def weight_bytes(self, dtype: str | None = None) -> int:
        return self.parameters * dtype_bytes(dtype or self.dtype, self.dtype)

    def kv_bytes_per_token(self, dtype: str | None = None) -> int:
        """Keys and values of every layer for one token."""
        return 2 * self.layers * self.kv_heads * self.head_dim * dtype_bytes(dtype, self.dtype)

    def lora_parameters(self, rank: int) -> int:
        """Trainable LoRA parameters on every linear layer of the blocks (`all-linear`):
        rank x (inputs + outputs) for q, k, v, o, gate, up and down."""
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        attention = (self.hidden + q) * 2 + (self.hidden + kv) * 2
        mlp = 3 * (self.hidden + self.intermediate)
        return rank * self.layers * (attention + mlp)


def dtype_bytes(dtype: str | None, checkpoint_dtype: str = "bfloat16") -> int:
    """Bytes per value of an engine's `dtype` option; `auto` (or none) is the checkpoint's."""
    name = str(dtype or "auto").removeprefix("torch.")
    if name == "auto":
        name = checkpoint_dtype
    return DTYPE_BYTES.get(name, 2)


def _qwen3(parameters: int, layers: int, hidden: int, intermediate: int, heads: int) -> ModelShape:
    # every Qwen3 size: vocabulary 151936, 8 KV heads of 128 dimensions, bfloat16 checkpoints
    return ModelShape(parameters, layers, hidden, intermediate, 151936, heads, 8, 128,
                      "bfloat16", "known size")  # fmt: skip


# The manifest's hub models (models/manifest.yaml), from their config.json, for plans made
# before they are fetched; the counts are what `count_parameters` gives for those configs.
KNOWN_SHAPES = {
    "Qwen/Qwen3-0.6B": _qwen3(596_049_920, 28, 1024, 3072, 16),
    "Qwen/Qwen3-1.7B": _qwen3(1_720_574_976, 28, 2048, 6144, 16),
    "Qwen/Qwen3-1.7B-Base": _qwen3(1_720_574_976, 28, 2048, 6144, 16),
    "Qwen/Qwen3-4B": _qwen3(4_022_468_096, 36, 2560, 9728, 32),
    "Qwen/Qwen3-8B": _qwen3(8_190_735_360, 36, 4096, 12288, 32),
    "Qwen/Qwen3-8B-Base": _qwen3(8_190_735_360, 36, 4096, 12288, 32),
    "Qwen/Qwen3-14B": _qwen3(14_768_307_200, 40, 5120, 17408, 40),
    "Qwen/Qwen3-32B": _qwen3(32_762_123_264, 64, 5120, 25600, 64),
}


def model_shape(name: str) -> ModelShape | None:
    """The shape of a model: its local folder first, then the table; None when unknown."""
    folder = local_model_dir(name)
    if folder is not None:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        counted = safetensors_parameters(folder)
        return shape_from_config(config, counted)
    return KNOWN_SHAPES.get(name)


def shape_from_config(config: dict[str, Any], parameters: int | None = None) -> ModelShape:
    """The shape a Qwen2 / Qwen3 / Llama config.json describes; the parameter count from the
    weights when given, else from the config."""
    text = config.get("text_config", config)  # multimodal configs nest the language model
    hidden, heads = int(text["hidden_size"]), int(text["num_attention_heads"])
    shape = ModelShape(
        parameters=parameters or 0,
        layers=int(text["num_hidden_layers"]),
        hidden=hidden,
        intermediate=int(text.get("intermediate_size", 4 * hidden)),
        vocab=int(text["vocab_size"]),
        heads=heads,
        kv_heads=int(text.get("num_key_value_heads") or heads),
        head_dim=int(text.get("head_dim") or hidden // heads),
        dtype=str(text.get("torch_dtype") or text.get("dtype") or "bfloat16"),
        source="safetensors" if parameters else "config.json",
        max_positions=int(text.get("max_position_embeddings") or 40960),
    )
    if parameters:
        return shape
    counted = count_parameters(shape, config)
    return ModelShape(**{**shape.__dict__, "parameters": counted})


def count_parameters(shape: ModelShape, config: dict[str, Any]) -> int:
    text = config.get("text_config", config)
    model_type = str(text.get("model_type", ""))
    q, kv = shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim
    attention = 2 * shape.hidden * q + 2 * shape.hidden * kv
    if model_type == "qwen2" or text.get("attention_bias"):
        attention += q + 2 * kv
    if model_type.startswith("qwen3"):
        attention += 2 * shape.head_dim  # q_norm and k_norm
    mlp = 3 * shape.hidden * shape.intermediate
    per_layer = attention + mlp + 2 * shape.hidden
    embeddings = shape.vocab * shape.hidden
    head = 0 if text.get("tie_word_embeddings", config.get("tie_word_embeddings")) else embeddings
    return shape.layers * per_layer + embeddings + head + shape.hidden


def safetensors_parameters(folder: Path) -> int | None:
    """The parameter count of the `*.safetensors` files in `folder`, from their headers."""
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for path in files:
        for name, tensor in _safetensors_header(path).items():
            if name != "__metadata__":
                count = 1
                for size in tensor["shape"]:
                    count *= int(size)
                total += count
    return total


def _safetensors_header(path: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file: its first 8 bytes give the header's length."""
    with path.open("rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        return json.loads(handle.read(length))


def gib(value: float) -> float:
    return round(value / GIB, 2)


def step_up(share: float) -> float:
    """The share of a GPU, rounded up to the next step of 5%."""
    return round(math.ceil(round(share / STEP, 6)) * STEP, 2)


# --- the trainer ---------------------------------------------------------------------------


class TrainerRow(BaseModel):
    gpu: int | None  # the first of `gpus`
    dtype: str
    weights_gib: float
    lora_optimizer_gib: float
    activations_gib: float
    logits_gib: float
    generation_gib: float  # colocated vLLM's share, or the KV cache of transformers' generate
    overhead_gib: float = TRAINER_OVERHEAD_GIB
    problem: str | None = None
    fix: str | None = None
    gpus: list[int] = []  # one training process on each (`train.num_processes`), each this row
    zero_stage: int | None = None  # DeepSpeed's, from `train.deepspeed`

    @property
    def total_gib(self) -> float:
        return (self.weights_gib + self.lora_optimizer_gib + self.activations_gib
                + self.logits_gib + self.generation_gib + self.overhead_gib)  # fmt: skip


def trainer_row(
    config: HarnessConfig, gpu_gib: float | None, gpu: int | None, gpus: list[int] | None = None
) -> TrainerRow | None:
    """The memory of one training process on its GPU (each of `gpus` holds one under plain
    data parallelism, a whole policy copy each; ZeRO-3 shards the weights and ZeRO-1/2/3 the
    LoRA gradients and Adam moments over the processes): the policy's weights in the
    training dtype; LoRA weights, gradients and Adam's two moments, all float32 (16 bytes
    per trainable parameter; the reference model is the base with the adapter off, no copy);
    activations of `per_device_train_batch_size` sequences of prompt + completion tokens
    (with gradient checkpointing one hidden state per layer and token, plus one layer
    recomputed; without, every layer's 10 x hidden + 4 x intermediate values); the fused LM
    head's float32 logits tile and its gradient (TRL 1.16 never materialises the whole
    logits); and generation. `gpu_gib`: the memory of its GPU (None: on the CPU)."""
    shape = model_shape(config.roles.policy.model) if config.roles.policy else None
    if shape is None:
        return None
    train, trl = config.train, config.train.trl
    asked = getattr(train, "dtype", None)
    # `auto` trains in bfloat16 on a GPU and float32 on a CPU (harness.training)
    dtype = asked if asked not in (None, "auto") else ("bfloat16" if gpu_gib else "float32")
    size = dtype_bytes(dtype, shape.dtype)
    tokens = train.per_device_train_batch_size * sequence_tokens(config)
    layer_values = 10 * shape.hidden + 4 * shape.intermediate
    if trl.get("gradient_checkpointing"):
        activations = tokens * size * (shape.layers * shape.hidden + layer_values)
    else:
        activations = tokens * size * shape.layers * layer_values
    logits = 2 * min(tokens, FUSED_HEAD_TOKENS) * shape.vocab * 4
    processes, stage = max(len(gpus or []), 1), zero_stage(config)
    weight_split = processes if stage == 3 else 1
    optimizer_split = processes if stage else 1
    row = TrainerRow(
        gpu=gpu,
        dtype=dtype,
        weights_gib=gib(shape.weight_bytes(dtype) / weight_split),
        lora_optimizer_gib=gib(16 * shape.lora_parameters(train.lora_r) / optimizer_split),
        activations_gib=gib(activations),
        logits_gib=gib(logits),
        generation_gib=gib(_generation_bytes(config, shape, dtype)),
        gpus=gpus or ([] if gpu is None else [gpu]),
        zero_stage=stage,
    )
    if gpu_gib and train.generation == "vllm" and train.vllm_mode == "colocate":
        _check_colocated(config, row, shape, gpu_gib)
    return row


def zero_stage(config: HarnessConfig) -> int | None:
    """The ZeRO stage of `train.deepspeed` (None: no DeepSpeed, or a file not read)."""
    if not config.train.deepspeed:
        return None
    path = config.project_path(config.train.deepspeed)
    try:
        stage = json.loads(path.read_text(encoding="utf-8"))["zero_optimization"]["stage"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return int(stage) if str(stage).isdigit() else None


def sequence_tokens(config: HarnessConfig) -> int:
    prompt = int(config.train.trl.get("max_prompt_length") or PROMPT_TOKENS)
    return prompt + config.train.max_completion_length


def _generation_bytes(config: HarnessConfig, shape: ModelShape, dtype: str) -> float:
    train = config.train
    if train.generation == "vllm":
        return 0.0  # the colocated engine's share, added per GPU, or the generation server
    completions = train.per_device_train_batch_size * train.gradient_accumulation_steps
    return completions * sequence_tokens(config) * shape.kv_bytes_per_token(dtype)


def _check_colocated(
    config: HarnessConfig, row: TrainerRow, shape: ModelShape, gpu_gib: float
) -> None:
    """TRL's colocated vLLM holds a bfloat16 copy of the policy and the KV cache of one
    sequence inside `train.vllm_memory_share` of the GPU."""
    row.generation_gib = round(config.train.vllm_memory_share * gpu_gib, 2)
    length = int(config.train.trl.get("vllm_max_model_length") or sequence_tokens(config))
    need = (gib(shape.weight_bytes("bfloat16") + shape.kv_bytes_per_token("bfloat16") * length)
            + ENGINE_OVERHEAD_GIB + CUDA_GRAPHS_GIB)  # fmt: skip
    if need > row.generation_gib:
        share = step_up(need / gpu_gib)
        row.problem = (f"the colocated vLLM needs {need:.1f} GiB, train.vllm_memory_share gives "
                       f"{row.generation_gib:.1f} GiB")  # fmt: skip
        row.fix = f"raise train.vllm_memory_share to {share:.2f}"
