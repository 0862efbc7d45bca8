"""Interrupts and kills on real tiny engines: SIGTERM and Ctrl-C stop a CLI run mid-stage
(exit 143 / 130, one line with the command that resumes, no traceback, no process left) and
the same command then completes; a vLLM server whose main process, or whole process group,
is SIGKILLed leaves no engine process and no shared memory once the backend is closed; an
engine started next to another run's engine binds its threads to the cores that one left free."""

from __future__ import annotations

import json
import os
import shlex
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from harness.backends import RunContext, create_backend, processes, shm
from harness.backends.processes import group_members
from harness.config import RoleConfig
from harness.models.manifest import PROJECT_ROOT
from harness.types import Sampling

from ..conftest import verdict_requests

pytestmark = pytest.mark.integration
ENGINE = {"dtype": "float32", "enforce_eager": True, "max_model_len": 2048}
SAMPLE_PROMPTS = PROJECT_ROOT / "harness" / "data" / "sample_prompts.jsonl"


def write_profile(folder: Path, models: list[tuple[str, int]], num_samples: int) -> Path:
    rollouts = ", ".join(
        f"{{backend: vllm, model: {name}, engine: {json.dumps(ENGINE)}, "
        f"sampling: {{temperature: 1.0, max_tokens: {max_tokens}}}}}"
        for name, max_tokens in models
    )
    profile = folder / "profile.yaml"
    profile.write_text(
        f"runs_dir: {folder / 'runs'}\nrun_name: interrupted\n"
        f"data: {{prompts: {SAMPLE_PROMPTS}}}\n"
        f"rollouts: {{num_samples: {num_samples}, models: [{rollouts}]}}\n"
    )
    return profile


class Watched:
    """A `harness` command in its own process group, with every process it ever started
    (polled while it runs) and its stderr lines as they come."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        self.command = [sys.executable, "-m", "harness", *args]
        self.process = subprocess.Popen(
            self.command,
            cwd=PROJECT_ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )
        self.lines: list[str] = []
        self.descendants: dict[int, psutil.Process] = {}
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._watch, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stderr:
            self.lines.append(line.rstrip("\n"))

    def _watch(self) -> None:
        while self.process.poll() is None:
            try:
                for child in psutil.Process(self.process.pid).children(recursive=True):
                    self.descendants.setdefault(child.pid, child)
            except psutil.Error:
                return
            time.sleep(0.1)

    def titles(self) -> list[str]:
        titles = []
        for process in list(self.descendants.values()):
            try:
                titles.append(" ".join(process.cmdline()))
            except psutil.Error:
                continue
        return titles

    def wait_for(self, ready, timeout_s: float = 300) -> None:
        deadline = time.monotonic() + timeout_s
        while not ready():
            assert self.process.poll() is None, "\n".join(self.lines[-30:])
            assert time.monotonic() < deadline, "the run never reached the point to interrupt"
            time.sleep(0.1)

    def stop_with(self, signum: int, group: bool) -> float:
        started = time.monotonic()
        if group:  # as a terminal's Ctrl-C: every process of the foreground group
            os.killpg(self.process.pid, signum)
        else:
            self.process.send_signal(signum)
        self.process.wait(timeout=120)
        time.sleep(0.5)  # the stderr reader catches up
        return time.monotonic() - started

    def left_running(self) -> list[str]:
        """Processes of the run still running a few seconds after it exited (the resource
        tracker, say, exits once the harness is gone)."""
        _, still = psutil.wait_procs(list(self.descendants.values()), timeout=5)
        alive = []
        for process in still:
            try:
                if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                    alive.append(f"{process.pid} {' '.join(process.cmdline())}")
            except psutil.Error:
                continue
        return alive


def cached_answers(run_dir: Path) -> int:
    path = run_dir / "cache" / "completions.sqlite"
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1) as db:
            return db.execute("select count(*) from completions").fetchone()[0]
    except sqlite3.Error:
        return 0


def assert_clean_interrupt(run: Watched, name: str, code: int) -> list[str]:
    """Exit code, one line naming the signal and the resume command, no traceback, no
    process of the run left; returns the resume command."""
    text = "\n".join(run.lines)
    assert run.process.returncode == code, text[-3000:]
    assert "Traceback" not in text and "EngineDeadError" not in text, text[-3000:]
    assert "could not load" not in text
    [line] = [line for line in run.lines if "interrupted" in line]
    assert line.startswith(f"interrupted ({name}): ")
    assert run.left_running() == []
    resume = shlex.split(line.split("resume with: ", 1)[1])
    assert resume[-3:] == run.command[-3:]  # rollouts -c PROFILE
    return resume


def assert_rerun_completes(resume: list[str], run_dir: Path, num_candidates: int) -> None:
    rerun = subprocess.run(resume, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    stages = json.loads((run_dir / "stages.json").read_text())
    assert "rollouts" in stages
    assert len((run_dir / "candidates.jsonl").read_text().split("\n")[:-1]) == num_candidates


def test_sigterm_while_the_engine_starts(tiny_models, tmp_path):
    """SIGTERM to the harness while its engine loads the model (vLLM's start-up code swallows
    a KeyboardInterrupt: the interrupt must win all the same)."""
    profile = write_profile(tmp_path, [("tiny-s", 24)], num_samples=2)
    run = Watched(["rollouts", "-c", str(profile)])
    run.wait_for(lambda: any("VLLM::Worker" in title for title in run.titles()))
    seconds = run.stop_with(signal.SIGTERM, group=False)
    resume = assert_clean_interrupt(run, "SIGTERM", 143)
    # Python's resource tracker may warn about a semaphore after the harness has exited: its
    # words, not the harness's
    last = [line for line in run.lines if line.strip() and "resource_tracker" not in line
            and not line.strip().startswith("warnings.warn(")][-1]  # fmt: skip
    assert last.startswith("interrupted (SIGTERM)"), "\n".join(run.lines[-20:])  # the last word
    assert seconds < 30
    assert_rerun_completes(resume, tmp_path / "runs" / "interrupted", 12 * 2)


def test_ctrl_c_mid_generation(tiny_models, tmp_path):
    """SIGINT to the whole process group, as a terminal sends it, while the engine generates:
    the engine processes do not die first, the harness stops them."""
    profile = write_profile(tmp_path, [("tiny-s", 256)], num_samples=16)
    run_dir = tmp_path / "runs" / "interrupted"
    run = Watched(["rollouts", "-c", str(profile)])
    # the completion cache is opened once the engine is up, just before it generates
    run.wait_for((run_dir / "cache" / "completions.sqlite").exists)
    time.sleep(2)
    assert cached_answers(run_dir) == 0  # still generating
    seconds = run.stop_with(signal.SIGINT, group=True)
    resume = assert_clean_interrupt(run, "SIGINT", 130)
    assert seconds < 30
    assert_rerun_completes(resume, run_dir, 12 * 16)


def server_config() -> RoleConfig:
    return RoleConfig(backend="vllm-server", model="tiny-s", engine=ENGINE,
                      sampling=Sampling(max_tokens=64))  # fmt: skip


def test_server_whose_main_process_was_killed_leaves_no_engine(tiny_models, tmp_path):
    backend = create_backend("verifier", server_config(), RunContext(run_dir=tmp_path))
    pids = backend.process_ids()
    main, engines = pids[0], [psutil.Process(pid) for pid in pids[1:]]
    assert any("EngineCore" in " ".join(p.cmdline()) for p in engines)
    os.kill(main, signal.SIGKILL)
    time.sleep(2)
    assert all(p.is_running() for p in engines)  # orphaned, as in the failure report
    started = time.monotonic()
    backend.close()
    assert time.monotonic() - started < 30
    assert group_members(main) == []
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in engines)


def test_shared_memory_of_a_killed_server_is_removed_on_close(tiny_models, tmp_path):
    """SIGKILL to the server's whole group (its resource tracker too) leaks its shared
    memory; closing the backend removes exactly what its engine held."""
    backend = create_backend("verifier", server_config(), RunContext(run_dir=tmp_path))
    ledger = backend._shm_ledger
    assert ledger is not None, "the engine held no shared memory to record"
    [recorded] = [g for g in shm.read_ledgers(ledger.parent) if g.path == ledger]
    os.killpg(backend.pid, signal.SIGKILL)
    time.sleep(2)
    leaked = [name for name in recorded.names if (shm.SHM_ROOT / name).exists()]
    assert leaked, "nothing leaked: the test shows nothing"
    backend.close()
    assert not any((shm.SHM_ROOT / name).exists() for name in recorded.names)
    assert not ledger.exists()


# Another run on the same machine: an engine that stays up until SIGTERM. It is told that it
# is alone (other sessions may run engines on this machine), so vLLM pins it ("auto").
OTHER_RUN = """
import signal, sys, time
from pathlib import Path

