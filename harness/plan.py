"""The memory plan of a run, before anything starts: for every stage switched on, the groups
of engines that are up together (`Stage.engine_groups`, the list the engine lifecycle follows),
each engine's GPUs and reservation, what must fit inside it, the trainer of the train stage,
and the sum per GPU.

vLLM's rules, which the plan follows: an engine places its tensor x pipeline parallel ranks
(x its data-parallel replicas on this machine) on GPUs 0..n-1 of the devices its process sees;
each GPU holds weights / (tensor x pipeline) and its share of the KV cache; vLLM refuses to
start unless the free memory of each is at least `gpu_memory_utilization` x total; the
weights, activations, CUDA graphs and the KV cache of at least one `max_model_len` sequence
must fit inside that reservation. An engine spread over several machines (Ray, vLLM's data
parallelism across nodes, `nnodes`) is planned on this machine's GPUs only: the GPUs of the
other nodes are not planned here (`EngineRow.elsewhere`), each of them holding the same share.

    harness plan -c configs/medical.yaml --gpus 2x80GB
"""

from __future__ import annotations

import math
import os
import re
from typing import NamedTuple

from pydantic import BaseModel

from harness.backends import capabilities_of
from harness.config import ConfigError, HarnessConfig, RoleConfig
from harness.memory import (
    CUDA_GRAPHS_GIB,
    ENGINE_OVERHEAD_GIB,
    STEP,
    ModelShape,
    TrainerRow,
    dtype_bytes,
    gib,
    model_shape,
    step_up,
    trainer_row,
)

GPU_BACKENDS = ("vllm", "vllm-server")
DEFAULT_UTILIZATION = 0.9  # vLLM's gpu_memory_utilization
HEADROOM_GIB = 1.0  # per GPU: the driver and the CUDA contexts of the processes


class Gpu(BaseModel):
    index: int
    name: str
    total_gib: float
    free_gib: float | None = None


class EngineRow(BaseModel):
    label: str
    setting: str  # the profile key of its engine, e.g. roles.proposer
    model: str
    backend: str
    place: str  # "gpu", "cpu" (host memory) or "none" (a remote or scripted backend)
    gpus: list[int] = []  # on this machine
    elsewhere: int = 0  # GPUs of other nodes it spans (Ray, data parallel): not planned here
    tensor_parallel: int = 1
    reservation_gib: float = 0.0  # per GPU
    weights_gib: float = 0.0  # per GPU
    overhead_gib: float = 0.0
    kv_gib: float = 0.0  # per GPU, one sequence of max_model_len
    max_model_len: int = 0
    size_from: str = ""
    problem: str | None = None
    fix: str | None = None

    @property
    def need_gib(self) -> float:
        return self.weights_gib + self.overhead_gib + self.kv_gib


class GroupPlan(BaseModel):
    stage: str
    group: int
    engines: list[EngineRow]
    trainer: TrainerRow | None = None
    per_gpu_gib: dict[int, float] = {}
    problems: list[str] = []

    @property
    def ok(self) -> bool:
        return not self.problems


class MemoryPlan(BaseModel):
    gpus: list[Gpu]
    gpus_from: str  # "nvidia-smi", "--gpus 2x80GB" or "none found"
    stop_idle_engines: bool
    groups: list[GroupPlan]
    skipped: dict[str, str] = {}  # stages the profile lacks roles for, and why

    @property
    def ok(self) -> bool:
        return all(g.ok for g in self.groups)

    def first_problem(self) -> str | None:
        return next((p for g in self.groups for p in g.problems), None)


# --- the GPUs ------------------------------------------------------------------------------


def parse_gpus(text: str) -> list[Gpu]:
    """`2x80GB` -> two GPUs of 80 GiB (GB here is GiB: nvidia-smi's MiB / 1024)."""
    found = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+(?:\.\d+)?)\s*(GB|GiB|G)?\s*", text)
    if not found or int(found[1]) < 1:
        raise ConfigError(f"--gpus {text!r}: expected COUNTxSIZE, e.g. 2x80GB or 1x24GB")
    size = float(found[2])
    return [Gpu(index=i, name=f"{size:g} GB", total_gib=size) for i in range(int(found[1]))]


