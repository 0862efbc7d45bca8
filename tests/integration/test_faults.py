"""Fault injection through the real CLI.

- A whole `harness verify` run killed with SIGKILL (its process group) at several seeded random
  moments across every stage, each kill followed by a rerun: the records end byte-identical to
  an uninterrupted run's, none lost or doubled. Scripted roles (`rule: synthetic`, slowed by
  `delay_s`) make a run take seconds, so many kills fit.
- A served tiny verifier (vllm-server) killed mid-verify: the command exits non-zero with one
  line, the stage is not marked done, and the rerun (a new server) ends with the records of an
  uninterrupted run, reusing the answers given before the kill. HTTP_PROXY, HTTPS_PROXY and
  ALL_PROXY point at a listener all along, which must receive nothing.
- A `harness eval` killed with SIGKILL (its process group) while its train stage trains (the
  trainer, `python -m harness train`, runs in a session of its own): no process of the run
  outlives it, and the rerun resumes training from its last checkpoint, with the records of an
  uninterrupted run up to there and every step once.

Counts and times are printed (`pytest -s`).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from harness.backends.base import Backend, BackendGone, RunContext
from harness.config import RoleConfig
from harness.models.manifest import PROJECT_ROOT
from harness.stages import RUBRIC_STAGES

from ..conftest import verdict_requests
from ..fakes import ProxyListener

pytestmark = pytest.mark.integration
RECORD_FILES = ["prompts.jsonl", "candidates.jsonl", "rubrics.jsonl", "refine.jsonl",
                "verdicts.jsonl", "rewards.jsonl", "skipped.jsonl"]  # fmt: skip
NUM_CHAINS = 3  # runs killed and resumed, each compared with the uninterrupted one
KILLS_PER_CHAIN = 3
SEED = 11
SECRET = "nurse:hunter2"
KILL_AFTER_ANSWERS = 10  # of the served verify stage's 96 requests

SCRIPTED = """
runs_dir: {runs}
rollouts: {{num_samples: 4}}
propose: {{min_criteria: 2, max_criteria: 4}}
refine: {{iterations: 2}}
roles:
  policy: {{backend: scripted, model: policy, rule: synthetic, delay_s: 0.02}}
  proposer: {{backend: scripted, model: proposer, rule: synthetic, delay_s: 0.02}}
  verifier: {{backend: scripted, model: verifier, rule: synthetic, delay_s: 0.02}}
"""
SERVED = """
runs_dir: {runs}
rollouts: {{num_samples: 8}}
propose: {{min_criteria: 2, max_criteria: 4}}
refine: {{iterations: 0}}
roles:
  policy: {{backend: scripted, model: policy, rule: synthetic}}
  proposer: {{backend: scripted, model: proposer, rule: synthetic}}
  verifier: {{backend: vllm-server, model: tiny-s, concurrency: 1,
             sampling: {{temperature: 0.0, max_tokens: 128}},
             engine: {{dtype: float32, enforce_eager: true, max_model_len: 2048}}}}
