"""A backend that is gone is not an unscored verdict: the stage stops, is not marked done,
keeps what was answered, and the rerun finishes it. Per-request failures stay per request, and
a stage with too many unscored verdicts (`verify.max_unscored_share`) is not done either."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from harness.backends.base import BackendGone, RunContext
from harness.backends.cache import CachedBackend, CompletionCache
from harness.backends.openai_api import GONE_AFTER, RECONNECTS, OpenAIBackend
from harness.backends.scripted import synthetic_replies
from harness.config import RoleConfig, load_config
from harness.evaluation import run_through
from harness.roles import Role
from harness.types import ChatMessage, ChatRequest
from harness.verifier import UnscoredShareError

from .conftest import verdict_requests
from .fakes import FakeOpenAIServer, closed_port, yes_to_everything


def openai_verifier(port: int, **fields) -> str:
    """The YAML of an `openai` verifier role at a loopback port."""
    options = {"max_attempts": 1, **fields}
    extra = "".join(f", {k}: {v}" for k, v in options.items())
    return f"{{backend: openai, model: v, base_url: 'http://127.0.0.1:{port}/v1'{extra}}}"


def openai_config(port: int, **fields) -> RoleConfig:
    fields = {"max_attempts": 1, **fields}
    return RoleConfig(backend="openai", model="m", base_url=f"http://127.0.0.1:{port}/v1",
                      **fields)  # fmt: skip


def test_connection_refused_is_backend_gone(tmp_path):
    port = closed_port()
    started = time.monotonic()
    backend = OpenAIBackend("verifier", openai_config(port), RunContext(run_dir=tmp_path))
    with backend, pytest.raises(BackendGone, match=f"nothing answers at 127.0.0.1:{port}"):
        Role("verifier", backend.config, backend).generate(verdict_requests(20))
    assert time.monotonic() - started < 10


def test_a_server_that_dies_mid_batch_keeps_its_answers_for_the_rerun(tmp_path):
    context = RunContext(run_dir=tmp_path)
    requests = verdict_requests(10)
    holder: dict[str, FakeOpenAIServer] = {}

    def die_after_five(body: dict) -> str | None:
        if len(holder["server"].requests) <= 5:
            return yes_to_everything(body)
        threading.Thread(target=holder["server"].close).start()
        time.sleep(1.5)  # the listening socket is closed by now: a probe is refused
        return None

    holder["server"] = FakeOpenAIServer(die_after_five)
    port = holder["server"].port
    config = openai_config(port, concurrency=1)
    cache_path = tmp_path / "cache.sqlite"
    backend = CachedBackend(OpenAIBackend("verifier", config, context), CompletionCache(cache_path))
    with backend, pytest.raises(BackendGone) as gone:
        Role("verifier", config, backend).generate(requests)
    assert sorted(gone.value.finished) == [0, 1, 2, 3, 4]
    assert _cached_rows(cache_path) == 5

    with FakeOpenAIServer(port=port) as again:
        inner = OpenAIBackend("verifier", config, context)
        with CachedBackend(inner, CompletionCache(cache_path)) as backend:
            completions = Role("verifier", config, backend).generate(requests)
    assert [c.error for c in completions] == [None] * 10
    assert len(again.requests) == 5  # only the unanswered half is asked again


def _cached_rows(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return int(db.execute("SELECT COUNT(*) FROM completions").fetchone()[0])


def test_per_request_failures_stay_per_request(tmp_path):
    def picky(body: dict) -> str | int:
        text = body["messages"][-1]["content"]
        if text.startswith("Response 3:"):
            return 400
        if text.startswith("Response 4:"):
            return 500
        if text.startswith("Response 5:"):
            time.sleep(2)  # past the request timeout
        return yes_to_everything(body)

    with FakeOpenAIServer(picky) as server:
        config = openai_config(server.port, request_timeout_s=0.5)
        with OpenAIBackend("verifier", config, RunContext(run_dir=tmp_path)) as backend:
            completions = backend.generate(verdict_requests(8))
    errors = [c.error for c in completions]
    assert [i for i, e in enumerate(errors) if e] == [3, 4, 5]
    assert "BadRequestError" in errors[3] and "InternalServerError" in errors[4]
    assert "no answer within 0.5 s" in errors[5]


def test_every_connection_dropped_while_the_port_listens_is_gone(tmp_path):
    with FakeOpenAIServer(lambda body: None) as server:
        config = openai_config(server.port, concurrency=2)
        backend = OpenAIBackend("verifier", config, RunContext(run_dir=tmp_path))
        # gone after GONE_AFTER failures in a row, or sooner where the port probe itself is
        # reset (a busy machine's full accept queue); with two requests in flight, the other
        # one's failure can land before the backend gives up, so the count may be one more
        gone = rf"({GONE_AFTER}|{GONE_AFTER + 1}) requests in a row|nothing answers at 127\.0\.0\.1"
        with backend, pytest.raises(BackendGone, match=gone):
            backend.generate(verdict_requests(3 * GONE_AFTER))
    assert len(server.requests) < 3 * GONE_AFTER


def test_a_dropped_connection_on_a_live_endpoint_is_sent_again_at_once(tmp_path):
    def drop_the_first(body: dict) -> str | None:
        # no answer, as from a server closing a keep-alive connection as the request arrives
        return yes_to_everything(body) if len(server.requests) > 1 else None

    with FakeOpenAIServer(drop_the_first) as server:
        config = openai_config(server.port, concurrency=1)  # max_attempts 1: no role retry
        with OpenAIBackend("verifier", config, RunContext(run_dir=tmp_path)) as backend:
            completions = backend.generate(verdict_requests(3))
            assert backend._failures_in_a_row == 0  # not a step toward "gone"
    assert [c.error for c in completions] == [None] * 3
    assert len(server.requests) == 4


def test_reconnects_stop_once_the_endpoint_has_failed(tmp_path):
    """After a request failed every reconnect, the next ones are not sent again at once: an
    endpoint that drops every connection is gone after about GONE_AFTER requests."""
    with FakeOpenAIServer(lambda body: None) as server:
        config = openai_config(server.port, concurrency=1)
        backend = OpenAIBackend("verifier", config, RunContext(run_dir=tmp_path))
        with backend, pytest.raises(BackendGone, match=f"{GONE_AFTER} requests in a row"):
            backend.generate(verdict_requests(3 * GONE_AFTER))
    assert len(server.requests) == GONE_AFTER + RECONNECTS


def test_synthetic_replies_are_valid_and_repeatable():
    request = ChatRequest(messages=(ChatMessage(role="user", content="hi"),))
    text = synthetic_replies(request)
    assert text == synthetic_replies(request)
    assert text != synthetic_replies(request.model_copy(update={"sample_index": 1}))
    [verdicts] = verdict_requests(1)
    assert synthetic_replies(verdicts.model_copy(update={"schema_name": "judgement"})) is None


def write_profile(folder: Path, verifier: str, iterations: int = 1) -> Path:
    profile = folder / "profile.yaml"
    profile.write_text(f"""