def read_gpus() -> list[Gpu]:
    """The GPUs this process may use, from nvidia-smi (empty without one); with
    CUDA_VISIBLE_DEVICES set to indices, only those, renumbered from 0 as CUDA does."""
    from harness.machine import nvidia_smi

    rows = nvidia_smi("--query-gpu=index,name,memory.total,memory.free") or []
    gpus = {}
    for row in rows:
        parts = [p.strip() for p in row.split(",")]
        if len(parts) == 4 and parts[0].isdigit():
            gpus[int(parts[0])] = (parts[1], _mib(parts[2]), _mib(parts[3]))
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    order = sorted(gpus)
    if visible is not None and all(v.strip().isdigit() for v in visible.split(",") if v.strip()):
        order = [int(v) for v in visible.split(",") if v.strip() and int(v) in gpus]
    return [Gpu(index=i, name=gpus[n][0], total_gib=gpus[n][1], free_gib=gpus[n][2])
            for i, n in enumerate(order)]  # fmt: skip


def _mib(value: str) -> float:
    try:
        return round(float(value) / 1024, 2)
    except ValueError:
        return 0.0


# --- the plan ------------------------------------------------------------------------------


def plan_run(config: HarnessConfig, gpus: list[Gpu], gpus_from: str,
             stages: list[str] | None = None) -> MemoryPlan:  # fmt: skip
    """The plan of every stage switched on (or of `stages`, by name), group by group; with
    `eval.stop_idle_engines: false` every engine started so far stays up."""
    from harness.stages import STAGES

    keep_all = not config.eval.stop_idle_engines
    chosen = [s for s in STAGES if (s.name in stages if stages else s.switched_on(config))]
    groups, started, skipped = [], {}, {}
    for stage in chosen:
        try:
            stage_groups = stage.engine_groups(config) or ([[]] if stage.name == "train" else [])
        except ConfigError as exc:  # a profile for some stages only (train-gpu: no proposer)
            skipped[stage.name] = str(exc)
            continue
        for number, group in enumerate(stage_groups, 1):
            for role in group:
                started.setdefault(_engine_key(role), role)
            up = list(started.values()) if keep_all else _distinct(group)
            groups.append(_plan_group(config, stage.name, number, up, gpus))
    return MemoryPlan(gpus=gpus, gpus_from=gpus_from, stop_idle_engines=not keep_all,
                      groups=groups, skipped=skipped)  # fmt: skip


def _engine_key(role: RoleConfig) -> str:
    from harness.roles import RolePool

    return RolePool.key(role)


def _distinct(roles: list[RoleConfig]) -> list[RoleConfig]:
    return list({_engine_key(r): r for r in roles}.values())


def _plan_group(config: HarnessConfig, stage: str, number: int, roles: list[RoleConfig],
                gpus: list[Gpu]) -> GroupPlan:  # fmt: skip
    engines = [engine_row(config, role, gpus) for role in roles]
    trainer = None
    if stage == "train":
        verifier = next((e for e in engines if e.setting == _train_verifier_setting(config)), None)
        in_trainer = verifier is not None and not _served(config)
        if (server := generation_server_row(config, gpus)) is not None:
            engines.append(server)
        trainer_gpus = trainer_gpu_list(config, None if in_trainer else verifier, gpus)
        gpu = trainer_gpus[0] if trainer_gpus else None
        total = gpus[gpu].total_gib if gpu is not None else None
        trainer = trainer_row(config, total, gpu, trainer_gpus)
        if in_trainer and gpu is not None:
            _beside_trainer(verifier, gpu)
    group = GroupPlan(stage=stage, group=number, engines=engines, trainer=trainer)
    _sum_per_gpu(group, gpus)
    _find_problems(config, group, gpus)
    return group


