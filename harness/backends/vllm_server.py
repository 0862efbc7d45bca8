"""A vLLM OpenAI-compatible server that the harness starts itself on 127.0.0.1.

The server runs as a child process on a free loopback port, in a process group of its own
with its engine and worker processes, and logs into the run folder
(`logs/<role>-vllm-server.log`; requests are never logged, only start-up and stats). It is
stopped when the role closes: on success, on error, on Ctrl-C or SIGTERM, and (through the
kernel's parent-death signal) when the harness itself dies. Stopping ends the whole group,
also when the server's main process has died and its engine lives on, and removes the shared
memory a killed engine leaves behind. Requests go through the OpenAI client. A server that
exits mid-run raises `BackendGone` (the stage stops unfinished; the rerun starts a new
server). Offline, the server's environment holds no proxy setting.
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.backends import shm
from harness.backends.base import (
    Advance,
    BackendError,
    BackendGone,
    Capabilities,
    RunContext,
    template_source,
)
from harness.backends.openai_api import OpenAIBackend
from harness.backends.processes import (
    BIND_VARIABLE,
    start_server_process,
    stop_group,
    thread_binding,
    wait_healthy,
)
from harness.backends.vllm_engine import engine_defaults, structured_outputs_config
from harness.config import RoleConfig
from harness.models.manifest import resolve_model
from harness.offline import child_environment
from harness.types import ChatRequest, Completion

SERVER_MODULE = "vllm.entrypoints.openai.api_server"
EXIT_GRACE_S = 5.0  # how long a server whose port refuses may take to show its exit


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def engine_flags(engine: dict[str, Any]) -> list[str]:
    """`{tensor_parallel_size: 2, enforce_eager: true, enable_prefix_caching: false}` ->
    `--tensor-parallel-size 2 --enforce-eager --no-enable-prefix-caching`."""
    flags: list[str] = []
    for key, value in engine.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            flags.append(flag)
        elif value is False:
            flags.append("--no-" + flag[2:])
        elif value is None:
            continue
        elif isinstance(value, (dict, list)):
            flags += [flag, json.dumps(value)]
        else:
            flags += [flag, str(value)]
    return flags


def server_command(model_path: str, config: RoleConfig, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        SERVER_MODULE,
        "--model",
        model_path,
        "--served-model-name",
        config.label,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--seed",
        "0",
        "--structured-outputs-config",
        json.dumps(structured_outputs_config(config.grammar)),
        "--no-enable-log-requests",
        "--disable-uvicorn-access-log",
        *engine_flags({**engine_defaults(), **config.engine}),
    ]


def model_chat_template(model_path: str, engine: dict[str, Any]) -> str | None:
    """The chat template the server renders: the `chat_template` engine option (a file or the
    template itself), else the model folder's (chat_template.jinja, tokenizer_config.json)."""
    given = engine.get("chat_template")
    if isinstance(given, str):
        path = Path(given)
        return path.read_text(errors="replace") if path.is_file() else given
    folder = Path(model_path)
    with contextlib.suppress(OSError):
        return (folder / "chat_template.jinja").read_text(errors="replace")
    with contextlib.suppress(OSError, ValueError):
        tokenizer = json.loads((folder / "tokenizer_config.json").read_text())
        return template_source(tokenizer.get("chat_template"))
    return None


class VLLMServerBackend(OpenAIBackend):
    name = "vllm-server"
    capabilities = Capabilities(serves_endpoint=True, engine="vllm")

    def __init__(self, role: str, config: RoleConfig, context: RunContext) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        self._shm_ledger: Path | None = None
        model_path = resolve_model(config.model, offline=context.offline)
        port = free_loopback_port()
        context.logs_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = context.logs_dir / f"{role}-vllm-server.log"
        shm.clean()  # what engines of killed runs left in shared memory
        started = time.perf_counter()
        binding = thread_binding()
        try:
            self._start(server_command(model_path, config, port), context, binding)
            self._wait_healthy(f"http://127.0.0.1:{port}", config.startup_timeout_s, role)
            self._shm_ledger = shm.record(self.process_ids())
        except BaseException:
            self._stop()
            raise
        self.startup_s = time.perf_counter() - started
        self._chat_template = model_chat_template(model_path, config.engine)
        try:
            super().__init__(
                role,
                config.model_copy(update={"served_model_name": config.label}),
                context,
                base_url=f"http://127.0.0.1:{port}/v1",
            )
        except BaseException:
            self._stop()
            raise

    def _start(self, command: list[str], context: RunContext, binding: dict[str, str]) -> None:
        shown = "".join(f"{k}={v} " for k, v in binding.items() if k == BIND_VARIABLE)
        environ = child_environment(context.offline, {**context.env, **binding})
        self.process = start_server_process(command, environ, self.log_path, shown)

    def _wait_healthy(self, root: str, timeout_s: float, role: str) -> None:
        assert self.process is not None
        try:
            exit_code = wait_healthy(self.process, root, timeout_s)
        except TimeoutError:
            raise BackendError(
                f"role {role!r}: the vLLM server was not healthy after {timeout_s:.0f} s "
                f"(startup_timeout_s); see {self.log_path}"
            ) from None
        if exit_code is not None:
            raise BackendError(
                f"role {role!r}: the vLLM server exited with code {exit_code} while starting; "
                f"last lines of {self.log_path}:\n{_tail(self.log_path)}"
            )

    def identity(self) -> dict[str, Any]:
        """Without the port, which is new on every start: a rerun's answers come from the
        cache (its server answers as the last one did: same model, engine and seed)."""
        return {k: v for k, v in super().identity().items() if k != "base_url"}

    def chat_template(self) -> str | None:
        return self._chat_template

    def gone_reason(self) -> str | None:
        process = self.process
        if process is None:
            return "the vLLM server was stopped"
        unreachable = super().gone_reason() if process.poll() is None else None
        if unreachable is not None:  # a killed server's port closes before its exit shows
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=EXIT_GRACE_S)
        if process.poll() is not None:
            return (f"the vLLM server (pid {process.pid}) {_exit_status(process.returncode)} "
                    f"mid-run; its log: {self.log_path}")  # fmt: skip
        return unreachable

    def _generate(
        self, requests: Sequence[ChatRequest], advance: Advance | None
    ) -> list[Completion]:
        if self.process is not None and self.process.poll() is not None:
            raise BackendGone(f"role {self.role!r}: {self.gone_reason()}; rerun to resume")
        return super()._generate(requests, advance)

    def _stop(self) -> None:
        """Stop the server's whole process group, whatever state it is in: its main process
        may have died already while its engine and workers live on."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            self._shm_ledger = shm.record(self.process_ids(process)) or self._shm_ledger
        # SIGTERM first: the server stops its engine, which removes its shared memory
        stop_group(process.pid, grace_s=15, leader=process)
        if self._shm_ledger is not None:
            shm.clean(only=self._shm_ledger)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def process_ids(self, process: subprocess.Popen[bytes] | None = None) -> list[int]:
        import psutil

        process = process or self.process
        if process is None or process.poll() is not None:
            return []
        try:
            server = psutil.Process(process.pid)
            return [server.pid, *(c.pid for c in server.children(recursive=True))]
        except psutil.Error:
            return []

    def close(self) -> None:
        super().close()
        self._stop()


def _exit_status(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"


def _tail(path: Path, num_lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-num_lines:])
    except OSError:
        return "(no log)"
