"""Stopping a process group whatever its state, and the CPU cores each vLLM engine binds to."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import psutil
import pytest

from harness.backends import processes
from harness.backends.processes import (
    BIND_VARIABLE,
    group_members,
    omp_threads_bind,
    stop_group,
    stop_processes,
)
from harness.backends.vllm_server import VLLMServerBackend
from harness.config import load_config
from harness.roles import engines_at_once

# A server-like tree: the leader starts a child that starts a grandchild, all in the leader's
# new session; each prints its pid. `IGNORE_TERM=1` makes every process ignore SIGTERM.
TREE = r"""
import os, signal, subprocess, sys, time
if os.environ.get("IGNORE_TERM"):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
depth = int(sys.argv[1])
if depth:
    subprocess.Popen([sys.executable, "-c", sys.argv[2], str(depth - 1), sys.argv[2]])
print(os.getpid(), flush=True)
time.sleep(600)
"""


def start_tree(ignore_term: bool = False) -> tuple[subprocess.Popen, list[int]]:
    env = {**os.environ, **({"IGNORE_TERM": "1"} if ignore_term else {})}
    leader = subprocess.Popen(
        [sys.executable, "-c", TREE, "2", TREE],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env=env,
    )
    pids = [int(leader.stdout.readline()) for _ in range(3)]
    assert sorted(group_members(leader.pid)) == sorted(pids)
    return leader, pids


def running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_stop_group_ends_the_leader_and_its_descendants():
    leader, pids = start_tree()
    started = time.monotonic()
    assert stop_group(leader.pid, grace_s=10, leader=leader)
    assert time.monotonic() - started < 5  # they obey SIGTERM: no waiting for the grace
    assert group_members(leader.pid) == []
    assert not any(running(pid) for pid in pids)
    assert leader.returncode == -signal.SIGTERM


def test_stop_group_when_the_leader_died_first():
    """The orphaned-engine case: the server's main process is gone, its children are not."""
    leader, pids = start_tree()
    os.kill(leader.pid, signal.SIGKILL)
    leader.wait()
    orphans = [pid for pid in pids if pid != leader.pid]
    assert all(running(pid) for pid in orphans)
    assert sorted(group_members(leader.pid)) == sorted(orphans)
    assert stop_group(leader.pid, grace_s=10)
    assert not any(running(pid) for pid in orphans)


def test_stop_group_kills_what_ignores_sigterm_after_the_grace():
    leader, pids = start_tree(ignore_term=True)
    started = time.monotonic()
    assert stop_group(leader.pid, grace_s=1, leader=leader)
    assert 1 <= time.monotonic() - started < 6
    assert not any(running(pid) for pid in pids)
    assert leader.returncode == -signal.SIGKILL


def test_closing_a_server_whose_main_process_died_stops_its_engines():
    """VLLMServerBackend._stop on a stand-in server tree (no vLLM): the leader is SIGKILLed,
    as in the failure report; closing must still end the whole group."""
    leader, pids = start_tree()
    os.kill(leader.pid, signal.SIGKILL)
    leader.wait()
    backend = VLLMServerBackend.__new__(VLLMServerBackend)
    backend.process, backend._slot, backend._shm_ledger = leader, None, None
    backend._stop()
    assert backend.process is None
    assert group_members(leader.pid) == []
    assert not any(running(pid) for pid in pids)
    backend._stop()  # twice is harmless


def test_stop_processes_stops_the_living_and_skips_the_gone():
    term = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
    stubborn = psutil.Process(subprocess.Popen([sys.executable, "-c", term]).pid)
    polite = psutil.Process(
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"]).pid
    )
    time.sleep(0.5)  # let the stubborn one install its handler
    started = time.monotonic()
    stop_processes([stubborn, polite], grace_s=1)
    assert 1 <= time.monotonic() - started < 5
    assert not stubborn.is_running() and not polite.is_running()
    stop_processes([stubborn, polite], grace_s=1)  # gone: nothing to signal, no error


@pytest.mark.parametrize(
    ("cpus", "num_engines", "slot", "expected"),
    [
        ([0, 1], 1, 0, "auto"),  # a lone engine: vLLM's own choice
        ([0, 1], 1, 1, "nobind"),  # an engine beyond the plan
        ([0, 1], 2, 0, "0"),
        ([0, 1], 2, 1, "1"),
        ([0, 1], 3, 0, "nobind"),  # fewer cores than engines
        ([0, 1], 3, 2, "nobind"),
        (list(range(8)), 2, 0, "0-3"),
        (list(range(8)), 2, 1, "4-7"),
        (list(range(7)), 2, 1, "3-6"),  # the last engine takes the remainder
        (list(range(16)), 4, 3, "12-15"),
        ([0, 2, 4, 6], 2, 1, "4,6"),  # cores this process may use, not 0..n-1
        ([3, 1, 2, 0], 2, 0, "0-1"),
        ([0, 1, 2, 5, 6, 7], 1, 0, "auto"),
        ([0, 1, 2, 5, 6, 7], 2, 0, "0-2"),
        ([0, 1, 2, 5, 6, 9], 2, 1, "5-6,9"),
    ],
)
def test_omp_threads_bind(cpus, num_engines, slot, expected):
    assert omp_threads_bind(cpus, num_engines, slot) == expected


