"""Shared memory that vLLM engines leave in /dev/shm when they are killed.

vLLM's engine and worker processes share their scheduler queue through Python's
`multiprocessing.shared_memory` (entries named `psm_*`) and lock it with multiprocessing
semaphores (`sem.mp-*`). A clean shutdown removes them; a kill of the whole process group
(the resource tracker that would remove them dies too) leaves them behind, and /dev/shm is
memory. So when an engine is up, the entries its processes hold are written to a ledger
(one JSON file per engine, in a folder per user); when the engine stops, and when any later
run starts an engine, every entry of a ledger whose processes are all gone, and that no live
process holds, is removed. Entries the harness did not see an engine of its own hold are never
touched.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

SHM_ROOT = Path("/dev/shm")
PROC = Path("/proc")
PREFIXES = ("psm_", "sem.mp-")  # multiprocessing's names: SharedMemory, SemLock


def ledger_dir() -> Path:
    return Path(tempfile.gettempdir()) / f"harness-{os.getuid()}" / "shm"


@dataclass(frozen=True)
class Ledger:
    """The shared-memory entries one engine's processes held; `owners` maps each process id
    to its start time, so that a reused process id is not mistaken for the owner."""

    path: Path
    owners: dict[int, float]
    names: tuple[str, ...]


def process_start(pid: int) -> float | None:
    """The start time of process `pid`, or None when it does not exist (or is a zombie)."""
    import psutil

    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        return process.create_time()
    except psutil.Error:
        return None


def held_names(root: Path = SHM_ROOT, pids: Iterable[int] | None = None) -> set[str]:
    """Names of entries under `root` that processes (`pids`, or every process this user may
    inspect) have mapped or open. A named semaphore is mapped under the temporary name glibc
    created it with (`sem.XXXXXX (deleted)`), so entries are matched by inode as well."""
    prefix = str(root).rstrip("/") + "/"
    folders = [PROC / str(p) for p in pids] if pids is not None else list(PROC.glob("[0-9]*"))
    names: set[str] = set()
    inodes: set[int] = set()
    for folder in folders:
        with contextlib.suppress(OSError):
            for line in (folder / "maps").read_text().splitlines():
                fields = line.split(maxsplit=5)
                if len(fields) == 6 and fields[5].startswith(prefix):
                    names.add(fields[5][len(prefix) :].removesuffix(" (deleted)"))
                    inodes.add(int(fields[4]))
        with contextlib.suppress(OSError):
            for fd in (folder / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd).startswith(prefix):
                        inodes.add(fd.stat().st_ino)
    with contextlib.suppress(OSError):
        for entry in root.iterdir():
            with contextlib.suppress(OSError):
                if entry.stat().st_ino in inodes:
                    names.add(entry.name)
    return {n for n in names if "/" not in n}


def record(pids: Sequence[int], root: Path = SHM_ROOT, folder: Path | None = None) -> Path | None:
    """Add to the ledger of the engine whose processes are `pids` (its main process first)
    the vLLM entries they hold now. None when there is nothing to record, or the ledger folder
    cannot be written."""
    owners = {pid: start for pid in pids if (start := process_start(pid)) is not None}
    names = {n for n in held_names(root, owners) if n.startswith(PREFIXES)}
    if not names:
        return None
    folder = folder or ledger_dir()
    path = folder / f"{os.getpid()}-{pids[0]}.json"
    for earlier in read_ledgers(folder):
        if earlier.path == path:
            owners, names = {**earlier.owners, **owners}, names | set(earlier.names)
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.write_text(json.dumps({"owners": owners, "names": sorted(names)}))
    except OSError:
        return None
    return path


def read_ledgers(folder: Path) -> list[Ledger]:
    ledgers = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            data = json.loads(path.read_text())
            owners = {int(pid): float(start) for pid, start in data["owners"].items()}
            names = tuple(str(n) for n in data["names"] if str(n).startswith(PREFIXES))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue  # not ours to judge; left alone
        ledgers.append(Ledger(path, owners, names))
    return ledgers


def owners_gone(ledger: Ledger) -> bool:
    """Whether every process of the ledger has ended (a reused process id does not count)."""
    return all(process_start(pid) != start for pid, start in ledger.owners.items())


def stale_names(ledgers: Iterable[Ledger], existing: set[str], held: set[str]) -> set[str]:
    """The entries to remove: listed by a ledger whose owners are all gone, still present,
    and held by no live process."""
    listed = {name for ledger in ledgers for name in ledger.names}
    return (listed & existing) - held


def clean(
    root: Path = SHM_ROOT,
    folder: Path | None = None,
    only: Path | None = None,
    forget: bool = False,
) -> list[str]:
    """Remove the entries of every ledger (or of the ledger `only`) whose engine processes are
    all gone; the ledgers of finished engines are deleted. `forget`: the engine shared this
    process's resource tracker (an in-process engine), which is told that they are gone, or
    at exit it would try to remove them again and warn. Returns the names removed."""
    ledgers = [g for g in read_ledgers(folder or ledger_dir()) if only in (None, g.path)]
    finished = [g for g in ledgers if owners_gone(g)]
    if not finished:
        return []
    existing = {p.name for p in root.iterdir()} if root.is_dir() else set()
    candidates = {n for g in finished for n in g.names} & existing
    removed = sorted(stale_names(finished, existing, held_names(root) if candidates else set()))
    for name in removed:
        with contextlib.suppress(OSError):
            (root / name).unlink()
            if forget:
                _forget(name)
    for ledger in finished:
        with contextlib.suppress(OSError):
            ledger.path.unlink()
    return removed


def _forget(name: str) -> None:
    """Unregister `name` from this process's resource tracker, by the name and type it was
    registered under (shared memory "/psm_x"; semaphore file "sem.mp-x" is "/mp-x")."""
    from multiprocessing import resource_tracker

    if name.startswith("psm_"):
        resource_tracker.unregister("/" + name, "shared_memory")
    elif name.startswith("sem."):
        resource_tracker.unregister("/" + name.removeprefix("sem."), "semaphore")