"""


def write_profile(folder: Path, template: str) -> Path:
    profile = folder / "profile.yaml"
    profile.write_text(template.format(runs=folder / "runs"))
    return profile


def command(profile: Path, run_name: str) -> list[str]:
    return [sys.executable, "-m", "harness", "verify", "-c", str(profile),
            "--set", f"run_name={run_name}"]  # fmt: skip


def done_stages(run_dir: Path) -> set[str]:
    path = run_dir / "stages.json"
    return set(json.loads(path.read_text())) if path.is_file() else set()


def assert_same_records(run_dir: Path, reference: Path, names: list[str]) -> None:
    for name in names:
        assert (run_dir / name).read_bytes() == (reference / name).read_bytes(), name
    verdicts = [json.loads(line) for line in (run_dir / "verdicts.jsonl").open()]
    keys = {(v["candidate_id"], v["rubric_version"], v["criterion_id"]) for v in verdicts}
    assert verdicts and len(keys) == len(verdicts)  # none doubled


def stage_seconds(run_dir: Path) -> dict[str, float]:
    return {k: v["seconds"] for k, v in json.loads((run_dir / "stages.json").read_text()).items()}


def kill_at_random_point(profile: Path, run_dir: Path, rng: random.Random,
                         remaining_s: float) -> str | None:  # fmt: skip
    """Start the run, wait until it is past start-up (its config.yaml is written), SIGKILL its
    process group at a random moment of the stage work left; the stage it hit, or None when
    the run finished first."""
    config = run_dir / "config.yaml"
    before = config.stat().st_mtime_ns if config.exists() else None
    process = subprocess.Popen(command(profile, run_dir.name), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    while process.poll() is None and (not config.exists() or config.stat().st_mtime_ns == before):
        time.sleep(0.01)
    try:
        process.wait(timeout=rng.uniform(0.0, remaining_s))
        return None
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    done = done_stages(run_dir)
    return next((s.name for s in RUBRIC_STAGES if s.name not in done), "after verify")


def test_sigkills_at_random_points_resume_to_identical_records(tmp_path):
    profile = write_profile(tmp_path, SCRIPTED)
    started = time.monotonic()
    straight = subprocess.run(command(profile, "straight"), capture_output=True, text=True,
                              timeout=300)  # fmt: skip
    straight_s = time.monotonic() - started
    assert straight.returncode == 0, straight.stderr[-3000:]
    reference = tmp_path / "runs" / "straight"
    seconds, rng = stage_seconds(reference), random.Random(SEED)
    hits: list[str] = []
    started = time.monotonic()
    for chain in range(NUM_CHAINS):
        run_dir = tmp_path / "runs" / f"killed-{chain}"
        for _ in range(KILLS_PER_CHAIN):
            left = sum(t for stage, t in seconds.items() if stage not in done_stages(run_dir))
            hit = kill_at_random_point(profile, run_dir, rng, left)
            if hit is None:
                break
            hits.append(hit)
        resumed = subprocess.run(command(profile, run_dir.name), capture_output=True, text=True,
                                 timeout=300)  # fmt: skip
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert_same_records(run_dir, reference, RECORD_FILES)
    print(
        f"\nfault injection: {len(hits)} SIGKILLs (stage running: {', '.join(hits)}); "
        f"{NUM_CHAINS} of {NUM_CHAINS} resumed runs identical to the uninterrupted one "
        f"({straight_s:.1f} s); kills and resumes took {time.monotonic() - started:.1f} s"
    )
    assert len(hits) >= NUM_CHAINS


def server_pid(log: Path, process: subprocess.Popen, timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        text = log.read_text() if log.exists() else ""
        if "server pid" in text and "Application startup complete" in text:
            return int(text.split("server pid ")[1].split()[0])
        time.sleep(0.2)
    raise AssertionError(f"the server did not start; see {log}")


def wait_for_answers(port: int, num: int, process: subprocess.Popen) -> None:
    """Until the server has answered `num` requests (its Prometheus counter), whatever the
    speed of this machine."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        text = opener.open(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        lines = [x for x in text.splitlines() if x.startswith("vllm:request_success_total")]
        if sum(float(x.rsplit(" ", 1)[1]) for x in lines) >= num:
            return
        time.sleep(0.05)
    raise AssertionError(f"the server did not answer {num} requests before the run ended")


def cached_answers(run_dir: Path) -> int:
    with sqlite3.connect(run_dir / "cache" / "completions.sqlite") as db:
        return int(db.execute("SELECT COUNT(*) FROM completions").fetchone()[0])