def test_engines_of_a_run_get_disjoint_cores(monkeypatch):
    monkeypatch.delenv(BIND_VARIABLE, raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(processes, "vllm_cpu_build", lambda: True)
    monkeypatch.setattr(processes, "foreign_vllm_processes", lambda: [])
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    monkeypatch.setattr(processes, "_TAKEN_SLOTS", set())
    first, env_first = processes.take_thread_binding(2)
    second, env_second = processes.take_thread_binding(2)
    assert (env_first, env_second) == ({BIND_VARIABLE: "0-3"}, {BIND_VARIABLE: "4-7"})
    processes.give_back_slot(first)
    again, env_again = processes.take_thread_binding(2)  # a freed slot is reused
    assert (again, env_again) == (first, {BIND_VARIABLE: "0-3"})
    third, env_third = processes.take_thread_binding(2)  # more than planned: no pinning
    assert env_third == {BIND_VARIABLE: "nobind", "OMP_NUM_THREADS": "4"}
    for slot in (second, again, third):
        processes.give_back_slot(slot)
    assert not processes._TAKEN_SLOTS


def test_no_pinning_next_to_another_runs_engine(monkeypatch):
    monkeypatch.delenv(BIND_VARIABLE, raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(processes, "vllm_cpu_build", lambda: True)
    monkeypatch.setattr(processes, "foreign_vllm_processes", lambda: [4242])
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(processes, "_TAKEN_SLOTS", set())
    slot, env = processes.take_thread_binding(1)
    assert env == {BIND_VARIABLE: "nobind", "OMP_NUM_THREADS": "1"}
    processes.give_back_slot(slot)


def test_the_binding_is_left_to_the_user_or_a_gpu_build(monkeypatch):
    monkeypatch.setattr(processes, "_TAKEN_SLOTS", set())
    monkeypatch.setattr(processes, "vllm_cpu_build", lambda: True)
    monkeypatch.setenv(BIND_VARIABLE, "0-1")
    assert processes.take_thread_binding(2) == (None, {})
    monkeypatch.delenv(BIND_VARIABLE)
    monkeypatch.setattr(processes, "vllm_cpu_build", lambda: False)
    assert processes.take_thread_binding(2) == (None, {})
    assert not processes._TAKEN_SLOTS


def test_foreign_vllm_processes_sees_a_titled_process_not_started_here():
    # a process whose command line starts like vLLM's process titles, started by another
    # process (a shell that exits at once), so it is no descendant of this one
    shell = subprocess.run(
        ["bash", "-c", "exec -a VLLM::Worker sleep 30 >/dev/null 2>&1 & echo $!"],
        capture_output=True,
        text=True,
        check=True,
    )
    pid = int(shell.stdout)
    try:
        deadline = time.monotonic() + 10  # until the background shell has exec'd
        while pid not in processes.foreign_vllm_processes():
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize(
    ("profile", "expected"),
    [("openai", 1), ("tiny", 4), ("ci", 3)],  # tiny: tiny-s, -m, -l, and the LoRA policy
)
def test_engines_at_once(profile, expected):
    assert engines_at_once(load_config(f"configs/{profile}.yaml")) == expected


def report_blocked_signals(connection) -> None:
    connection.send(signal.pthread_sigmask(signal.SIG_BLOCK, []))
    time.sleep(600)


def spawn_reporter():
    import multiprocessing

    context = multiprocessing.get_context("spawn")  # as vLLM starts its engine processes
    receiver, sender = context.Pipe()
    process = context.Process(target=report_blocked_signals, args=(sender,), daemon=True)
    process.start()
    return process, receiver


def test_engine_processes_started_shielded_do_not_get_ctrl_c():
    from harness.backends.vllm_engine import start_shielded

    (process, receiver), started = start_shielded(spawn_reporter)
    assert [p.pid for p in started] == [process.pid]
    try:
        assert signal.SIGINT in receiver.recv()
        assert signal.SIGINT not in signal.pthread_sigmask(signal.SIG_BLOCK, [])  # not ours
        os.kill(process.pid, signal.SIGINT)  # what a terminal's Ctrl-C does to the group
        process.join(1)
        assert process.is_alive()
    finally:
        process.kill()
        process.join()


def test_an_interrupt_while_the_engine_starts_stops_its_processes():
    from harness.backends.vllm_engine import start_shielded

    started: list = []

    def slow_build():
        process, _ = spawn_reporter()
        started.append(process)
        process.join()  # an engine start that waits on its processes
        raise RuntimeError("the engine died while starting")

    timer = threading.Timer(2, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    began = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        start_shielded(slow_build)
    assert time.monotonic() - began < 10
    assert not running(started[0].pid)  # killed (and reaped: multiprocessing cannot tell)
