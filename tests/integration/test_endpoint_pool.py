"""An endpoint pool of two tiny vLLM servers on loopback, through the real CLI.

The servers are started once for the module (each start costs tens of seconds on CPU) by
this test, with the command line the harness gives its own servers. The verifier is an
`openai` role whose `base_url` lists both (the policy and proposer are scripted, to keep the
test cheap); it sends one request at a time per server, so each server's batch is one
request and the answers are those of a single server.

(a) the pool's records equal a run on one server; (b) one server killed (SIGKILL of its
process group) while verify runs: the run finishes, records equal, the stats and the report
show the endpoint taken out and its requests moved; (c) every server killed: the run stops
with one line (exit status 3, as for any backend gone), and after a server restarts the rerun
finishes with equal records. Figures (requests moved, time lost, test time) are printed
(`pytest -s`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from harness.backends.processes import start_server_process, stop_group, wait_healthy
from harness.backends.vllm_server import free_loopback_port, server_command
from harness.config import RoleConfig
from harness.models.manifest import resolve_model
from harness.offline import child_environment

from .test_faults import assert_same_records, done_stages

pytestmark = pytest.mark.integration
RECORD_FILES = ["prompts.jsonl", "candidates.jsonl", "rubrics.jsonl", "verdicts.jsonl",
                "rewards.jsonl", "skipped.jsonl"]  # fmt: skip
ENGINE = {"dtype": "float32", "enforce_eager": True, "max_model_len": 2048}
KILL_AFTER_ANSWERS = 4  # of the killed server's share of the verify stage (about 24)
PROFILE = """
runs_dir: {runs}
rollouts: {{num_samples: 4}}
propose: {{min_criteria: 2, max_criteria: 4}}
refine: {{iterations: 0}}
roles:
  policy: {{backend: scripted, model: policy, rule: synthetic}}
  proposer: {{backend: scripted, model: proposer, rule: synthetic}}
  verifier: {{backend: openai, model: tiny-s, base_url: {urls}, concurrency: 1,
             failover_wait_s: 5, sampling: {{temperature: 0.0, max_tokens: 128}}}}
