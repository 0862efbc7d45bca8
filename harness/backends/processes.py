"""The processes a vLLM backend starts: how they start and are stopped, and which CPU cores
they use.

A server (a vLLM server, TRL's generation server) starts in its own process group (its
session), its output in a log of the run, and is SIGTERMed by the kernel when the harness dies
(`start_server_process`); `wait_healthy` waits for its `/health`. Its engine and worker
processes live in the same group; `stop_group` stops all of them whatever state they are in, also
when the server's main process has died and its engine lives on. On the CPU build, vLLM pins
every engine's OpenMP threads to cores; its own choice ("auto") is every core but one, the same
first cores whichever engine asks. `thread_binding` gives a new engine every core this process
may use when it runs alone, the cores other runs' engines left free next to them, or no pinning
when they left none; a binding the user set (VLLM_CPU_OMP_THREADS_BIND) wins.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from harness.backends.lifeline import dies_with_this_process
from harness.machine import vllm_cpu_build

if TYPE_CHECKING:
    import psutil

BIND_VARIABLE = "VLLM_CPU_OMP_THREADS_BIND"
PROC = Path("/proc")


def start_server_process(
    command: Sequence[str], environ: dict[str, str], log_path: Path, shown: str = ""
) -> subprocess.Popen[bytes]:
    """Start `command` in a process group of its own (a Ctrl-C reaches the harness only;
    `stop_group` ends the whole group), SIGTERMed by the kernel when the harness dies. Its
    output is appended to `log_path` after its command line (`shown` first: settings worth
    seeing there) and its pid."""
    with open(log_path, "ab") as log:
        log.write(f"$ {shown}{' '.join(command)}\n".encode())
        log.flush()
        process = subprocess.Popen(
            list(command),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=dies_with_this_process(),
            env=environ,
        )
        log.write(f"# harness: server pid {process.pid}\n".encode())
    return process


def wait_healthy(process: subprocess.Popen, root: str, timeout_s: float) -> int | None:
    """Wait until `root`/health answers 200 (never through a proxy): None then, or the exit
    code of `process` when it exits first; TimeoutError when `timeout_s` runs out."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return process.returncode
        with contextlib.suppress(OSError):
            if opener.open(f"{root}/health", timeout=2).status == 200:
                return None
        time.sleep(0.5)
    raise TimeoutError(f"{root}/health did not answer within {timeout_s:.0f} s")


def group_members(pgid: int) -> list[int]:
    """The live processes of process group `pgid` (zombies, already dead, are left out)."""
    if not PROC.is_dir():  # no /proc: ask the kernel whether the group has any process
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return []
        return [pgid]
    members = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses
        fields = stat.rpartition(")")[2].split()
        if len(fields) > 2 and fields[0] not in ("Z", "X") and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def _wait_empty(pgid: int, timeout_s: float, leader: subprocess.Popen | None) -> bool:
    deadline = time.monotonic() + timeout_s
    while True:
        if not group_members(pgid):
            if leader is not None:  # reap the leader, or it stays a zombie of ours
                with contextlib.suppress(subprocess.TimeoutExpired):
                    leader.wait(timeout=1)
            _wait_reaped(pgid, timeout_s=2)
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def _wait_reaped(pgid: int, timeout_s: float) -> None:
    """Give the parents of the group's last (zombie) processes a moment to reap them, so that
    the group is gone from the kernel too; an init that never reaps is not waited for."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.05)


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def stop_group(pgid: int, grace_s: float = 10.0, leader: subprocess.Popen | None = None) -> bool:
    """SIGTERM every process of group `pgid`, wait up to `grace_s` for the group to empty,
    then SIGKILL what is left. True when no process of the group remains."""
    _signal_group(pgid, signal.SIGTERM)
    if _wait_empty(pgid, grace_s, leader):
        return True
    _signal_group(pgid, signal.SIGKILL)
    return _wait_empty(pgid, 10.0, leader)


def stop_processes(processes: Iterable[psutil.Process], grace_s: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after `grace_s`, those of `processes` that still run (an engine
    whose own shutdown left a worker behind); with no grace, SIGKILL at once (a half-started
    engine, whose processes would log their own interruption). A process id reused since is
    left alone."""
    import psutil

    signalled = []
    for process in processes:
        with contextlib.suppress(psutil.Error):
            if process.status() != psutil.STATUS_ZOMBIE:
                process.send_signal(signal.SIGTERM if grace_s > 0 else signal.SIGKILL)
                signalled.append(process)
    _, alive = psutil.wait_procs(signalled, timeout=grace_s)
    for process in alive:
        with contextlib.suppress(psutil.Error):
            process.kill()
    psutil.wait_procs(alive, timeout=5)