from harness.backends import RunContext, create_backend, processes
from harness.config import RoleConfig

if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    processes.foreign_vllm_processes = lambda: []
    config = RoleConfig(backend="vllm", model="tiny-s", engine=%r)
    backend = create_backend("verifier", config, RunContext(run_dir=Path(sys.argv[1])))
    try:
        print("ready", flush=True)
        time.sleep(600)
    finally:
        backend.close()
"""


def pinned_cores(processes_: list[psutil.Process]) -> set[int]:
    """The cores to which threads of `processes_` are pinned (allowed on fewer cores than
    this process may use)."""
    allowed, cores = os.sched_getaffinity(0), set()
    for process in processes_:
        for task in Path(f"/proc/{process.pid}/task").iterdir():
            affinity = os.sched_getaffinity(int(task.name))
            if len(affinity) < len(allowed):
                cores |= affinity
    return cores


def workers(processes_: list[psutil.Process]) -> list[psutil.Process]:
    return [p for p in processes_ if "VLLM::Worker" in " ".join(p.cmdline())]


def test_an_engine_next_to_another_runs_engine_uses_other_cores(tiny_models, tmp_path, monkeypatch):
    """The other run's engine is pinned to the first core (its user's binding); ours takes
    the rest. Of the machine's vLLM processes only the other run's count (the test may share
    the machine with other sessions' engines); finding them by their titles is a unit test."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("one core: two engines cannot get cores of their own")
    script = tmp_path / "other_run.py"
    script.write_text(OTHER_RUN % ENGINE)
    environment = {**os.environ, processes.BIND_VARIABLE: str(cpus[0])}
    other = subprocess.Popen([sys.executable, str(script), str(tmp_path / "other")],
                             cwd=PROJECT_ROOT, stdout=subprocess.PIPE, text=True,
                             env=environment)  # fmt: skip
    try:
        assert other.stdout.readline().strip() == "ready"
        theirs = psutil.Process(other.pid).children(recursive=True)
        taken = pinned_cores(workers(theirs))
        assert taken == {cpus[0]}
        monkeypatch.setattr(processes, "foreign_vllm_processes", lambda: [p.pid for p in theirs])
        config = RoleConfig(backend="vllm", model="tiny-m", engine=ENGINE)
        backend = create_backend("verifier", config, RunContext(run_dir=tmp_path / "ours"))
        try:
            backend.generate(verdict_requests(4))
            ours = pinned_cores(workers(backend._engine))
        finally:
            backend.close()
        assert ours == set(cpus) - taken
    finally:
        other.terminate()
        other.wait(timeout=60)
