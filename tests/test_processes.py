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
    backend.process, backend._shm_ledger = leader, None
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
    ("cpus", "taken", "expected"),
    [
        ([0, 1], [], "0-1"),  # alone on the machine (or with this run's engines): every core
        ([0, 1], [0], "1"),  # another run's engine is pinned to core 0, as vLLM's auto does
        ([0, 1], [1], "0"),
        ([0, 1], [0, 1], "nobind"),  # no core left: the kernel shares them
        (list(range(8)), range(7), "7"),  # next to an auto engine on 8 cores (0-6)
        (list(range(8)), [0, 1, 2], "3-7"),
        (list(range(8)), [2, 5], "0-1,3-4,6-7"),
        ([0, 2, 4, 6], [0, 1], "2,4,6"),  # cores this process may use, not 0..n-1
        ([0, 1], [5, 6], "0-1"),  # pinned outside this process's cores: no concern
        ([3, 1, 2, 0], [0], "1-3"),
    ],
)
def test_omp_threads_bind(cpus, taken, expected):
    assert omp_threads_bind(cpus, taken) == expected


@pytest.fixture
def cpu_build(monkeypatch):
    monkeypatch.delenv(BIND_VARIABLE, raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(processes, "vllm_cpu_build", lambda: True)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)


@pytest.mark.parametrize(
    ("taken", "expected"),
    [
        (set(), {BIND_VARIABLE: "0-3"}),
        ({0, 1, 2}, {BIND_VARIABLE: "3"}),
        ({0, 1, 2, 3}, {BIND_VARIABLE: "nobind", "OMP_NUM_THREADS": "2"}),
    ],
)
def test_thread_binding_of_a_new_engine(cpu_build, monkeypatch, taken, expected):
    monkeypatch.setattr(processes, "pinned_by_other_runs", lambda cpus: taken)
    assert processes.thread_binding() == expected


def test_the_binding_is_left_to_the_user_or_a_gpu_build(cpu_build, monkeypatch):
    monkeypatch.setattr(processes, "pinned_by_other_runs", lambda cpus: {0})
    monkeypatch.setenv(BIND_VARIABLE, "0-1")
    assert processes.thread_binding() == {}
    monkeypatch.delenv(BIND_VARIABLE)
    monkeypatch.setattr(processes, "vllm_cpu_build", lambda: False)
    assert processes.thread_binding() == {}


def start_titled(title: str, code: str) -> int:
    """A Python process whose command line starts with `title` (as vLLM's process titles),
    started by a shell that exits at once, so that it is no descendant of this process."""
    shell = subprocess.run(
        ["bash", "-c", f'exec -a {title} {sys.executable} -c "{code}" >/dev/null 2>&1 & echo $!'],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(shell.stdout)


def test_cores_pinned_by_another_runs_engine_are_seen():
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("one core: nothing can be pinned to fewer")
    code = f"import os, time; os.sched_setaffinity(0, {{{cpus[0]}}}); time.sleep(60)"
    pinned_worker = start_titled("VLLM::Worker", code)
    other_program = start_titled("worker", code)
    try:
        deadline = time.monotonic() + 10  # until the shell has exec'd and the worker pinned
        while processes.pinned_by_other_runs(cpus) != {cpus[0]}:
            assert time.monotonic() < deadline, processes.pinned_by_other_runs(cpus)
            time.sleep(0.1)
        assert pinned_worker in processes.foreign_vllm_processes()
        assert other_program not in processes.foreign_vllm_processes()
        assert omp_threads_bind(cpus, processes.pinned_by_other_runs(cpus)) != _all(cpus)
    finally:
        for pid in (pinned_worker, other_program):
            os.kill(pid, signal.SIGKILL)


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


@pytest.fixture
def ctrl_c_raises():
    """Ctrl-C raises KeyboardInterrupt here, as in a terminal: a runner that starts the tests
    in the background (a CI job, `cmd &`) has them ignore SIGINT."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_an_interrupt_while_the_engine_starts_stops_its_processes(ctrl_c_raises):
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


def _all(cpus: list[int]) -> str:
    return f"{cpus[0]}-{cpus[-1]}" if len(cpus) > 1 else str(cpus[0])
