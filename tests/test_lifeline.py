"""Processes die with the process that started them, SIGKILL included: the trainer child (its
parent-death signal) and the processes handed to the lifeline (vLLM's engines: started, or
forked, where the harness cannot ask the kernel for one). Each child here is silent, so
nothing but these ends it (a child that writes to a closed pipe would end of that)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from harness.backends.lifeline import tie_to_this_process

SILENT = [sys.executable, "-c", "import time; time.sleep(600)"]

# Starts a silent child (`fork`: forks one, as vLLM forks its engine), ties it to itself, prints
# its pid and waits to be killed.
TIED = """
import os, subprocess, sys, time
from harness.backends.lifeline import tie_to_this_process

if sys.argv[1] == "fork":
    pid = os.fork()
    if pid == 0:
        time.sleep(600)
        os._exit(0)
else:
    pid = subprocess.Popen({silent!r}, start_new_session=True).pid
tie_to_this_process([pid])
print(pid, flush=True)
time.sleep(600)
"""
# Runs a silent trainer as the train stage does, and waits on it.
TRAINING = """
import os
from harness.train_process import run_child

run_child({silent!r}, dict(os.environ), show=print)
"""


def ended_within(pid: int, timeout_s: float) -> bool:
    try:
        process = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return True
    try:
        process.wait(timeout=timeout_s)
    except psutil.TimeoutExpired:
        process.kill()
        return False
    return True


def kill_parent(parent: subprocess.Popen) -> None:
    parent.send_signal(signal.SIGKILL)
    parent.wait()


@pytest.mark.parametrize("how", ["spawn", "fork"])
def test_a_tied_process_ends_when_its_parent_is_killed(how):
    parent = subprocess.Popen([sys.executable, "-c", TIED.format(silent=SILENT), how],
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    child = int(parent.stdout.readline())
    time.sleep(0.5)
    assert psutil.pid_exists(child)
    kill_parent(parent)
    assert ended_within(child, timeout_s=10)


def test_the_trainer_child_ends_when_its_parent_is_killed():
    parent = subprocess.Popen([sys.executable, "-c", TRAINING.format(silent=SILENT)])
    deadline = time.monotonic() + 30
    while not (trainer := _running(parent.pid, SILENT[-1])):
        assert time.monotonic() < deadline and parent.poll() is None
        time.sleep(0.05)
    assert os.getsid(trainer.pid) == trainer.pid  # a session of its own: a group kill misses it
    kill_parent(parent)
    assert ended_within(trainer.pid, timeout_s=10)


def _running(parent: int, code: str) -> psutil.Process | None:
    """The child of `parent` that runs `code` (once it has exec'd: its session is set)."""
    for child in psutil.Process(parent).children():
        try:
            if code in child.cmdline():
                return child
        except psutil.Error:
            continue
    return None


def test_tying_nothing_starts_nothing():
    before = psutil.Process().children()
    tie_to_this_process([])
    assert psutil.Process().children() == before