runs_dir: {folder / "runs"}
run_name: r
data: {{max_prompts: 3}}
rollouts: {{num_samples: 3}}
propose: {{min_criteria: 2, max_criteria: 4}}
refine: {{iterations: {iterations}}}
roles:
  policy: {{backend: scripted, model: policy, rule: synthetic}}
  proposer: {{backend: scripted, model: proposer, rule: synthetic}}
  verifier: {verifier}
""")
    return profile


def done_stages(run_dir: Path) -> list[str]:
    return sorted(json.loads((run_dir / "stages.json").read_text()))


def test_a_verifier_that_is_gone_stops_the_stage_and_the_rerun_finishes(tmp_path):
    port = closed_port()
    profile = write_profile(tmp_path, openai_verifier(port))
    config = load_config(profile)
    with pytest.raises(BackendGone, match="refine stopped, not marked done: role 'verifier'"):
        run_through(config, "verify")
    assert done_stages(config.run_dir) == ["prompts", "propose", "rollouts"]
    assert (config.run_dir / "candidates.jsonl").is_file()
    with FakeOpenAIServer(port=port):
        results = run_through(config, "verify")
    assert [r.reused for r in results] == [True, True, True, False, False]
    assert done_stages(config.run_dir) == ["prompts", "propose", "refine", "rollouts", "verify"]
    verdicts = [json.loads(line) for line in (config.run_dir / "verdicts.jsonl").open()]
    assert verdicts and all(v["met"] is True for v in verdicts)


def harness(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True,
                          text=True, timeout=120, env=os.environ.copy())  # fmt: skip


def error_lines(stderr: str) -> list[str]:
    assert "Traceback" not in stderr, stderr[-3000:]
    return [line for line in stderr.splitlines() if line.startswith("error:")]


@pytest.mark.integration  # a subprocess harness run
def test_cli_exits_non_zero_with_one_line_when_the_verifier_is_gone(tmp_path):
    port = closed_port()
    profile = write_profile(tmp_path, openai_verifier(port), iterations=0)
    result = harness("verify", "-c", str(profile))
    assert result.returncode == 3
    [line] = error_lines(result.stderr)
    assert line.startswith("error: verify stopped, not marked done") and "rerun" in line
    assert "verify" not in done_stages(tmp_path / "runs" / "r")


@pytest.mark.integration  # a subprocess harness run
def test_too_many_unscored_verdicts_leave_the_stage_unfinished(tmp_path):
    failing = "{backend: scripted, model: v, replies: []}"  # no reply: every verdict unscored
    profile = write_profile(tmp_path, failing, iterations=0)
    result = harness("verify", "-c", str(profile))
    assert result.returncode == 4
    [line] = error_lines(result.stderr)
    assert re.search(r"error: verify: (\d+) of \1 verdicts unscored \(100%\)", line), line
    assert "verify.max_unscored_share 50%" in line
    run_dir = tmp_path / "runs" / "r"
    assert "verify" not in done_stages(run_dir)
    assert (run_dir / "verdicts.jsonl").is_file()  # kept to look at
    config = load_config(profile, ["verify.max_unscored_share=1.0"])
    [*_, verify] = run_through(config, "verify")
    assert not verify.reused and verify.counts["unscored"] == verify.counts["verdicts"]


def test_refine_does_not_rewrite_rubrics_from_unscored_verdicts(tmp_path):
    profile = write_profile(tmp_path, "{backend: scripted, model: v, replies: []}")
    config = load_config(profile)
    with pytest.raises(UnscoredShareError, match=r"refine iteration 1: .* unscored"):
        run_through(config, "verify")
    assert done_stages(config.run_dir) == ["prompts", "propose", "rollouts"]
    rubrics = [json.loads(line) for line in (config.run_dir / "rubrics.jsonl").open()]
    assert {r["version"] for r in rubrics} == {0}
    assert not list((config.run_dir / "refine").glob("*/iteration-1.json"))


def test_the_rerun_asks_again_for_unscored_verdicts_and_never_caches_errors(tmp_path):
    answers = {"valid": False}

    def garbage_first(body: dict) -> str:
        return yes_to_everything(body) if answers["valid"] else "not json"

    with FakeOpenAIServer(garbage_first) as server:
        profile = write_profile(tmp_path, openai_verifier(server.port, max_attempts=2),
                                iterations=0)  # fmt: skip
        config = load_config(profile)
        with pytest.raises(UnscoredShareError):
            run_through(config, "verify")
        assert _cached_rows(config.run_dir / "cache" / "completions.sqlite") == 0
        asked = len(server.requests)
        answers["valid"] = True
        [*_, verify] = run_through(config, "verify")
    assert verify.counts["unscored"] == 0
    assert len(server.requests) == asked + 9  # each of the 9 candidates asked once more


def test_a_killed_server_is_named_killed_even_when_its_port_closes_first(tmp_path):
    """SIGKILL closes the server's port a moment before its exit can be seen: the reason
    still says what happened to the server, not only that the port refuses."""
    from harness.backends.vllm_server import VLLMServerBackend

    server = object.__new__(VLLMServerBackend)  # the process and port of a started server
    server.process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    server.base_url = f"http://127.0.0.1:{closed_port()}/v1"
    server.log_path = tmp_path / "verifier-vllm-server.log"
    threading.Timer(0.5, server.process.kill).start()
    try:
        reason = server.gone_reason()
    finally:
        server.process.kill()
        server.process.wait()
    assert reason is not None and "killed by SIGKILL" in reason and "mid-run" in reason