def test_a_killed_verifier_server_stops_the_stage_and_the_rerun_matches(tiny_models, tmp_path):
    profile = write_profile(tmp_path, SERVED)
    runs = tmp_path / "runs"
    with ProxyListener() as proxy:
        env = {**os.environ, **proxy.environment(SECRET)}
        started = time.monotonic()
        straight = subprocess.run(command(profile, "straight"), capture_output=True, text=True,
                                  timeout=600, env=env)  # fmt: skip
        straight_s = time.monotonic() - started
        assert straight.returncode == 0, straight.stderr[-3000:]
        assert straight.stderr.count("offline: ignoring") == 1

        harness = subprocess.Popen(command(profile, "killed"), stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip
        log = runs / "killed" / "logs" / "verifier-vllm-server.log"
        pid = server_pid(log, harness, 600)
        port = int(log.read_text().split("--port ")[1].split()[0])
        wait_for_answers(port, KILL_AFTER_ANSWERS, harness)  # requests go one at a time
        os.killpg(pid, signal.SIGKILL)
        _, stderr = harness.communicate(timeout=120)
        assert harness.returncode == 3, stderr[-3000:]
        assert "Traceback" not in stderr
        [line] = [x for x in stderr.splitlines() if x.startswith("error:")]
        assert line.startswith("error: verify stopped, not marked done: role 'verifier'")
        assert "killed by SIGKILL" in line and "rerun to resume" in line
        assert "verify" not in done_stages(runs / "killed")
        kept = cached_answers(runs / "killed")
        num_requests = json.loads((runs / "straight" / "stages.json").read_text())["verify"]
        assert 0 < kept < num_requests["model_calls"]

        rerun = subprocess.run(command(profile, "killed"), capture_output=True, text=True,
                               timeout=600, env=env)  # fmt: skip
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        assert proxy.connections == 0
    assert SECRET not in straight.stderr + stderr + rerun.stderr
    assert json.loads((runs / "killed" / "stages.json").read_text())["verify"]["cache_hits"] >= kept
    assert_same_records(runs / "killed", runs / "straight", RECORD_FILES)
    print(f"\nserved verifier killed mid-verify: {kept} of {num_requests['model_calls']} answers "
          f"kept, rerun identical; uninterrupted run {straight_s:.1f} s")  # fmt: skip


TRAINED = """
runs_dir: {runs}
data: {{max_prompts: 3}}
rollouts: {{num_samples: 2}}
propose: {{min_criteria: 2, max_criteria: 3}}
refine: {{iterations: 0}}
roles:
  policy: {{backend: scripted, model: tiny-s, rule: synthetic}}
  proposer: {{backend: scripted, model: proposer, rule: synthetic}}
  verifier:
    - {{name: synthetic, backend: scripted, model: verifier, rule: synthetic}}
    - {{name: keyword, backend: scripted, model: keyword-rule, rule: keyword, delay_s: 0.05}}
# a reward that varies (letters in the answer), so that the adapter learns; steps slowed by
# the verifier's delay, so that the kill lands between checkpoints; the keyword rule is the
# textbook hackable reward and the given rubrics' prompts have no responses to probe: no gate
train: {{verifier: keyword, rubrics: {rubrics}, hack_gate: "off", max_steps: 8, save_steps: 2,
         num_generations: 4, per_device_train_batch_size: 8, learning_rate: 0.3,
         max_completion_length: 16, warmup_ratio: 0.0, beta: 0.0, generation: transformers}}
eval: {{compare: false, train: true, judge: false, overoptimization: false, theory: false}}
"""
TRAIN_RECORDS = ["train/rewards.jsonl", "train/metrics.jsonl"]
TIMES = {"verifier_seconds", "step_time", "step_seconds"}  # differ from run to run


def eval_command(profile: Path, run_name: str) -> list[str]:
    return [sys.executable, "-m", "harness", "eval", "-c", str(profile),
            "--set", f"run_name={run_name}"]  # fmt: skip


class Descendants:
    """Every process `process` ever started, polled while it runs."""

    def __init__(self, process: subprocess.Popen) -> None:
        self.found: dict[int, psutil.Process] = {}
        self._process = process
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self) -> None:
        while self._process.poll() is None:
            with contextlib.suppress(psutil.Error):
                for child in psutil.Process(self._process.pid).children(recursive=True):
                    self.found.setdefault(child.pid, child)
            time.sleep(0.05)

    def trainer(self) -> psutil.Process | None:
        for process in list(self.found.values()):
            with contextlib.suppress(psutil.Error):
                if "harness train" in " ".join(process.cmdline()):
                    return process
        return None

    def running(self, timeout_s: float) -> list[str]:
        """Those still running after `timeout_s` (zombies are ended)."""
        _, still = psutil.wait_procs(list(self.found.values()), timeout=timeout_s)
        alive = []
        for process in still:
            with contextlib.suppress(psutil.Error):
                if process.status() != psutil.STATUS_ZOMBIE:
                    alive.append(f"{process.pid} {' '.join(process.cmdline())}")
        return alive