def omp_threads_bind(cpus: Collection[int], taken: Collection[int]) -> str:
    """VLLM_CPU_OMP_THREADS_BIND for a new engine that may use `cpus`, while engines of other
    runs on the machine have pinned threads to the cores `taken`.

    The engines of one run never generate at once (the harness calls one role at a time, and
    an idle engine sleeps), so they need no cores of their own: with nothing taken, every core
    this process may use. vLLM's own choice ("auto") leaves one core to its scheduler, half of
    a 2-core machine: the same verify ran 1.54x faster on both cores, with the same verdicts.
    Next to another run's engines, the cores they left free; none left: no pinning ("nobind"),
    so that the kernel shares the cores instead of two engines spinning on the same ones.
    """
    free = sorted(set(cpus) - set(taken))
    return _id_list(free) if free else "nobind"


def _id_list(ids: Sequence[int]) -> str:
    """[0, 1, 2, 5, 7, 8] -> "0-2,5,7-8" (vLLM's cpu list syntax)."""
    runs: list[list[int]] = []
    for cpu in ids:
        if runs and cpu == runs[-1][-1] + 1:
            runs[-1].append(cpu)
        else:
            runs.append([cpu])
    return ",".join(str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs)


def thread_binding() -> dict[str, str]:
    """The environment a new vLLM engine starts with: its thread binding (`omp_threads_bind`)
    on the CPU build; nothing on a GPU build or where the environment sets the binding."""
    if not vllm_cpu_build() or BIND_VARIABLE in os.environ:
        return {}
    cpus = sorted(os.sched_getaffinity(0))
    value = omp_threads_bind(cpus, pinned_by_other_runs(cpus))
    env = {BIND_VARIABLE: value}
    if value == "nobind" and "OMP_NUM_THREADS" not in os.environ:
        # unpinned, an engine starts a thread per core: next to another, half of them
        env["OMP_NUM_THREADS"] = str(max(1, len(cpus) // 2))
    return env


def pinned_by_other_runs(cpus: Collection[int]) -> set[int]:
    """The cores to which the vLLM processes of other runs on this machine pinned threads
    (a thread allowed on fewer cores than `cpus` is pinned)."""
    pinned: set[int] = set()
    for pid in foreign_vllm_processes():
        with contextlib.suppress(OSError):
            for task in (PROC / str(pid) / "task").iterdir():
                with contextlib.suppress(OSError, ValueError):
                    allowed = os.sched_getaffinity(int(task.name))
                    if len(allowed) < len(cpus):
                        pinned |= allowed
    return pinned


def foreign_vllm_processes() -> list[int]:
    """vLLM engine and worker processes on this machine that this process did not start
    (another run, or one a killed run left behind)."""
    import psutil

    own = {p.pid for p in psutil.Process().children(recursive=True)}
    found = []
    for process in psutil.process_iter(["name", "cmdline", "status"]):
        with contextlib.suppress(psutil.Error):
            titles = (" ".join(process.info["cmdline"] or []), process.info["name"] or "")
            running = process.info["status"] != psutil.STATUS_ZOMBIE
            if running and any(t.startswith("VLLM::") for t in titles) and process.pid not in own:
                found.append(process.pid)
    return found