"""


class Server:
    """A tiny vLLM server on a fixed loopback port, in a process group of its own."""

    def __init__(self, log: Path) -> None:
        self.port = free_loopback_port()
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None
        self.config = RoleConfig(backend="vllm-server", model="tiny-s", engine=ENGINE)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> None:
        command = server_command(resolve_model("tiny-s", offline=True), self.config, self.port)
        self.process = start_server_process(command, child_environment(True), self.log)

    def wait_healthy(self, timeout_s: float = 600) -> None:
        assert self.process is not None
        exit_code = wait_healthy(self.process, f"http://127.0.0.1:{self.port}", timeout_s)
        assert exit_code is None, self.log.read_text()

    def kill(self) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        stop_group(self.process.pid, grace_s=1)  # any worker left behind

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            stop_group(self.process.pid, grace_s=15, leader=self.process)


@pytest.fixture(scope="module")
def servers(tiny_models, tmp_path_factory):
    logs = tmp_path_factory.mktemp("servers")
    started = [Server(logs / f"server-{i}.log") for i in range(2)]
    try:
        for server in started:
            server.start()
        for server in started:
            server.wait_healthy()
        yield started
    finally:
        for server in started:
            server.stop()


def write_profile(folder: Path, name: str, urls: list[str]) -> Path:
    profile = folder / f"{name}.yaml"
    profile.write_text(PROFILE.format(runs=folder / "runs", urls=json.dumps(urls)))
    return profile


def verify(profile: Path, run_name: str) -> list[str]:
    return [sys.executable, "-m", "harness", "verify", "-c", str(profile),
            "--set", f"run_name={run_name}"]  # fmt: skip


def run(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=900)


def verify_seconds(run_dir: Path) -> float:
    return float(json.loads((run_dir / "stages.json").read_text())["verify"]["seconds"])


def served(port: int) -> int:
    """How many requests the server has answered since it started (its Prometheus counter)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    text = opener.open(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    lines = [x for x in text.splitlines() if x.startswith("vllm:request_success_total")]
    return int(sum(float(x.rsplit(" ", 1)[1]) for x in lines))


def first_to_answer(before: dict[Server, int], num: int, process: subprocess.Popen) -> Server:
    """The first server to answer `num` requests more than `before`, while `process` runs."""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and process.poll() is None:
        for server, count in before.items():
            if served(server.port) >= count + num:
                return server
        time.sleep(0.05)
    raise AssertionError(f"no server answered {num} requests before the run ended")


def endpoint_stats(run_dir: Path) -> list[dict]:
    path = run_dir / "stats" / "endpoints.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_an_endpoint_pool_fails_over_and_resumes(servers, tmp_path):
    started = time.monotonic()
    first, second = servers
    runs = tmp_path / "runs"
    single = write_profile(tmp_path, "single", [first.url])
    pool = write_profile(tmp_path, "pool", [first.url, second.url])

    # (a) the pool answers as one server does
    for profile, name in ((single, "single"), (pool, "pool")):
        result = run(verify(profile, name))
        assert result.returncode == 0, result.stderr[-3000:]
    assert_same_records(runs / "pool", runs / "single", RECORD_FILES)
    assert not (runs / "single" / "stats").exists()  # one URL: no pool, no stats
    shares = {r["url"]: r["answered"] for r in endpoint_stats(runs / "pool")}
    assert min(shares.values()) > 0, shares

    # (b) one server killed while verify runs: the other takes its requests. The one killed
    # is the first to answer a few requests of this run (least outstanding favours the faster)
    before = {server: served(server.port) for server in servers}
    harness = subprocess.Popen(verify(pool, "failover"), stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)  # fmt: skip
    victim = first_to_answer(before, KILL_AFTER_ANSWERS, harness)
    survivor = first if victim is second else second
    killed_at = time.monotonic()
    victim.kill()
    _, stderr = harness.communicate(timeout=900)
    after_kill_s = time.monotonic() - killed_at
    assert harness.returncode == 0, stderr[-3000:]
    assert_same_records(runs / "failover", runs / "single", RECORD_FILES)
    stats = {r["url"]: r for r in endpoint_stats(runs / "failover")}
    assert stats[victim.url]["taken_out"] == 1 and stats[victim.url]["moved"] >= 1
    assert stats[survivor.url]["taken_out"] == 0
    report = run([sys.executable, "-m", "harness", "report", str(runs / "failover")])
    assert report.returncode == 0, report.stderr[-3000:]
    markdown = (runs / "failover" / "report.md").read_text()
    assert "## Endpoints" in markdown and victim.url in markdown and "out at" in markdown
    lost_s = verify_seconds(runs / "failover") - verify_seconds(runs / "pool")

    # (c) every server killed: the stage stops with one line; a restarted server resumes it
    before = {server: served(server.port) for server in [survivor]}
    harness = subprocess.Popen(verify(pool, "down"), stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)  # fmt: skip
    first_to_answer(before, KILL_AFTER_ANSWERS, harness).kill()
    _, stderr = harness.communicate(timeout=300)
    assert harness.returncode == 3, stderr[-3000:]
    assert "Traceback" not in stderr
    [line] = [x for x in stderr.splitlines() if x.startswith("error:")]
    assert line.startswith("error: verify stopped, not marked done: role 'verifier': every ")
    assert first.url in line and second.url in line and "rerun to resume" in line
    assert "verify" not in done_stages(runs / "down")
    survivor.start()
    survivor.wait_healthy()
    rerun = run(verify(pool, "down"))
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert_same_records(runs / "down", runs / "single", RECORD_FILES)
    moved = stats[victim.url]["moved"]
    print(
        f"\nendpoint pool: verify {verify_seconds(runs / 'single'):.1f} s on one server, "
        f"{verify_seconds(runs / 'pool'):.1f} s on two; one killed mid-verify: {moved} "
        f"request(s) moved, verify {verify_seconds(runs / 'failover'):.1f} s ({lost_s:+.1f} s "
        f"against two servers; {after_kill_s:.1f} s from the kill to the end); all killed: "
        f"stopped, rerun identical; test {time.monotonic() - started:.1f} s after server start"
    )
