"""Processes that die with the process that started them, SIGKILL included.

A process the harness starts itself (a vLLM server, TRL's generation server, the trainer)
asks the kernel for a parent-death signal before it runs (`die_with_parent`, as `preexec_fn`):
SIGTERM when the harness ends, however it ends, so that it stops in order. The engine
processes that vLLM starts inside the harness (`vllm.LLM` forks or spawns them) cannot be
asked, and outlive a `kill -9` of the harness alone; `tie_to_this_process` hands their pids to
a lifeline: a small process in a session of its own that SIGKILLs them once the harness is
gone (its pipe from the harness closes, or it is handed to another parent). A pid is checked by
its start time before the kill, so a reused one is left alone.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable

PR_SET_PDEATHSIG = 1

# The lifeline. It polls its parent as well as reading the pipe: a forked engine holds the
# pipe's write end too, so the pipe alone may stay open after the harness died.
LIFELINE = r"""
import os, select, signal, sys

def started(pid):
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[19]
    except (OSError, IndexError):
        return None

parent, watched = int(sys.argv[1]), {}
while os.getppid() == parent:
    if not select.select([sys.stdin], [], [], 1.0)[0]:
        continue
    line = sys.stdin.readline()
    if not line:
        break
    for pid in map(int, line.split()):
        watched[pid] = started(pid)
for pid, start in watched.items():
    if start is not None and started(pid) == start:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
"""


def die_with_parent(parent: int | None = None, prctl: Callable[..., int] | None = None) -> None:
    """Ask the kernel to SIGTERM this process when its parent ends (run in a child, before
    exec, or by a process on itself). `parent`: the pid it must still have, else it stops
    now (the parent ended before the request). `prctl`: libc's, looked up beforehand. The
    kernel's "parent" is the thread that started the child: start it from one that lives as
    long as the child should (the main thread)."""
    prctl = prctl or _prctl()
    if prctl is not None:
        prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM))
    if parent is not None and os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGTERM)


def dies_with_this_process() -> functools.partial[None]:
    """A `preexec_fn` that ties the child to this process (see `die_with_parent`). prctl is
    looked up here: a child forked from a process with threads must not load libraries."""
    return functools.partial(die_with_parent, os.getpid(), _prctl())


def _prctl() -> Callable[..., int] | None:
    """libc's prctl; None where there is none (not Linux)."""
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def tie_to_this_process(pids: Iterable[int]) -> None:
    """SIGKILL `pids` when this process ends, however it ends (see the module docstring)."""
    line = " ".join(str(pid) for pid in pids)
    if not line:
        return
    with _lock, contextlib.suppress(OSError):  # no lifeline: the processes stay as before
        lifeline = _lifeline()
        if lifeline is not None and lifeline.stdin is not None:
            lifeline.stdin.write(f"{line}\n".encode())
            lifeline.stdin.flush()


def ensure_running() -> None:
    """Start this process's lifeline now (before taking stock of the processes an engine
    start adds: the lifeline is none of them)."""
    with _lock, contextlib.suppress(OSError):
        _lifeline()


# This process's lifeline: one per process, as the death it watches for is the process's.
_lock = threading.Lock()
_running: list[subprocess.Popen[bytes]] = []


def _lifeline() -> subprocess.Popen[bytes] | None:
    """The lifeline, started (again, where it ended) on first use; None without /proc."""
    if not os.path.isdir("/proc"):
        return None
    if not _running or _running[0].poll() is not None:
        _running[:] = [
            subprocess.Popen(
                [sys.executable, "-c", LIFELINE, str(os.getpid())],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # a Ctrl-C or a kill of the harness's group leaves it be
            )
        ]
    return _running[0]
