"""Shared memory left by killed engines: only entries an engine of ours held, only once its
processes are gone, never one a live process holds. A temporary folder stands in for /dev/shm
and real processes hold its entries (open, or mapped like vLLM's ring buffer)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from harness.backends import shm
from harness.backends.shm import Ledger, held_names, stale_names

# Opens (or maps) the files named on its command line, says so, then waits to be killed.
HOLDER = r"""
import mmap, sys, time
handles = []
for path in sys.argv[2:]:
    f = open(path, "r+b")
    handles.append(mmap.mmap(f.fileno(), 0) if sys.argv[1] == "map" else f)
    if sys.argv[1] == "map":
        f.close()
print("ready", flush=True)
time.sleep(600)
"""


@pytest.fixture
def root(tmp_path: Path) -> Path:
    folder = tmp_path / "shm"
    folder.mkdir()
    for name in ("psm_aaaa1111", "psm_bbbb2222", "sem.mp-cccc", "psm_others", "other-app"):
        (folder / name).write_bytes(b"\0" * 4096)
    return folder


@pytest.fixture
def holders():
    started: list[subprocess.Popen] = []

    def hold(how: str, *paths: Path) -> subprocess.Popen:
        process = subprocess.Popen(
            [sys.executable, "-c", HOLDER, how, *map(str, paths)], stdout=subprocess.PIPE
        )
        assert process.stdout.readline().strip() == b"ready"
        started.append(process)
        return process

    yield hold
    for process in started:
        process.kill()
        process.wait()


def kill(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait()


def test_held_names_sees_open_and_mapped_entries(root, holders):
    opened = holders("open", root / "psm_aaaa1111")
    mapped = holders("map", root / "sem.mp-cccc")
    assert held_names(root, [opened.pid]) == {"psm_aaaa1111"}
    assert held_names(root, [mapped.pid]) == {"sem.mp-cccc"}
    assert {"psm_aaaa1111", "sem.mp-cccc"} <= held_names(root)


def test_entries_of_a_killed_engine_are_removed_and_nothing_else(root, holders, tmp_path):
    ledgers = tmp_path / "ledgers"
    engine = holders("map", root / "psm_aaaa1111", root / "sem.mp-cccc", root / "other-app")
    ledger = shm.record([engine.pid], root, ledgers)
    assert ledger is not None
    assert json.loads(ledger.read_text())["names"] == ["psm_aaaa1111", "sem.mp-cccc"]
    assert shm.clean(root, ledgers) == []  # the engine still runs: nothing is touched
    kill(engine)
    assert shm.clean(root, ledgers) == ["psm_aaaa1111", "sem.mp-cccc"]
    assert sorted(p.name for p in root.iterdir()) == ["other-app", "psm_bbbb2222", "psm_others"]
    assert not ledger.exists()


def test_an_entry_another_process_still_holds_is_kept(root, holders, tmp_path):
    ledgers = tmp_path / "ledgers"
    engine = holders("open", root / "psm_aaaa1111", root / "psm_bbbb2222")
    ledger = shm.record([engine.pid], root, ledgers)
    reader = holders("map", root / "psm_bbbb2222")
    kill(engine)
    assert shm.clean(root, ledgers) == ["psm_aaaa1111"]
    assert (root / "psm_bbbb2222").exists()
    assert not ledger.exists()  # its engine is gone: the ledger is done with
    kill(reader)


def test_clean_only_one_ledger(root, holders, tmp_path):
    ledgers = tmp_path / "ledgers"
    first = holders("open", root / "psm_aaaa1111")
    second = holders("open", root / "psm_bbbb2222")
    first_ledger = shm.record([first.pid], root, ledgers)
    shm.record([second.pid], root, ledgers)
    kill(first)
    kill(second)
    assert shm.clean(root, ledgers, only=first_ledger) == ["psm_aaaa1111"]
    assert (root / "psm_bbbb2222").exists()
    assert shm.clean(root, ledgers) == ["psm_bbbb2222"]


def test_record_adds_to_an_engines_ledger(root, holders, tmp_path):
    ledgers = tmp_path / "ledgers"
    engine = holders("open", root / "psm_aaaa1111")
    worker = holders("open", root / "sem.mp-cccc")
    shm.record([engine.pid], root, ledgers)
    path = shm.record([engine.pid, worker.pid], root, ledgers)
    [ledger] = shm.read_ledgers(ledgers)
    assert ledger.path == path
    assert set(ledger.owners) == {engine.pid, worker.pid}
    assert ledger.names == ("psm_aaaa1111", "sem.mp-cccc")


def test_nothing_to_record_writes_no_ledger(root, holders, tmp_path):
    idle = holders("open", root / "other-app")
    assert shm.record([idle.pid], root, tmp_path / "ledgers") is None
    assert not (tmp_path / "ledgers").exists()


def test_a_reused_process_id_does_not_keep_an_entry(root, holders, tmp_path):
    """The owner's id now belongs to another process (different start time): owner gone."""
    live = holders("open", root / "other-app")
    ledger = Ledger(tmp_path / "x.json", {live.pid: 1.0}, ("psm_aaaa1111",))
    assert shm.owners_gone(ledger)
    assert not shm.owners_gone(Ledger(ledger.path, {live.pid: shm.process_start(live.pid)}, ()))