def _served(config: HarnessConfig) -> bool:
    """Whether the train verifier is a server: it then stays in the run's process, on its own
    GPUs, and the training process reaches it over loopback."""
    return capabilities_of(config.verifier(config.train.verifier)).serves_endpoint


def _beside_trainer(verifier: EngineRow, gpu: int) -> None:
    """An in-process verifier engine runs inside the training process, which sees only the
    trainer's GPU."""
    if verifier.place != "gpu":
        return
    if len(verifier.gpus) > 1:
        verifier.problem = (f"runs inside the training process, which sees one GPU, but needs "
                            f"{len(verifier.gpus)}: serve it (backend: vllm-server)")  # fmt: skip
    verifier.gpus = [gpu]


def _train_verifier_setting(config: HarnessConfig) -> str | None:
    if not config.roles.verifier:
        return None
    return role_setting(config, config.verifier(config.train.verifier))


def role_setting(config: HarnessConfig, role: RoleConfig) -> str:
    """The profile key of a role's engine: `roles.proposer`, `roles.verifier.2`,
    `rollouts.models.0` (the form `--set` takes)."""
    places = [(f"roles.{n}", getattr(config.roles, n)) for n in ("policy", "proposer", "judge")]
    places += [(f"roles.verifier.{i}", v) for i, v in enumerate(config.roles.verifier)]
    places += [(f"rollouts.models.{i}", m) for i, m in enumerate(config.rollouts.models)]
    key = _engine_key(role)
    for setting, candidate in places:
        if candidate is not None and _engine_key(candidate) == key:
            return setting
    for setting, candidate in places:  # the policy with LoRA switched on for judging
        if candidate is not None and (candidate.backend, candidate.model) == (
            role.backend,
            role.model,
        ):
            return setting
    return "roles"


