"""The processes a vLLM backend starts: how they are stopped, and which CPU cores they use.

A vLLM server runs in its own process group (its session), with its engine and worker
processes in the same group; `stop_group` stops all of them whatever state they are in, also
when the server's main process has died and its engine lives on. On the CPU build, vLLM pins
each engine's OpenMP threads to the first cores of the machine ("auto"), so two engines would
share one core while the others idle; `take_thread_binding` gives each engine of a run a
block of cores of its own, or no pinning (and a fair share of threads) when there are fewer
cores than engines or another run's engines are up.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from harness.machine import vllm_cpu_build

if TYPE_CHECKING:
    import psutil

BIND_VARIABLE = "VLLM_CPU_OMP_THREADS_BIND"
PROC = Path("/proc")


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
        if len(fields) > 2 and fields[0] != "Z" and int(fields[2]) == pgid:
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


def omp_threads_bind(cpus: Sequence[int], num_engines: int, slot: int) -> str:
    """VLLM_CPU_OMP_THREADS_BIND for engine `slot` of `num_engines` that run at once on `cpus`.

    One engine keeps vLLM's own choice ("auto": every core but one, which its scheduler gets).
    Several engines get disjoint blocks of cores (the last takes the remainder), since "auto"
    would pin each of them to the same first cores. With fewer cores than engines, or an
    engine beyond the planned number, no pinning ("nobind"): the kernel spreads them.
    """
    if num_engines <= 1 and slot == 0:
        return "auto"
    if len(cpus) < num_engines or not 0 <= slot < num_engines:
        return "nobind"
    size = len(cpus) // num_engines
    end = len(cpus) if slot == num_engines - 1 else (slot + 1) * size
    return _id_list(sorted(cpus)[slot * size : end])


def _id_list(ids: Sequence[int]) -> str:
    """[0, 1, 2, 5, 7, 8] -> "0-2,5,7-8" (vLLM's cpu list syntax)."""
    runs: list[list[int]] = []
    for cpu in ids:
        if runs and cpu == runs[-1][-1] + 1:
            runs[-1].append(cpu)
        else:
            runs.append([cpu])
    return ",".join(str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs)


# Cores are a machine resource: every RunContext of this process shares one set of slots.
_TAKEN_SLOTS: set[int] = set()


def take_thread_binding(num_engines: int) -> tuple[int | None, dict[str, str]]:
    """A slot and the environment for a new vLLM engine of a run that holds at most
    `num_engines` engines at once: ``(None, {})`` where vLLM does not pin threads (a GPU build)
    or the environment already sets the binding. Give the slot back with `give_back_slot`."""
    if not vllm_cpu_build() or BIND_VARIABLE in os.environ:
        return None, {}
    slot = min(set(range(len(_TAKEN_SLOTS) + 1)) - _TAKEN_SLOTS)
    _TAKEN_SLOTS.add(slot)
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [0]
    foreign = foreign_vllm_processes()  # another run's engines: their cores are unknown
    value = "nobind" if foreign else omp_threads_bind(cpus, num_engines, slot)
    env = {BIND_VARIABLE: value}
    if value == "nobind" and "OMP_NUM_THREADS" not in os.environ:
        # unpinned, each engine would start a thread per core: oversubscribed, they spin
        env["OMP_NUM_THREADS"] = str(max(1, len(cpus) // max(num_engines, 1 + bool(foreign))))
    return slot, env


def give_back_slot(slot: int | None) -> None:
    _TAKEN_SLOTS.discard(slot)  # type: ignore[arg-type]


def foreign_vllm_processes() -> list[int]:
    """vLLM engine and worker processes on this machine that this process did not start
    (another run, or one a killed run left behind)."""
    import psutil

    own = {p.pid for p in psutil.Process().children(recursive=True)}
    found = []
    for process in psutil.process_iter(["name", "cmdline"]):
        with contextlib.suppress(psutil.Error):
            titles = (" ".join(process.info["cmdline"] or []), process.info["name"] or "")
            if any(t.startswith("VLLM::") for t in titles) and process.pid not in own:
                found.append(process.pid)
    return found
