"""One run folder, one process: a second process on a held run folder is refused with one line
naming the holder's pid and command (exit 2), a lock whose holder died is taken over, the
processes the holder started go on under its lock, and a command gives the lock back when it
ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import click
import pytest

from harness import runlock
from harness.runlock import RunFolderBusy, open_run_folder, read_holder, run_folder_lock
from harness.runstate import RunPaths

# Holds RUN's lock as `harness eval -c configs/x.yaml` would, until killed; then, given a
# second argument, runs it as a command of its own (a child of the holder).
HOLDER = """
import subprocess, sys, time
from pathlib import Path
from harness.runlock import run_folder_lock

with run_folder_lock(Path(sys.argv[1]), ["harness", "eval", "-c", "configs/x.yaml"]):
    if len(sys.argv) > 2:
        sys.exit(subprocess.run([sys.executable, "-c", sys.argv[2], sys.argv[1]]).returncode)
    print("held", flush=True)
    time.sleep(600)
"""
CHILD = """
import sys
import threading
from pathlib import Path
from harness.runlock import run_folder_lock

with run_folder_lock(Path(sys.argv[1])):
    print("child ran", flush=True)
"""
PROFILE = """
runs_dir: {runs}
run_name: r
data: {{max_prompts: 2}}
rollouts: {{num_samples: 2}}
roles:
  policy: {{backend: scripted, model: policy, rule: synthetic}}
"""


def hold(run_dir: Path) -> subprocess.Popen:
    run_dir.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run_dir)],
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert holder.stdout.readline().strip() == "held"
    return holder


def harness(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True,
                          text=True, timeout=120)  # fmt: skip


@pytest.fixture
def profile(tmp_path) -> Path:
    path = tmp_path / "profile.yaml"
    path.write_text(PROFILE.format(runs=tmp_path / "runs"))
    return path


@pytest.mark.integration  # a subprocess harness run
def test_a_second_process_is_refused_with_one_line(tmp_path, profile):
    run_dir = tmp_path / "runs" / "r"
    holder = hold(run_dir)
    try:
        refused = harness("rollouts", "-c", str(profile))
    finally:
        holder.kill()
        holder.wait()
    assert refused.returncode == 2, refused.stderr[-3000:]
    assert "Traceback" not in refused.stderr
    [line] = refused.stderr.strip().splitlines()
    assert line.startswith(f"error: {run_dir} is in use by another harness process ")
    assert f"(pid {holder.pid}: harness eval -c configs/x.yaml)" in line
    assert sorted(p.name for p in run_dir.iterdir()) == [".lock"]  # nothing written

    # its holder killed (SIGKILL), the lock is free: the same command runs and holds it
    rerun = harness("rollouts", "-c", str(profile))
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert (run_dir / "candidates.jsonl").is_file()
    assert read_holder(RunPaths(run_dir).lock_path).pid not in (None, holder.pid)


def test_the_lock_of_a_dead_holder_is_taken_over(tmp_path):
    run_dir = tmp_path / "run"
    holder = hold(run_dir)
    named = rf"\(pid {holder.pid}: harness eval -c configs/x"
    with pytest.raises(RunFolderBusy, match=named), run_folder_lock(run_dir):
        pass
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert read_holder(run_dir / ".lock").pid == holder.pid  # the dead holder's name stays
    with run_folder_lock(run_dir, ["harness", "verify"]):
        assert read_holder(run_dir / ".lock").pid == os.getpid()
        assert read_holder(run_dir / ".lock").command == "harness verify"


def test_a_process_the_holder_started_goes_on_under_its_lock(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    started = subprocess.run([sys.executable, "-c", HOLDER, str(run_dir), CHILD],
                             capture_output=True, text=True, timeout=60)  # fmt: skip
    assert started.returncode == 0, started.stderr[-3000:]
    assert started.stdout.strip() == "child ran"


def test_a_command_gives_the_lock_back_when_it_ends(tmp_path):
    run_dir = tmp_path / "run"

    @click.command()
    def command() -> None:
        open_run_folder(run_dir)
        lock = json.loads((run_dir / ".lock").read_text())
        assert lock["pid"] == os.getpid()

    for _ in range(2):  # in one process, one command after the other
        command.main([], standalone_mode=False)
    holder = hold(run_dir)  # another process takes it at once
    holder.kill()
    holder.wait()


# Holds RUN's lock, forks a process (as vLLM forks its engine: the lock's file description
# goes with it), prints its pid and ends.
FORKING_HOLDER = """
import os, sys, time
from pathlib import Path
from harness.runlock import run_folder_lock

with run_folder_lock(Path(sys.argv[1]), ["harness", "eval"]):
    if os.fork() == 0:
        print(os.getpid(), flush=True)
        time.sleep(600)
    os._exit(0)
"""


def leave_a_fork_holding(run_dir: Path) -> tuple[int, int]:
    """The pids of the ended holder and of the process it left holding the lock."""
    run_dir.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen([sys.executable, "-c", FORKING_HOLDER, str(run_dir)],
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    left = int(holder.stdout.readline())
    holder.wait()
    return holder.pid, left


def test_the_lock_is_taken_once_the_processes_a_dead_holder_left_end(tmp_path):
    """As after a SIGKILL of the harness's group: its engines end a moment after it."""
    run_dir = tmp_path / "run"
    _, left = leave_a_fork_holding(run_dir)
    threading.Timer(0.5, os.kill, (left, signal.SIGKILL)).start()
    with run_folder_lock(run_dir):
        assert read_holder(run_dir / ".lock").pid == os.getpid()


def test_the_busy_line_names_processes_left_holding_the_lock(tmp_path, monkeypatch):
    monkeypatch.setattr(runlock, "LEFTOVER_WAIT_S", 0.3)
    run_dir = tmp_path / "run"
    ended, left = leave_a_fork_holding(run_dir)
    try:
        with pytest.raises(RunFolderBusy) as busy, run_folder_lock(run_dir):
            pass
    finally:
        os.kill(left, signal.SIGKILL)
    assert f"pid {ended} (harness eval) ended" in str(busy.value)
    assert f"processes it left hold the lock: {left}" in str(busy.value)


# Holds RUN's lock, starts a child handed the lock's descriptor (as the train stage starts its
# trainer), prints the child's pid and ends.
HANDING_HOLDER = """
import subprocess, sys
from pathlib import Path
from harness.runlock import held_descriptors, run_folder_lock

with run_folder_lock(Path(sys.argv[1]), ["harness", "eval"]):
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"],
                             pass_fds=held_descriptors())
    print(child.pid, flush=True)
"""


def test_a_child_handed_the_lock_keeps_the_folder_locked_after_the_holder(tmp_path, monkeypatch):
    monkeypatch.setattr(runlock, "LEFTOVER_WAIT_S", 0.3)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HANDING_HOLDER, str(run_dir)],
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    child = int(holder.stdout.readline())
    holder.wait()
    try:
        with (
            pytest.raises(RunFolderBusy, match=f"hold the lock: {child}"),
            run_folder_lock(run_dir),
        ):
            pass
    finally:
        os.kill(child, signal.SIGKILL)
    monkeypatch.setattr(runlock, "LEFTOVER_WAIT_S", 10.0)
    with run_folder_lock(run_dir):  # taken once the child has ended
        assert read_holder(run_dir / ".lock").pid == os.getpid()