def test_a_sigkill_during_training_leaves_no_process_and_the_rerun_matches(tiny_models, tmp_path):
    rubrics = PROJECT_ROOT / "tests" / "data" / "keyword_rubrics.jsonl"
    profile = write_profile(tmp_path, TRAINED.replace("{rubrics}", str(rubrics)))
    runs = tmp_path / "runs"
    straight = subprocess.run(eval_command(profile, "straight"), capture_output=True, text=True,
                              timeout=600)  # fmt: skip
    assert straight.returncode == 0, straight.stderr[-3000:]

    harness = subprocess.Popen(eval_command(profile, "killed"), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    descendants = Descendants(harness)
    checkpoint = runs / "killed" / "train" / "checkpoints" / "checkpoint-2" / "trainer_state.json"
    deadline = time.monotonic() + 600
    while not checkpoint.is_file():
        assert harness.poll() is None and time.monotonic() < deadline, "no checkpoint-2"
        time.sleep(0.05)
    trainer = descendants.trainer()
    assert trainer is not None and os.getsid(trainer.pid) != harness.pid  # a session of its own
    os.killpg(harness.pid, signal.SIGKILL)
    harness.wait()
    assert descendants.running(timeout_s=60) == []
    assert "train" not in done_stages(runs / "killed")

    rerun = subprocess.run(eval_command(profile, "killed"), capture_output=True, text=True,
                           timeout=600)  # fmt: skip
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "resumed from checkpoint-" in rerun.stdout + rerun.stderr
    assert_same_records(runs / "killed", runs / "straight", RECORD_FILES)
    summary = json.loads((runs / "killed" / "train" / "summary.json").read_text())
    resumed = summary["resumed_from"]
    assert summary["steps"] == 8 and resumed >= 2 and summary["adapter_weights_changed"]
    # every step once; up to the checkpoint resumed from, the steps of the uninterrupted run
    # (after it, TRL's resumed data order is its own)
    for name in TRAIN_RECORDS:
        killed, straight = untimed(runs / "killed" / name), untimed(runs / "straight" / name)
        assert [row["step"] for row in killed] == list(range(1, 9)), name
        assert killed[:resumed] == straight[:resumed], name


def untimed(path: Path) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [{k: v for k, v in row.items() if k not in TIMES} for row in rows]


def test_a_dead_vllm_engine_is_backend_gone(tmp_path):
    from vllm.v1.engine.exceptions import EngineDeadError

    from harness.backends.vllm_engine import VLLMEngineBackend

    class DeadEngine:
        def chat(self, *args, **kwargs):
            raise EngineDeadError()

    backend = object.__new__(VLLMEngineBackend)
    Backend.__init__(backend, "verifier", RoleConfig(backend="vllm", model="tiny-s"),
                     RunContext(run_dir=tmp_path))  # fmt: skip
    backend.llm, backend._lora_ids = DeadEngine(), {}
    with pytest.raises(BackendGone, match="engine of tiny-s died mid-run"):
        backend.generate(verdict_requests(2))
