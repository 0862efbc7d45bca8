"""Every real backend on a real tiny model: 100 requests constrained to a 10-criterion verdict
schema must all parse and all end with finish_reason "stop" (a truncation cannot pass)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.backends import RunContext, create_backend
from harness.backends.base import BackendError
from harness.config import RoleConfig
from harness.roles import Role
from harness.types import Sampling

from ..conftest import CRITERION_IDS, assert_all_verdicts, pid_alive, verdict_requests

pytestmark = pytest.mark.integration
CPU_ENGINE = {"dtype": "float32", "enforce_eager": True, "max_model_len": 2048}


def role_config(backend: str, **fields) -> RoleConfig:
    fields = {"engine": CPU_ENGINE, "sampling": Sampling(max_tokens=256), **fields}
    return RoleConfig(backend=backend, model="tiny-s", **fields)


@pytest.fixture(scope="module")
def server(tiny_models, tmp_path_factory):
    context = RunContext(run_dir=tmp_path_factory.mktemp("server-run"))
    backend = create_backend("verifier", role_config("vllm-server"), context)
    yield backend
    backend.close()


def test_vllm_engine_answers_100_constrained_requests(tiny_models, context):
    backend = create_backend("verifier", role_config("vllm"), context)
    try:
        completions = Role("verifier", backend.config, backend).generate(verdict_requests(100))
        assert_all_verdicts(completions, 100)
        logprob_request = verdict_requests(1)[0].model_copy(
            update={"sampling": Sampling(max_tokens=256, logprobs=2)}
        )
        [with_logprobs] = backend.generate([logprob_request])
        assert len(with_logprobs.logprobs) == with_logprobs.completion_tokens
        unsupported = verdict_requests(1)[0].model_copy(update={"json_schema": {
            "type": "string", "pattern": "^a+$", "minLength": 2}})  # fmt: skip
        with pytest.raises(BackendError, match="another `grammar:`"):
            backend.generate([unsupported])
    finally:
        backend.close()


@pytest.mark.parametrize("grammar", ["guidance", "outlines"])
def test_vllm_engine_other_grammar_engines(tiny_models, context, grammar):
    backend = create_backend("verifier", role_config("vllm", grammar=grammar), context)
    try:
        assert_all_verdicts(backend.generate(verdict_requests(20)), 20)
    finally:
        backend.close()


def test_vllm_server_answers_100_constrained_requests(server):
    completions = Role("verifier", server.config, server).generate(verdict_requests(100))
    assert_all_verdicts(completions, 100)
    assert "server pid" in server.log_path.read_text()


def test_openai_backend_against_a_loopback_server(server, context):
    config = RoleConfig(backend="openai", model="tiny-s", base_url=server.base_url, concurrency=16)
    backend = create_backend("verifier", config, context)
    try:
        completions = backend.generate(verdict_requests(100))
        assert_all_verdicts(completions, 100)
        assert all(c.prompt_tokens > 0 and c.completion_tokens > 0 for c in completions)
    finally:
        backend.close()


def test_transformers_outlines_answers_100_constrained_requests(tiny_models, context):
    backend = create_backend("verifier", role_config("transformers", engine={}), context)
    try:
        assert_all_verdicts(backend.generate(verdict_requests(100)), 100)
    finally:
        backend.close()


def test_server_is_gone_after_close(tiny_models, context):
    backend = create_backend("verifier", role_config("vllm-server"), context)
    pid = backend.pid
    assert pid_alive(pid)
    backend.close()
    assert not pid_alive(pid)
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)  # no engine process of the server's group is left either


def write_profile(tmp_path: Path, backend: str) -> Path:
    profile = tmp_path / "profile.yaml"
    profile.write_text(
        f"runs_dir: {tmp_path / 'runs'}\nrun_name: cli\nroles:\n  verifier:\n"
        f"    backend: {backend}\n    model: tiny-s\n    sampling: {{max_tokens: 256}}\n"
        f"    engine: {json.dumps(CPU_ENGINE)}\n"
    )
    return profile


def write_requests(tmp_path: Path, num: int) -> Path:
    path = tmp_path / "requests.jsonl"
    lines = [
        r.model_dump_json(include={"id", "messages", "json_schema", "schema_name"})
        for r in verdict_requests(num)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def harness_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "harness", *args]


def test_generate_command_writes_schema_valid_outputs(tiny_models, tmp_path):
    profile, requests = write_profile(tmp_path, "vllm"), write_requests(tmp_path, 20)
    result = subprocess.run(
        harness_command("generate", "-c", str(profile), "--input", str(requests), "--samples", "2"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = tmp_path / "runs" / "cli"
    rows = [json.loads(line) for line in (run_dir / "generate" / "verifier.jsonl").open()]
    assert len(rows) == 40
    assert {(r["id"], r["sample_index"]) for r in rows} == {
        (f"r{i}", k) for i in range(20) for k in (0, 1)
    }
    assert all(
        r["finish_reason"] == "stop" and set(r["parsed"]) == set(CRITERION_IDS) for r in rows
    )
    assert "backend: vllm" in (run_dir / "config.yaml").read_text()


def test_interrupting_the_harness_stops_its_server(tiny_models, tmp_path):
    profile, requests = write_profile(tmp_path, "vllm-server"), write_requests(tmp_path, 5000)
    harness = subprocess.Popen(
        harness_command("generate", "-c", str(profile), "--input", str(requests)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        # as typed in a terminal: a runner started in the background ignores Ctrl-C, and its
        # children would inherit that
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        _interrupt_and_check(harness, tmp_path)
    finally:
        if harness.poll() is None:
            harness.kill()
            harness.communicate()


def _interrupt_and_check(harness: subprocess.Popen, tmp_path) -> None:
    log = tmp_path / "runs" / "cli" / "logs" / "verifier-vllm-server.log"
    server_pid = None
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and harness.poll() is None:
        text = log.read_text() if log.exists() else ""
        if "server pid" in text and "Application startup complete" in text:
            server_pid = int(text.split("server pid ")[1].split()[0])
            break
        time.sleep(0.5)
    assert server_pid is not None, "the server did not start"
    time.sleep(2)  # let requests flow
    harness.send_signal(signal.SIGINT)
    _, stderr = harness.communicate(timeout=120)
    assert harness.returncode == 130, stderr[-2000:]
    assert "interrupted" in stderr
    assert not pid_alive(server_pid)