def engine_row(config: HarnessConfig, role: RoleConfig, gpus: list[Gpu]) -> EngineRow:
    """One engine: where it runs, what it reserves per GPU and what must fit inside."""
    engine, shape = role.engine, model_shape(role.model)
    row = EngineRow(label=role.label, setting=role_setting(config, role), model=role.model,
                    backend=role.backend, place=_place(role, gpus),
                    size_from=shape.source if shape else "unknown size")  # fmt: skip
    if row.place == "none" or shape is None:
        return row
    span = engine_span(engine, len(gpus))
    ranks, row.tensor_parallel = span.replica, span.tensor
    kv_split = min(span.tensor, shape.kv_heads) * (span.replica // span.tensor)
    row.max_model_len = int(engine.get("max_model_len") or shape.max_positions)
    dtype = engine.get("dtype")
    row.weights_gib = gib((shape.weight_bytes(dtype) + _lora_bytes(engine, shape, dtype)) / ranks)
    kv_dtype = engine.get("kv_cache_dtype") if engine.get("kv_cache_dtype") != "auto" else None
    row.kv_gib = gib(shape.kv_bytes_per_token(kv_dtype or dtype) * row.max_model_len / kv_split)
    if row.place == "cpu":
        return row
    eager = bool(engine.get("enforce_eager")) or role.backend == "transformers"
    row.overhead_gib = ENGINE_OVERHEAD_GIB + (0 if eager else CUDA_GRAPHS_GIB)
    row.gpus, row.elsewhere = list(range(span.here)), span.total - span.here
    if span.here > len(gpus):
        row.problem = f"needs {span.here} GPUs ({span.layout}), {len(gpus)} here"
        return row
    if role.backend == "transformers":
        row.reservation_gib = row.need_gib  # no reservation: what it allocates
        return row
    utilization = float(engine.get("gpu_memory_utilization", DEFAULT_UTILIZATION))
    row.reservation_gib = round(utilization * gpus[0].total_gib, 2)
    if row.need_gib > row.reservation_gib:
        row.problem = (f"{row.need_gib:.1f} GiB (weights {row.weights_gib:.1f} + overhead "
                       f"{row.overhead_gib:.1f} + KV {row.kv_gib:.1f} for {row.max_model_len} "
                       f"tokens) do not fit its {row.reservation_gib:.1f} GiB")  # fmt: skip
    return row


class EngineSpan(NamedTuple):
    tensor: int  # tensor-parallel ranks
    replica: int  # GPUs of one copy of the model: tensor x pipeline parallel
    total: int  # every GPU of the engine: x data parallel
    here: int  # those on this machine
    layout: str  # "tensor 2 x pipeline 2 x data 2"


def engine_span(engine: dict, local_gpus: int) -> EngineSpan:
    """The GPUs an engine spans, in all and on this machine. With several nodes: `nnodes`
    splits the ranks evenly; `data_parallel_size_local` replicas are on this machine; Ray
    (`distributed_executor_backend` or `data_parallel_backend: ray`) fills this machine's GPUs
    and places the rest on the cluster's other nodes."""
    tensor = int(engine.get("tensor_parallel_size") or 1)
    replica = tensor * int(engine.get("pipeline_parallel_size") or 1)
    data = int(engine.get("data_parallel_size") or 1)
    total = replica * data
    nodes = int(engine.get("nnodes") or 1)
    if nodes > 1:
        here = total // nodes
    elif engine.get("data_parallel_size_local") is not None:
        here = replica * int(engine["data_parallel_size_local"])
    elif "ray" in (engine.get("distributed_executor_backend"), engine.get("data_parallel_backend")):
        here = min(total, local_gpus)
    else:
        here = total
    layout = f"tensor {tensor} x pipeline {replica // tensor} x data {data}"
    return EngineSpan(tensor, replica, total, min(here, total), layout)


def _place(role: RoleConfig, gpus: list[Gpu]) -> str:
    if role.backend not in (*GPU_BACKENDS, "transformers"):
        return "none"
    device = str(role.engine.get("device", "cuda" if gpus else "cpu"))
    return "gpu" if gpus and device.startswith("cuda") else "cpu"


def _lora_bytes(engine: dict, shape: ModelShape, dtype: str | None) -> int:
    """vLLM's LoRA slots: `max_loras` adapters of `max_lora_rank` on every linear layer."""
    if not engine.get("enable_lora"):
        return 0
    slots = int(engine.get("max_loras", 1))
    return slots * shape.lora_parameters(int(engine.get("max_lora_rank", 16))) * dtype_bytes(dtype)


# --- the trainer ---------------------------------------------------------------------------


def train_gpu(config: HarnessConfig, gpus: list[Gpu]) -> int | None:
    """The GPU the plan gives the training process (for its CUDA_VISIBLE_DEVICES)."""
    verifier = None
    if config.roles.verifier:
        verifier = engine_row(config, config.verifier(config.train.verifier), gpus)
    return trainer_gpu(verifier, len(gpus))


def trainer_gpu_list(config: HarnessConfig, verifier: EngineRow | None,
                     gpus: list[Gpu]) -> list[int]:  # fmt: skip
    """The GPUs of the training processes: `train.gpus`; else one process on `trainer_gpu`;
    else the last `train.num_processes` GPUs the train verifier and the generation server
    leave (all GPUs, shared, where too few are free)."""
    train, count = config.train, len(gpus)
    if train.gpus:
        return [g for g in train.gpus if g < count]
    if count == 0:
        return []
    if train.processes == 1 and not train.vllm_server_gpus:
        return [trainer_gpu(verifier, count) or 0]
    used = set(verifier.gpus) if verifier is not None and verifier.place == "gpu" else set()
    used |= set(train.vllm_server_gpus or [])
    free = [i for i in range(count) if i not in used]
    pool = free if len(free) >= train.processes else list(range(count))
    return pool[-train.processes :]


def generation_server_row(config: HarnessConfig, gpus: list[Gpu]) -> EngineRow | None:
    """TRL's generation server (`train.vllm_server_gpus`): the policy in bfloat16 across its
    GPUs (tensor parallel) inside TRL's default share of each, with one sequence's KV cache."""
    train = config.train
    shape = model_shape(config.roles.policy.model) if config.roles.policy else None
    if not train.vllm_server_gpus or shape is None or not gpus:
        return None
    ranks = len(train.vllm_server_gpus)
    row = EngineRow(label="generation server", setting="train.vllm_server_gpus",
                    model=config.roles.policy.model, backend="trl-vllm-serve", place="gpu",
                    gpus=list(train.vllm_server_gpus), size_from=shape.source)  # fmt: skip
    row.max_model_len = int(train.vllm_max_model_len or shape.max_positions)
    row.weights_gib = gib(shape.weight_bytes("bfloat16") / ranks)
    kv_split = min(ranks, shape.kv_heads)
    row.kv_gib = gib(shape.kv_bytes_per_token("bfloat16") * row.max_model_len / kv_split)
    row.overhead_gib = ENGINE_OVERHEAD_GIB + CUDA_GRAPHS_GIB
    row.reservation_gib = round(DEFAULT_UTILIZATION * gpus[0].total_gib, 2)
    if max(train.vllm_server_gpus) >= len(gpus):
        row.problem = f"train.vllm_server_gpus names GPU {max(train.vllm_server_gpus)}"
        row.fix = f"this machine has GPUs 0-{len(gpus) - 1}"
    elif row.need_gib > row.reservation_gib:
        row.problem = (f"{row.need_gib:.1f} GiB do not fit TRL's {row.reservation_gib:.1f} GiB "
                       "share")  # fmt: skip
        row.fix = "add GPUs to train.vllm_server_gpus or set train.vllm_max_model_len"
    return row


def trainer_gpu(verifier: EngineRow | None, count: int) -> int | None:
    """The GPU the trainer process gets: the last one the train verifier's engine leaves
    free when there are several, else GPU 0 (shared); None without a GPU."""
    if count == 0:
        return None
    used = set(verifier.gpus) if verifier is not None and verifier.place == "gpu" else set()
    free = [i for i in range(count) if i not in used]
    return free[-1] if free else 0


# --- sums and fixes ------------------------------------------------------------------------


def _sum_per_gpu(group: GroupPlan, gpus: list[Gpu]) -> None:
    sums = {g.index: 0.0 for g in gpus}
    for engine in group.engines:
        if engine.place == "gpu":
            for index in engine.gpus:
                if index in sums:
                    sums[index] += engine.reservation_gib
    if group.trainer is not None:
        for index in group.trainer.gpus:  # one training process on each
            if index in sums:
                sums[index] += group.trainer.total_gib
    group.per_gpu_gib = {i: round(s, 2) for i, s in sums.items()}


def _find_problems(config: HarnessConfig, group: GroupPlan, gpus: list[Gpu]) -> None:
    where = f"stage {group.stage}" + (f" (group {group.group})" if group.group > 1 else "")
    for engine in group.engines:
        if engine.problem:
            engine.fix = engine.fix or _engine_fix(engine, group, gpus)
            group.problems.append(f"{where}, {engine.label} on GPU {_gpu_list(engine)}: "
                                  f"{engine.problem}; {engine.fix}")  # fmt: skip
    trainer = group.trainer
    if trainer is not None and trainer.problem:
        group.problems.append(f"{where}, trainer on GPU {trainer.gpu}: {trainer.problem}; "
                              f"{trainer.fix}")  # fmt: skip
    for gpu in gpus:
        usable = gpu.total_gib - HEADROOM_GIB
        used = group.per_gpu_gib.get(gpu.index, 0.0)
        if used > usable:
            fix = _sum_fix(config, group, gpu, used - usable)
            parts = " + ".join(_shares_on(group, gpu.index))
            group.problems.append(
                f"{where}, GPU {gpu.index}: {used:.1f} GiB ({parts}) > {usable:.1f} GiB usable "
                f"of {gpu.total_gib:g} GiB; {fix}"
            )


def _gpu_list(engine: EngineRow) -> str:
    return ",".join(str(i) for i in engine.gpus) or "-"


def _shares_on(group: GroupPlan, index: int) -> list[str]:
    parts = [f"{e.label} {e.reservation_gib:.1f}" for e in group.engines
             if e.place == "gpu" and index in e.gpus]  # fmt: skip
    if group.trainer is not None and index in group.trainer.gpus:
        parts.append(f"trainer {group.trainer.total_gib:.1f}")
    return parts


def _engine_fix(engine: EngineRow, group: GroupPlan, gpus: list[Gpu]) -> str:
    """A larger share when the GPU has room for it, else more tensor-parallel GPUs."""
    if not gpus or len(engine.gpus) > len(gpus):
        return ("use a smaller model, a machine with more GPUs, or several machines (Ray, or "
                "data_parallel_size_local: README, Beyond one machine)")  # fmt: skip
    total = gpus[0].total_gib
    others = sum(e.reservation_gib for e in group.engines
                 if e is not engine and e.place == "gpu" and 0 in e.gpus)  # fmt: skip
    share = step_up(engine.need_gib / total)
    if share * total + others <= total - HEADROOM_GIB:
        return f"raise {engine.setting}.engine.gpu_memory_utilization to {share:.2f}"
    tp = engine.tensor_parallel
    for wider in (2, 4, 8):
        if tp < wider <= len(gpus):
            fixed = engine.weights_gib * tp / wider + engine.kv_gib * tp / wider
            if fixed + engine.overhead_gib <= engine.reservation_gib:
                return f"set {engine.setting}.engine.tensor_parallel_size: {wider}"
    return "use a smaller model or a smaller max_model_len"


def _sum_fix(config: HarnessConfig, group: GroupPlan, gpu: Gpu, excess: float) -> str:
    """Lower the largest share that can give up `excess`; else a smaller training batch; else
    stop idle engines."""
    engines = [e for e in group.engines if e.place == "gpu" and gpu.index in e.gpus
               and e.backend in GPU_BACKENDS]  # fmt: skip
    for engine in sorted(engines, key=lambda e: -e.reservation_gib):
        share = _step_down((engine.reservation_gib - excess) / gpu.total_gib)
        if share * gpu.total_gib >= engine.need_gib and share > 0:
            return f"lower {engine.setting}.engine.gpu_memory_utilization to {share:.2f}"
    trainer = group.trainer
    if trainer is not None and gpu.index in trainer.gpus and trainer.activations_gib > excess:
        batch = config.train.per_device_train_batch_size
        smaller = max(1, math.floor(batch * (1 - excess / trainer.activations_gib)))
        return (f"lower train.per_device_train_batch_size to {smaller} and raise "
                "train.gradient_accumulation_steps to keep the completions per step")  # fmt: skip
    if not config.eval.stop_idle_engines:
        return "set eval.stop_idle_engines: true"
    return "use smaller models, or a GPU with more memory"


def _step_down(share: float) -> float:
    return round(math.floor(round(share / STEP, 6)) * STEP, 2)


# --- what the commands show and refuse -----------------------------------------------------


class PlanRefused(ConfigError):
    """A run whose memory plan cannot fit the GPUs of this machine (exit status 2)."""


def refuse_impossible_plan(config: HarnessConfig, stages: list[str] | None = None) -> None:
    """On a machine with a GPU, raise PlanRefused with the plan's first problem (the stage,
    the GPU, the sum and a fix). Reads nvidia-smi only: no torch or vLLM import. First, on
    any machine, a training launch that cannot work (ConfigError, harness.train_process)."""
    if (stages is None and config.eval.train) or (stages is not None and "train" in stages):
        from harness.train_process import launch_problem

        if problem := launch_problem(config):
            raise ConfigError(problem)
    gpus = read_gpus()
    if not gpus:
        return
    problem = plan_run(config, gpus, "nvidia-smi", stages).first_problem()
    if problem:
        raise PlanRefused(f"memory plan: {problem} (see `harness plan`)")


def plan_record(plan: MemoryPlan) -> dict:
    """The plan as JSON-ready data, with each group's and the plan's verdict."""
    record = plan.model_dump(mode="json")
    record["ok"] = plan.ok
    for data, group in zip(record["groups"], plan.groups):
        data["ok"] = group.ok
    return record
