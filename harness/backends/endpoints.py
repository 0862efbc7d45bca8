"""Endpoint pools: one role served by several OpenAI-compatible endpoints of the same model.

A role whose `base_url` lists two or more URLs gets an `EndpointPoolBackend`. Each request
goes to the endpoint in rotation with the fewest requests outstanding (ties: the one sent
fewest), at most `concurrency` at a time per endpoint (the thread pool holds concurrency x
endpoints). A request that fails on an endpoint by a connection error, a timeout
(`request_timeout_s`) or a 5xx takes that endpoint out of rotation and is re-sent at once on
another endpoint, at most once per endpoint (a connection error on an endpoint in rotation is
first sent again at once on that endpoint, as for one endpoint: a closed keep-alive connection
does not take it out); a request that fails on every endpoint comes back
as a failed completion (the role's own retries apply; in the end it is unscored, never "no").
A 4xx is the request's own error: it is not re-sent elsewhere and the endpoint stays in.

A monitor thread probes the endpoints that are out (`GET <base_url>/models`, a short timeout,
no proxy for loopback) every `PROBE_INTERVAL_S` and puts back those that answer. When every
endpoint is out and none comes back within `failover_wait_s`, `BackendGone` names each
endpoint and why it is out, with the answers obtained so far: the stage stops unfinished and
a rerun resumes it.

The pool's identity (the completion cache key) carries no URL: an answer is the same whichever
endpoint gave it. When the backend closes it appends one line per endpoint to
RUN/stats/endpoints.jsonl: role, model, url, requests sent, answered, rejected (4xx), failed,
moved (failed there and re-sent elsewhere), times taken out and rejoined with the reasons,
latency p50/p95. No request or answer text is ever logged or recorded.
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from harness.backends.base import Backend, BackendError, BackendGone, RunContext
from harness.backends.openai_api import (
    OpenAIBackend,
    endpoint_fault,
    refuses_the_client,
    request_error,
    send,
)
from harness.config import RoleConfig
from harness.metrics import percentile
from harness.offline import is_loopback_url
from harness.runstate import RunPaths
from harness.types import ChatRequest, Completion, failed_completion

PROBE_INTERVAL_S = 2.0  # how often the endpoints that are out are probed
PROBE_TIMEOUT_S = 2.0
FULL_WAIT_S = 1.0  # how long a request waits at most before it looks again for a free slot


@dataclass
class EndpointStats:
    sent: int = 0
    answered: int = 0
    rejected: int = 0  # 4xx: the request's own error
    failed: int = 0  # connection error, timeout, 5xx
    moved: int = 0  # failed here and re-sent on another endpoint
    events: list[dict[str, Any]] = field(default_factory=list)  # taken out / rejoined
    latencies: list[float] = field(default_factory=list, repr=False)


@dataclass
class Endpoint:
    url: str
    client: Any  # openai.OpenAI
    outstanding: int = 0
    out_reason: str | None = None  # None while in rotation
    stats: EndpointStats = field(default_factory=EndpointStats)


class EndpointPool:
    """Which endpoint a request goes to, which ones are out and why, and the monitor thread
    that puts them back. `probe(url)` says whether an endpoint answers again."""

    def __init__(
        self,
        endpoints: list[Endpoint],
        per_endpoint: int,
        failover_wait_s: float,
        probe: Callable[[str], bool],
        name: str,
    ) -> None:
        self.endpoints = endpoints
        self.per_endpoint = per_endpoint
        self.failover_wait_s = failover_wait_s
        self.name = name
        self.started = time.monotonic()
        self._probe = probe
        self._changed = threading.Condition()
        self._all_out_since: float | None = None
        self._stop = threading.Event()
        self._monitor = threading.Thread(target=self._watch, name=f"{name} monitor", daemon=True)
        self._monitor.start()

    def acquire(self, tried: set[str], moved_from: Endpoint | None = None) -> Endpoint | None:
        """The endpoint for a request's next try (its slot taken), or None when every endpoint
        in rotation has had it. With every endpoint out, waits for one to rejoin, at most
        `failover_wait_s` after the last one went out; then raises BackendGone."""
        with self._changed:
            while True:
                live = [e for e in self.endpoints if e.out_reason is None]
                if not live:
                    self._wait_for_rejoin()
                    continue
                untried = [e for e in live if e.url not in tried]
                if not untried:
                    return None
                free = [e for e in untried if e.outstanding < self.per_endpoint]
                if not free:
                    self._changed.wait(FULL_WAIT_S)
                    continue
                chosen = min(free, key=lambda e: (e.outstanding, e.stats.sent))
                chosen.outstanding += 1
                chosen.stats.sent += 1
                if moved_from is not None:
                    moved_from.stats.moved += 1
                return chosen

    def _wait_for_rejoin(self) -> None:
        assert self._all_out_since is not None
        left = self._all_out_since + self.failover_wait_s - time.monotonic()
        if left <= 0:
            raise BackendGone(self.gone_message())
        self._changed.wait(left)

    def gone_message(self) -> str:
        out = "; ".join(f"{e.url} ({e.out_reason})" for e in self.endpoints)
        return (
            f"{self.name}: every endpoint of the pool is out and none came back within "
            f"{self.failover_wait_s:g} s (failover_wait_s): {out}; rerun to resume"
        )

    def answered(self, endpoint: Endpoint, latency_s: float | None) -> None:
        """The endpoint answered (latency given) or rejected the request (4xx, None)."""
        with self._changed:
            endpoint.outstanding -= 1
            if latency_s is None:
                endpoint.stats.rejected += 1
            else:
                endpoint.stats.answered += 1
                endpoint.stats.latencies.append(latency_s)
            self._changed.notify_all()

    def failed(self, endpoint: Endpoint, reason: str) -> None:
        """The request failed on `endpoint`: it goes out of rotation (if it is not out yet)."""
        with self._changed:
            endpoint.outstanding -= 1
            endpoint.stats.failed += 1
            if endpoint.out_reason is None:
                endpoint.out_reason = reason
                endpoint.stats.events.append(self._event("out", reason))
                if all(e.out_reason is not None for e in self.endpoints):
                    self._all_out_since = time.monotonic()
            self._changed.notify_all()

    def _rejoin(self, endpoint: Endpoint) -> None:
        with self._changed:
            endpoint.out_reason = None
            endpoint.stats.events.append(self._event("rejoined", "answers the health probe"))
            self._all_out_since = None
            self._changed.notify_all()

    def _event(self, kind: str, reason: str) -> dict[str, Any]:
        return {"event": kind, "at_s": round(time.monotonic() - self.started, 3), "reason": reason}

    def _watch(self) -> None:
        while not self._stop.wait(PROBE_INTERVAL_S):
            with self._changed:
                out = [e for e in self.endpoints if e.out_reason is not None]
            for endpoint in out:
                if self._probe(endpoint.url):
                    self._rejoin(endpoint)

    def close(self) -> None:
        self._stop.set()
        if self._monitor.is_alive() and self._monitor is not threading.current_thread():
            self._monitor.join(timeout=PROBE_INTERVAL_S + PROBE_TIMEOUT_S + 1)


class EndpointPoolBackend(OpenAIBackend):
    """An `openai` role with a list of endpoints (`create_backend` makes one for such a list)."""

    def __init__(
        self, role: str, config: RoleConfig, context: RunContext, base_url: str | None = None
    ) -> None:
        Backend.__init__(self, role, config, context)
        config.check_endpoints(role, context.offline)
        self.base_url = ""  # many: see `self.pool`
        self.model_name = config.served_model_name or config.model
        self._gone = None
        self._lock = threading.Lock()
        self.client = None
        self.stats_path = RunPaths(context.run_dir).endpoint_stats_path
        endpoints = [Endpoint(url, self._client(url)) for url in config.endpoints]
        self.pool = EndpointPool(
            endpoints,
            per_endpoint=config.concurrency,
            failover_wait_s=config.failover_wait_s,
            probe=self._answers,
            name=f"role {role!r}",
        )
        self._closed = False

    def identity(self) -> dict[str, Any]:
        """Without any URL: the answer is the same whichever endpoint gives it."""
        return {k: v for k, v in super().identity().items() if k != "base_url"}

    def workers(self) -> int:
        return self.config.concurrency * len(self.pool.endpoints)

    def gone_reason(self) -> str | None:
        return None  # the pool decides (`EndpointPool.acquire`)

    def _complete(self, request: ChatRequest) -> Completion:
        tried: set[str] = set()
        last: Endpoint | None = None
        while True:
            endpoint = self.pool.acquire(tried, moved_from=last)
            if endpoint is None:
                assert last is not None
                return failed_completion(
                    self.config.label,
                    f"failed on every endpoint of the pool; last: {last.url} ({last.out_reason})",
                )
            tried.add(endpoint.url)
            started = time.perf_counter()
            completion, failure = self._send(endpoint, request, started)
            if failure is None:
                latency = time.perf_counter() - started if completion.error is None else None
                self.pool.answered(endpoint, latency)
                return completion
            self.pool.failed(endpoint, failure)
            last = endpoint

    def _send(
        self, endpoint: Endpoint, request: ChatRequest, started: float
    ) -> tuple[Completion, str | None]:
        """The endpoint's answer and None, or a failed completion and why the endpoint failed
        (a connection error, a timeout, a 5xx). Never any request or answer text in a reason."""
        import openai

        try:
            arguments = self._arguments(request)
            response = send(endpoint.client, arguments, live=lambda: endpoint.out_reason is None)
        except openai.OpenAIError as exc:
            if refuses_the_client(exc):
                self.pool.answered(endpoint, None)
                raise BackendError(f"role {self.role!r} at {endpoint.url}: {exc}") from exc
            failed = failed_completion(self.config.label, request_error(exc, self.config))
            return failed, endpoint_fault(exc, self.config)
        return self._completion(response, started), None

    def _answers(self, url: str) -> bool:
        """Whether `url` answers `GET /models` (the health probe; no proxy for loopback)."""
        handlers = [urllib.request.ProxyHandler({})] if is_loopback_url(url) else []
        probe = urllib.request.Request(url.rstrip("/") + "/models")
        if self.config.api_key_env and os.environ.get(self.config.api_key_env):
            probe.add_header("Authorization", f"Bearer {os.environ[self.config.api_key_env]}")
        try:
            with urllib.request.build_opener(*handlers).open(probe, timeout=PROBE_TIMEOUT_S):
                return True
        except (OSError, ValueError):
            return False

    def stats_records(self) -> list[dict[str, Any]]:
        """One record per endpoint: counts, when it was taken out and rejoined, latencies."""
        records = []
        for endpoint in self.pool.endpoints:
            stats = endpoint.stats
            events = list(stats.events)
            records.append(
                {
                    "role": self.role,
                    "model": self.config.label,
                    "url": endpoint.url,
                    "sent": stats.sent,
                    "answered": stats.answered,
                    "rejected": stats.rejected,
                    "failed": stats.failed,
                    "moved": stats.moved,
                    "taken_out": sum(e["event"] == "out" for e in events),
                    "rejoined": sum(e["event"] == "rejoined" for e in events),
                    "events": events,
                    "latency_p50_s": _rounded(percentile(stats.latencies, 50)),
                    "latency_p95_s": _rounded(percentile(stats.latencies, 95)),
                }
            )
        return records

    def close(self) -> None:
        """Stop the monitor, close the clients, append the endpoints' records; once."""
        if getattr(self, "_closed", True):
            return
        self._closed = True
        self.pool.close()
        for endpoint in self.pool.endpoints:
            endpoint.client.close()
        self._append_stats()

    def _append_stats(self) -> None:
        if not any(e.stats.sent for e in self.pool.endpoints):
            return
        self.stats_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.stats_path, "a", encoding="utf-8") as out:
            for record in self.stats_records():
                out.write(json.dumps(record, sort_keys=False) + "\n")


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