def test_stale_names_selection():
    ledgers = [Ledger(Path("a"), {1: 1.0}, ("psm_a", "psm_b", "sem.mp-c"))]
    existing = {"psm_a", "psm_b", "psm_unlisted", "sem.mp-c"}
    assert stale_names(ledgers, existing, held={"psm_b"}) == {"psm_a", "sem.mp-c"}
    assert stale_names(ledgers, {"psm_unlisted"}, held=set()) == set()
    assert stale_names([], existing, held=set()) == set()


def test_foreign_or_corrupt_ledgers_are_ignored(root, tmp_path):
    ledgers = tmp_path / "ledgers"
    ledgers.mkdir()
    (ledgers / "broken.json").write_text("{not json")
    (ledgers / "shape.json").write_text(json.dumps({"owners": [], "names": "psm_aaaa1111"}))
    # a name outside vLLM's prefixes is never trusted, even from a ledger
    (ledgers / "other.json").write_text(json.dumps({"owners": {}, "names": ["other-app"]}))
    assert shm.clean(root, ledgers) == []
    assert (root / "other-app").exists() and (root / "psm_aaaa1111").exists()


# An engine-like child of a process shares its resource tracker: the shared memory and the
# semaphore it creates are registered there. Killed, it leaves both behind.
ENGINE_CHILD = r"""
import multiprocessing, os, signal, sys, time
from multiprocessing import shared_memory
from pathlib import Path

from harness.backends import shm


def engine(connection):
    memory = shared_memory.SharedMemory(create=True, size=4096)
    lock = multiprocessing.get_context("spawn").Lock()
    connection.send(memory.name)
    time.sleep(600)


if __name__ == "__main__":
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe()
    process = context.Process(target=engine, args=(sender,))
    process.start()
    receiver.recv()
    ledger = shm.record([process.pid], folder=Path(sys.argv[1]))
    os.kill(process.pid, signal.SIGKILL)
    process.join()
    print(" ".join(shm.clean(folder=Path(sys.argv[1]), only=ledger, forget=sys.argv[2] == "1")))
"""


@pytest.mark.skipif(not shm.SHM_ROOT.is_dir(), reason="no /dev/shm")
@pytest.mark.parametrize("forget", [True, False])
def test_removed_entries_are_forgotten_by_the_resource_tracker(tmp_path, forget):
    """Without `forget`, the tracker the killed engine shared warns at exit about entries
    the cleanup removed (a line after the harness's last word)."""
    script = tmp_path / "engine_child.py"
    script.write_text(ENGINE_CHILD)
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "ledgers"), "1" if forget else "0"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).parents[1],
    )
    removed = result.stdout.split()
    assert sorted(n.split("_")[0].split("-")[0] for n in removed) == ["psm", "sem.mp"]
    assert not any((shm.SHM_ROOT / name).exists() for name in removed)
    assert ("resource_tracker" in result.stderr) is not forget, result.stderr
