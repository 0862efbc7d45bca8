"""The verifier's in-process vLLM engine, metered: seconds and prefix-cache hit rate of a
block, and a backend wrapper that records every (request, completion) the harness sent."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

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
        self.llm = self.backend.engine_handle()
        self.config = role_config

    def role(self, config: RoleConfig | None = None) -> tuple[Role, Recorder]:
        """A verifier Role on this engine (with `config`'s sampling and retries, when given)."""
        recorder = Recorder(self.backend)
        return Role("verifier", config or self.config, recorder), recorder

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
        """Seconds and prefix-cache hit rate of the block, starting from an empty cache, and
        the share of the machine's CPU that processes other than this one and its engine used
        meanwhile (`other_cpu_share`: 0 on a quiet machine)."""
        self.llm.reset_prefix_cache()
        queries, hits = self.prefix_counters()
        reading: dict[str, float] = {}
        cpu_before = cpu_seconds()
        started = time.perf_counter()
        yield reading
        reading["seconds"] = time.perf_counter() - started
        reading["other_cpu_share"] = other_cpu_share(cpu_before, cpu_seconds(), reading["seconds"])
        queries_after, hits_after = self.prefix_counters()
        asked = queries_after - queries
        reading["prefix_cache_hit_rate"] = round((hits_after - hits) / asked, 4) if asked else 0.0

    def close(self) -> None:
        self.backend.close()


def cpu_seconds() -> tuple[float, float]:
    """CPU seconds used so far by the whole machine and by this process with its children
    (the engine's processes)."""
    import psutil

    machine = psutil.cpu_times()
    busy = machine.user + machine.nice + machine.system
    busy += getattr(machine, "irq", 0.0) + getattr(machine, "softirq", 0.0)
    busy += getattr(machine, "steal", 0.0)  # the hypervisor ran someone else on our CPUs
    ours = 0.0
    me = psutil.Process()
    for process in (me, *me.children(recursive=True)):
        try:
            times = process.cpu_times()
        except psutil.Error:  # ended meanwhile
            continue
        ours += times.user + times.system
    return busy, ours


def other_cpu_share(
    before: tuple[float, float], after: tuple[float, float], seconds: float
) -> float:
    """The share of all cores' time over `seconds` that other processes used."""
    import os

    cores = os.cpu_count() or 1
    other = (after[0] - before[0]) - (after[1] - before[1])
    return round(min(max(other / (seconds * cores), 0.0), 1.0), 4) if seconds > 0 else 0.0
