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

import contextlib
import subprocess
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

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
    from harness.backends.processes import stop_group
    from harness.backends.vllm_server import free_loopback_port
    from harness.models.manifest import resolve_model
    from harness.training import generation_server_command

    port = free_loopback_port()
    policy = resolve_model(config.roles.get("policy").model, offline=config.offline)
    command = generation_server_command(settings, policy, port)
    logs = config.run_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    environ = server_environment(config.offline, settings.vllm_server_gpus)
    process = start_logged(command, environ, logs / LOG_NAME)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(process, url, logs / LOG_NAME, STARTUP_TIMEOUT_S)
        train = settings.model_copy(update={"vllm_server_gpus": None, "vllm_server_url": url})
        yield config.model_copy(update={"train": train})
    finally:
        stop_group(process.pid, grace_s=15.0, leader=process)


def start_logged(command: Sequence[str], environ: dict[str, str], log_path: Path):
    """Start `command` in its own process group, its output appended to `log_path`."""
    with open(log_path, "ab") as log:
        log.write(f"$ {' '.join(command)}\n".encode())
        log.flush()
        return subprocess.Popen(list(command), stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=environ,
                                start_new_session=True)  # fmt: skip


def wait_healthy(process: subprocess.Popen, url: str, log_path: Path, timeout_s: float) -> None:
    """Wait until `url`/health answers; raise GenerationServerError when the server exits
    first or the time runs out."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise GenerationServerError(
                f"the generation server exited with code {process.returncode} while starting; "
                f"see {log_path}"
            )
        with contextlib.suppress(OSError):
            if opener.open(f"{url}/health", timeout=2).status == 200:
                return
        time.sleep(0.5)
    raise GenerationServerError(
        f"the generation server was not healthy after {timeout_s:.0f} s; see {log_path}"
    )
