"""TRL's generation server for `train.generation: vllm` with `train.vllm_mode: server`: the
policy's rollouts come from a vLLM server on GPUs of their own, and TRL pushes the trained
weights into it after every step (over NCCL: a GPU feature, hence refused on a CPU).

Two ways to have one:

- `train.vllm_server_gpus: [3]`: the harness starts it before training, with the command
  line `trl vllm-serve` runs (TRL's own builder, `harness.training.generation_server_command`:
  vLLM's server with TRL's weight-transfer and logprob settings), `CUDA_VISIBLE_DEVICES` set to
  those GPUs, on a free loopback port, its log in `RUN_DIR/logs/trl-vllm-serve.log`; it is
  stopped (its whole process group) when training ends, also on an error or Ctrl-C.
- `train.vllm_server_url: http://127.0.0.1:8000`: one the operator started (`trl vllm-serve
  --model PATH ...`); loopback only while offline.

Either way every training process reaches it at one URL (GRPOConfig `vllm_server_base_url`).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from harness.backends.processes import start_server_process, stop_group, wait_healthy
from harness.config import HarnessConfig
from harness.offline import child_environment

LOG_NAME = "trl-vllm-serve.log"
STARTUP_TIMEOUT_S = 900.0


class GenerationServerError(RuntimeError):
    """TRL's generation server did not come up."""


def server_environment(offline: bool, gpus: Sequence[int]) -> dict[str, str]:
    """The server's environment: the parent's (proxies removed offline), its GPUs, and the
    development mode that opens the weight-transfer endpoints TRL uses (as `trl vllm-serve`
    sets it)."""
    environ = child_environment(offline)
    environ["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in gpus)
    environ["VLLM_SERVER_DEV_MODE"] = "1"
    return environ


@contextmanager
def generation_server(config: HarnessConfig) -> Iterator[HarnessConfig]:
    """With `train.vllm_server_gpus`: start TRL's generation server and yield the profile the
    training processes run (`train.vllm_server_url` pointing at it); otherwise yield `config`."""
    settings = config.train
    if settings.vllm_server_gpus is None:
        yield config
        return
    from harness.backends.vllm_server import free_loopback_port
    from harness.models.manifest import resolve_model
    from harness.training import generation_server_command

    port = free_loopback_port()
    policy = resolve_model(config.roles.get("policy").model, offline=config.offline)
    command = generation_server_command(settings, policy, port)
    logs = config.run_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    environ = server_environment(config.offline, settings.vllm_server_gpus)
    process = start_server_process(command, environ, logs / LOG_NAME)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_started(process, url, logs / LOG_NAME)
        train = settings.model_copy(update={"vllm_server_gpus": None, "vllm_server_url": url})
        yield config.model_copy(update={"train": train})
    finally:
        stop_group(process.pid, grace_s=15.0, leader=process)


def _wait_started(process: subprocess.Popen, url: str, log_path: Path) -> None:
    """Wait for the server's /health; GenerationServerError when it exits first or the time
    (`STARTUP_TIMEOUT_S`) runs out."""
    try:
        exit_code = wait_healthy(process, url, STARTUP_TIMEOUT_S)
    except TimeoutError:
        raise GenerationServerError(
            f"the generation server was not healthy after {STARTUP_TIMEOUT_S:.0f} s; see {log_path}"
        ) from None
    if exit_code is not None:
        raise GenerationServerError(
            f"the generation server exited with code {exit_code} while starting; see {log_path}"
        )
