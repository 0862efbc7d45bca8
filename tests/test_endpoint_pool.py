"""Endpoint pools against real loopback HTTP servers (in threads): requests spread by least
outstanding, a stopped endpoint's requests move to the others, it rejoins when it answers
again, every endpoint down stops the stage with the answers so far, a 4xx stays the request's
own, the cache key names no endpoint, the profile is checked, the stats reach the report."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from rich.console import Console

from harness.backends import create_backend
from harness.backends import endpoints as endpoints_module
from harness.backends.base import BackendGone, RunContext
from harness.backends.cache import cache_key
from harness.backends.endpoints import EndpointPoolBackend
from harness.backends.openai_api import OpenAIBackend
from harness.config import ConfigError, RoleConfig, load_config
from harness.offline import OfflineError
from harness.report import build_sections, print_summary, render_markdown
from harness.roles import Role
from harness.runstate import RunPaths
from harness.summary_schema import Summary

from .conftest import verdict_requests
from .fakes import FakeOpenAIServer, yes_to_everything


class Endpoint(FakeOpenAIServer):
    """The fake OpenAI server that can be stopped and started again on the same port. Each
    chat request sleeps `delay_s`, then answers a verdict of "yes" to every criterion, or the
    status `status()` says. `received` counts chat requests, `busy` the most at once."""

    def __init__(self, delay_s: float = 0.05) -> None:
        self.delay_s = delay_s
        self.status: Callable[[], int] = lambda: 200
        self.received = 0
        self.busy = self._running = 0
        self._lock = threading.Lock()
        super().__init__(self._answer)

    @property
    def url(self) -> str:
        return self.base_url

    def stop(self) -> None:
        self.close()

    def _answer(self, body: dict[str, Any]) -> str | int:
        with self._lock:
            self.received += 1
            self._running += 1
            self.busy = max(self.busy, self._running)
        try:
            time.sleep(self.delay_s)
            status = self.status()
            return yes_to_everything(body) if status == 200 else status
        finally:
            with self._lock:
                self._running -= 1


@pytest.fixture
def servers():
    started = [Endpoint() for _ in range(3)]
    yield started
    for server in started:
        server.stop()


@pytest.fixture(autouse=True)
def quick_probes(monkeypatch):
    monkeypatch.setattr(endpoints_module, "PROBE_INTERVAL_S", 0.05)


def pool_config(servers: list[Endpoint], **fields: Any) -> RoleConfig:
    return RoleConfig(backend="openai", model="m", base_url=[s.url for s in servers],
                      **{"concurrency": 2, "failover_wait_s": 1.0, **fields})  # fmt: skip


def pool_backend(servers: list[Endpoint], context: RunContext, **fields: Any) -> OpenAIBackend:
    backend = create_backend("verifier", pool_config(servers, **fields), context)
    assert isinstance(backend, EndpointPoolBackend)
    return backend


def by_url(backend: EndpointPoolBackend) -> dict[str, dict[str, Any]]:
    return {r["url"]: r for r in backend.stats_records()}


def test_requests_spread_by_least_outstanding(servers, context):
    backend = pool_backend(servers, context)
    with backend:
        completions = backend.generate(verdict_requests(60))
        assert [c.error for c in completions] == [None] * 60
        stats = by_url(backend)
    for server in servers:  # two at a time per endpoint, each a third of the work
        assert server.busy <= 2
        assert 15 <= server.received <= 25
        assert stats[server.url]["sent"] == stats[server.url]["answered"] == server.received
        assert stats[server.url]["latency_p50_s"] >= 0.05
    assert backend.workers() == 6


def test_an_endpoint_stopped_mid_batch_moves_its_requests(servers, context):
    victim = servers[0]
    victim.delay_s = 0.2  # two of its requests in flight when it stops

    def stop_after_two() -> None:
        while victim.received < 2:
            time.sleep(0.005)
        victim.stop()

    stopper = threading.Thread(target=stop_after_two)
    stopper.start()
    backend = pool_backend(servers, context)
    with backend:
        completions = backend.generate(verdict_requests(40))
        stopper.join()
        stats = by_url(backend)
    assert [c.error for c in completions] == [None] * 40  # every request answered
    dropped = stats[victim.url]
    assert dropped["taken_out"] == 1 and dropped["answered"] == 0
    assert dropped["moved"] == dropped["failed"] == dropped["sent"] >= 1
    assert dropped["events"][0]["event"] == "out"
    others = [stats[s.url] for s in servers[1:]]
    assert sum(o["answered"] for o in others) == 40
    assert all(o["moved"] == 0 and o["taken_out"] == 0 for o in others)


def test_an_endpoint_rejoins_when_it_answers_again(servers, context):
    victim = servers[0]
    victim.stop()
    backend = pool_backend(servers, context)
    with backend:
        backend.generate(verdict_requests(12))
        assert by_url(backend)[victim.url]["taken_out"] == 1
        victim.start()  # the same port
        deadline = time.monotonic() + 5
        while by_url(backend)[victim.url]["rejoined"] == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        received = victim.received
        completions = backend.generate(verdict_requests(12))
        events = by_url(backend)[victim.url]["events"]
    assert [c.error for c in completions] == [None] * 12
    assert [e["event"] for e in events] == ["out", "rejoined"]
    assert "ConnectError" in events[0]["reason"]
    assert victim.received - received >= 3  # back in rotation


def test_a_dropped_connection_does_not_take_an_endpoint_out(servers, context):
    dropped: list[int] = []

    def drop_one(body: dict[str, Any]) -> str | None:
        if not dropped:
            dropped.append(1)
            return None  # as a keep-alive connection closed just as the request arrives
        return yes_to_everything(body)

    servers[0].reply = drop_one
    with pool_backend(servers, context, max_attempts=1) as backend:
        completions = backend.generate(verdict_requests(12))
        stats = by_url(backend)
    assert dropped and [c.error for c in completions] == [None] * 12
    assert all(r["taken_out"] == r["failed"] == r["moved"] == 0 for r in stats.values())
    assert sum(r["answered"] for r in stats.values()) == 12


def test_every_endpoint_down_stops_with_the_answers_so_far(servers, context):
    config_fields = {"failover_wait_s": 0.5, "concurrency": 1}
    backend = pool_backend(servers[:2], context, **config_fields)

    def stop_both_after_four() -> None:
        while servers[0].received + servers[1].received < 4:
            time.sleep(0.005)
        servers[0].stop()
        servers[1].stop()

    stopper = threading.Thread(target=stop_both_after_four)
    stopper.start()
    started = time.monotonic()
    with backend, pytest.raises(BackendGone) as gone:
        backend.generate(verdict_requests(30))
    stopper.join()
    message = str(gone.value)
    assert "every endpoint of the pool is out" in message and "rerun to resume" in message
    assert servers[0].url in message and servers[1].url in message
    assert "failover_wait_s" in message
    assert "ConnectError" in message or "RemoteProtocolError" in message
    assert 1 <= len(gone.value.finished) <= 4
    assert all(c.error is None and c.parsed for c in gone.value.finished.values())
    assert time.monotonic() - started < 5


def test_a_4xx_is_the_requests_own_and_a_5xx_moves(servers, context):
    rejecting, failing, _healthy = servers
    rejecting.status = lambda: 400
    failing.status = lambda: 503
    backend = pool_backend(servers, context, max_attempts=1)
    with backend:
        completions = Role("verifier", backend.config, backend).generate(verdict_requests(30))
        stats = by_url(backend)
    rejected = stats[rejecting.url]
    assert rejected["rejected"] == rejected["sent"] == rejecting.received >= 1
    assert rejected["moved"] == 0 and rejected["taken_out"] == 0  # it stays in rotation
    assert sum(c.error is not None for c in completions) == rejected["rejected"]
    assert all("400" in c.error for c in completions if c.error)
    # its health probe answers, so it rejoins and is taken out again: each request at most once
    assert stats[failing.url]["taken_out"] >= 1
    assert stats[failing.url]["moved"] == stats[failing.url]["sent"] >= 1
    assert stats[failing.url]["events"][0]["reason"] == "HTTP 503"


def test_identity_and_cache_keys_name_no_endpoint(servers, context):
    one = pool_backend(servers[:2], context)
    other = pool_backend(servers[1:], context)
    single = OpenAIBackend("verifier", RoleConfig(backend="openai", model="m",
                                                  base_url=servers[0].url), context)  # fmt: skip
    with one, other, single:
        assert one.identity() == other.identity()
        assert not any(s.url in json.dumps(one.identity()) for s in servers)
        [request] = verdict_requests(1)
        assert cache_key(one.identity(), request) == cache_key(other.identity(), request)
        assert single.identity()["base_url"] == servers[0].url  # one URL: as it always was
        assert {k: v for k, v in single.identity().items() if k != "base_url"} == one.identity()


def test_a_list_of_one_url_is_that_url(servers, context):
    config = RoleConfig(backend="openai", model="m", base_url=[servers[0].url])
    with create_backend("verifier", config, context) as backend:
        assert type(backend) is OpenAIBackend
        assert backend.identity()["base_url"] == servers[0].url


@pytest.mark.parametrize(
    ("base_url", "message"),
    [
        ([], "an empty list"),
        (["http://127.0.0.1:1/v1", "http://127.0.0.1:2/v1", "http://127.0.0.1:1/v1"],
         r"base_url\[2\] repeats base_url\[0\]"),
        (["http://127.0.0.1:1/v1", " "], r"base_url\[1\] is empty"),
    ],
)  # fmt: skip
def test_the_profile_names_a_bad_endpoint_list(tmp_path, base_url, message):
    profile = tmp_path / "pool.yaml"
    role = {"backend": "openai", "model": "m", "base_url": base_url}
    profile.write_text(f"runs_dir: {tmp_path}\nroles:\n  verifier: {json.dumps(role)}\n")
    with pytest.raises(ConfigError, match=message) as error:
        load_config(profile)
    assert "roles.verifier" in str(error.value) and "base_url" in str(error.value)


def test_a_remote_endpoint_in_a_pool_is_refused_offline(context):
    remote = ["http://127.0.0.1:1/v1", "http://203.0.113.7:8000/v1"]
    config = RoleConfig(backend="openai", model="m", base_url=remote)
    with pytest.raises(OfflineError, match=r"roles\.verifier\.base_url\[1\]: http://203\.0"):
        create_backend("verifier", config, context)
    online = RunContext(run_dir=context.run_dir, offline=False)
    create_backend("verifier", config, online).close()  # allowed online


def test_the_stats_reach_the_run_folder_and_the_report(servers, context, tmp_path):
    servers[0].stop()
    with pool_backend(servers, context) as backend:
        backend.generate(verdict_requests(9))
    path = RunPaths(context.run_dir).endpoint_stats_path
    assert path == context.run_dir / "stats" / "endpoints.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["url"] for r in records] == [s.url for s in servers]
    assert {r["role"] for r in records} == {"verifier"}
    assert sum(r["answered"] for r in records) == 9
    assert records[0]["taken_out"] == 1 and records[0]["moved"] >= 1
    text = path.read_text()
    assert "Response 0" not in text and "yes" not in text  # no request or answer text

    from harness.report.summary import _endpoint_rows

    summary = Summary(endpoints=_endpoint_rows(path))
    markdown = render_markdown(summary, build_sections(summary))
    assert "## Endpoints" in markdown and servers[0].url in markdown
    assert "out at" in markdown and "ConnectError" in markdown
    console = Console(record=True, width=200)
    print_summary(summary, console)
    out = console.export_text()
    assert "Endpoints" in out and f"{servers[1].port}" in out
    plain = Summary()  # a run without a pool: no section, no table
    assert "Endpoints" not in render_markdown(plain, build_sections(plain))
    console = Console(record=True, width=200)
    print_summary(plain, console)
    assert "Endpoints" not in console.export_text()
