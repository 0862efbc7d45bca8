"""The verifier's in-process vLLM engine, metered: seconds and prefix-cache hit rate of a
block, and a backend wrapper that records every (request, completion) the harness sent."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from harness.backends import Backend, RunContext, create_backend
from harness.backends.base import Advance
from harness.config import RoleConfig
from harness.roles import Role
from harness.types import ChatRequest, Completion


class Recorder(Backend):
    """Passes requests to a backend and keeps each (request, completion) it saw."""

    name = "recorder"

    def __init__(self, inner: Backend) -> None:
        super().__init__(inner.role, inner.config, inner.context)
        self.inner = inner
        self.calls: list[tuple[ChatRequest, Completion]] = []

    def generate(
        self, requests: Sequence[ChatRequest], advance: Advance | None = None
    ) -> list[Completion]:
        completions = self.inner.generate(requests, advance)
        self.calls += zip(requests, completions)
        return completions

    def _generate(self, requests: Sequence[ChatRequest], advance: Advance | None) -> list:
        raise NotImplementedError  # generate() is overridden

    def prompt_too_long(self, request: ChatRequest) -> str | None:
        return self.inner.prompt_too_long(request)


class Engine:
    """An in-process vLLM engine of the verifier, with timings and prefix-cache counters."""

    def __init__(self, role_config: RoleConfig, context: RunContext) -> None:
        self.backend = create_backend("verifier", role_config, context)
        self.llm = self.backend.llm  # type: ignore[attr-defined]
        self.config = role_config

    def role(self) -> tuple[Role, Recorder]:
        recorder = Recorder(self.backend)
        return Role("verifier", self.config, recorder), recorder

    def prefix_counters(self) -> tuple[float, float]:
        queries = hits = 0.0
        for metric in self.llm.get_metrics():
            name = metric.name.removesuffix("_total")
            if name == "vllm:prefix_cache_queries":
                queries += metric.value
            elif name == "vllm:prefix_cache_hits":
                hits += metric.value
        return queries, hits

    @contextmanager
    def meter(self) -> Iterator[dict[str, float]]:
        """Seconds and prefix-cache hit rate of the block, starting from an empty cache."""
        self.llm.reset_prefix_cache()
        queries, hits = self.prefix_counters()
        reading: dict[str, float] = {}
        started = time.perf_counter()
        yield reading
        reading["seconds"] = time.perf_counter() - started
        queries_after, hits_after = self.prefix_counters()
        asked = queries_after - queries
        reading["prefix_cache_hit_rate"] = round((hits_after - hits) / asked, 4) if asked else 0.0

    def close(self) -> None:
        self.backend.close()


def fastest(repeats: int, run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The run with the fewest seconds of `repeats` (the machine may be shared)."""
    return min((run() for _ in range(max(repeats, 1))), key=lambda entry: entry["seconds"])
