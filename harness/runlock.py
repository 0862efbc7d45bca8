"""One run folder, one process.

Every command that writes to a run folder holds RUN/.lock (an exclusive `flock`) from the
moment it opens the folder until it ends (`open_run_folder`). A second `harness` on the
same folder stops at once with one line (exit 2) that names the holder's pid and command, which
the holder wrote into the lock file. The kernel drops the lock when its holder dies, SIGKILL
included, so the lock of a dead process is simply taken over (the file stays in place).

The processes a holder starts work for it: the train stage's `python -m harness train` (and
accelerate's ranks under it) opens the same folder, and goes on under the holder's lock when
the holder is one of its ancestors. The trainer is handed the lock's descriptor as well
(`held_descriptors`), so that the folder stays locked until it has ended too, should the
holder die first.

    harness eval -c configs/tiny.yaml   # a second one on the same run folder: error, exit 2
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import click

from harness.interrupts import resume_command
from harness.runstate import RunPaths

PROC = Path("/proc")
LEFTOVER_WAIT_S = 10.0  # the lifeline looks every second; a SIGKILLed process ends in ms

# The locks this process holds (descriptor: lock file): process-wide, as the locks are.
_held: dict[int, Path] = {}


class RunFolderBusy(RuntimeError):
    """Another process holds the run folder."""

    exit_status = 2  # the user's to fix: wait for the other run, stop it, or pick another name


@dataclass(frozen=True)
class Holder:
    pid: int | None
    command: str


def open_run_folder(run_dir: Path) -> None:
    """Create `run_dir` and hold it until the running command ends (its click context
    closes): the one place where a command takes its run folder."""
    run_dir.mkdir(parents=True, exist_ok=True)
    click.get_current_context().with_resource(run_folder_lock(run_dir))


@contextlib.contextmanager
def run_folder_lock(run_dir: Path, argv: list[str] | None = None) -> Iterator[None]:
    """Hold `run_dir`'s lock inside the block, or go on under it where an ancestor of this
    process holds it; RunFolderBusy where another process does."""
    path = RunPaths(run_dir).lock_path
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if _take(fd) or _take_once_leftovers_end(fd, path):
            _write_holder(fd, resume_command(argv or sys.argv))
            _held[fd] = path
        else:
            holder = read_holder(path)
            if holder.pid is None or holder.pid not in _self_and_ancestors():
                raise RunFolderBusy(busy_message(run_dir, holder, path))
        yield
    finally:
        _held.pop(fd, None)
        os.close(fd)  # a lock of our own goes with the file description


def held_descriptors() -> tuple[int, ...]:
    """The descriptors of the run-folder locks this process holds, for `pass_fds` of a child
    that writes to the folder too: the lock then lasts until the child has ended as well."""
    return tuple(_held)


def _take(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _take_once_leftovers_end(fd: int, path: Path) -> bool:
    """Take the lock that the holder named in the file no longer holds itself: a process it
    forked (a vLLM engine) holds it until it ends too, a moment later (killed with its group,
    or by the holder's lifeline). False where the holder lives or the wait runs out."""
    holder = read_holder(path)
    if holder.pid is not None and _alive(holder.pid):
        return False
    deadline = time.monotonic() + LEFTOVER_WAIT_S
    while time.monotonic() < deadline:
        time.sleep(0.1)
        if _take(fd):
            return True
    return False


def _write_holder(fd: int, command: str) -> None:
    """Name this process in the lock file (one write, so a reader sees all of it or none)."""
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps({"pid": os.getpid(), "command": command}) + "\n").encode(), 0)


def read_holder(path: Path) -> Holder:
    """Who the lock file names; a pid of None where it names nobody (yet)."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        return Holder(int(record["pid"]), str(record["command"]))
    except (OSError, ValueError, KeyError, TypeError):
        return Holder(None, "")


def _self_and_ancestors() -> set[int]:
    import psutil

    me = psutil.Process()
    return {me.pid, *(p.pid for p in me.parents())}


def busy_message(run_dir: Path, holder: Holder, path: Path) -> str:
    """One line: who holds the run folder, and what to do."""
    others = [pid for pid in _processes_with_open(path) if pid != os.getpid()]
    if holder.pid is not None and _alive(holder.pid):
        who = f"pid {holder.pid}: {holder.command}"
    elif others:  # the holder ended; processes it started still hold the lock
        left = ", ".join(str(pid) for pid in others)
        ended = f"pid {holder.pid} ({holder.command}) ended" if holder.pid else "its holder ended"
        who = f"{ended}; processes it left hold the lock: {left}"
    else:
        who = "its holder is unknown"
    return (
        f"{run_dir} is in use by another harness process ({who}); wait for it to end or stop "
        "it, or give this run another run_name"
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _processes_with_open(path: Path) -> list[int]:
    """The processes that have `path` open (from /proc; empty where there is none)."""
    target = str(path.resolve())
    found = []
    for entry in PROC.iterdir() if PROC.is_dir() else []:
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if any(os.readlink(fd) == target for fd in (entry / "fd").iterdir()):
                found.append(int(entry.name))
    return sorted(found)
