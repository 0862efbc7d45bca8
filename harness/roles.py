"""Roles: what stages ask for (`policy`, `proposer`, `verifier`, `judge`), never a backend.

`open_role` builds the backend a profile maps a role to, puts the completion cache in front
of it, and returns a `Role` whose `generate` shows a progress bar and retries failed answers
(errors, truncated or unparseable JSON) a bounded number of times with a fresh seed and a
backoff. What still fails after the last attempt comes back with its error set, so that a
stage records it as unscored instead of inventing an answer.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

from harness.backends import Backend, RunContext, capabilities_of, create_backend
from harness.backends.base import for_role
from harness.backends.cache import CachedBackend, CompletionCache
from harness.config import HarnessConfig, RoleConfig
from harness.console import progress_bar
from harness.types import ChatRequest, Completion, failed_completion

BACKOFF_S = 0.5


@dataclass
class RoleStats:
    requests: int = 0
    failed: int = 0
    retried: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list, repr=False)


class Role:
    def __init__(self, name: str, config: RoleConfig, backend: Backend) -> None:
        self.name = name
        self.config = config
        self.backend = backend
        self.stats = RoleStats()

    def generate(
        self, requests: Sequence[ChatRequest], description: str | None = None
    ) -> list[Completion]:
        """One completion per request, in order; failures retried up to `max_attempts`."""
        if not requests:
            return []
        requests = for_role(requests, self.name, self.config)  # its chat template variables
        started = time.perf_counter()
        results: list[Completion | None] = [None] * len(requests)
        pending = list(range(len(requests)))
        for i in pending:
            reason = self.backend.prompt_too_long(requests[i])
            if reason:
                results[i] = failed_completion(self.config.label, reason)
        pending = [i for i in pending if results[i] is None]
        with progress_bar() as progress:
            task = progress.add_task(
                description or f"{self.name} ({self.config.label})", total=len(requests)
            )
            progress.advance(task, len(requests) - len(pending))
            for attempt in range(self.config.max_attempts):
                if not pending:
                    break
                if attempt:
                    self.stats.retried += len(pending)
                    _backoff(attempt, [results[i] for i in pending])
                batch = [
                    requests[i].model_copy(update={"attempt": requests[i].attempt + attempt})
                    for i in pending
                ]
                advance = (lambda n: progress.advance(task, n)) if attempt == 0 else None
                for i, completion in zip(pending, self.backend.generate(batch, advance)):
                    results[i] = completion
                pending = [i for i in pending if _should_retry(results[i])]
        done = [r for r in results if r is not None]
        self._count(done, time.perf_counter() - started)
        return done

    def _count(self, completions: list[Completion], seconds: float) -> None:
        self.stats.requests += len(completions)
        self.stats.failed += sum(c.error is not None for c in completions)
        self.stats.prompt_tokens += sum(c.prompt_tokens for c in completions)
        self.stats.completion_tokens += sum(c.completion_tokens for c in completions)
        self.stats.seconds += seconds
        self.stats.latencies += [c.latency_s for c in completions if not c.cached and c.latency_s]

    def close(self) -> None:
        self.backend.close()


def _should_retry(completion: Completion | None) -> bool:
    return completion is None or completion.error is not None


def _backoff(attempt: int, failed: list[Completion | None]) -> None:
    """Wait before a retry only when requests failed outright (a server, a rate limit)."""
    if any(c is not None and c.finish_reason == "error" for c in failed):
        time.sleep(BACKOFF_S * 2 ** (attempt - 1))


def run_context(config: HarnessConfig) -> RunContext:
    return RunContext(run_dir=config.run_dir, offline=config.offline, cache=config.cache)


def build_role(name: str, role_config: RoleConfig, context: RunContext) -> Role:
    if not context.cache or not capabilities_of(role_config).cacheable:
        return Role(name, role_config, create_backend(name, role_config, context))
    # the cache opens first: a damaged cache file fails at once, not after an engine start
    cache = CompletionCache(context.cache_dir / "completions.sqlite")
    try:
        backend = create_backend(name, role_config, context)
    except BaseException:
        cache.close()
        raise
    return Role(name, role_config, CachedBackend(backend, cache))


@dataclass(frozen=True)
class EngineEvent:
    """What a pool did: started or stopped the engine of `keys[0]`, or entered a group of
    engines (`keys`: every engine of the group; the others were stopped just before)."""

    action: Literal["start", "stop", "enter"]
    keys: tuple[str, ...]


class RolePool:
    """Starts each distinct backend once per run: roles served by the same model and engine
    settings (say, proposer and verifier both on one model) share one engine or server.

    With `stop_idle`, stages move from group to group of engines (`enter_group`): entering a
    group stops every engine outside it, so an engine starts only beside the engines of its
    own group (GPU memory); without, every engine stays up until the pool closes.
    `observer` is told every start, stop and group entered (tests read the lifecycle)."""

    def __init__(
        self,
        context: RunContext,
        stop_idle: bool = False,
        observer: Callable[[EngineEvent], None] | None = None,
    ) -> None:
        self.context = context
        self.stop_idle = stop_idle
        self._observer = observer
        self._backends: dict[str, Backend] = {}

    @staticmethod
    def key(role_config: RoleConfig) -> str:
        fields = {"backend", "model", "engine", "grammar", "base_url", "replies"}
        return json.dumps(role_config.model_dump(mode="json", include=fields), sort_keys=True)

    def role(self, name: str, role_config: RoleConfig, cached: bool = True) -> Role:
        """The role on its shared backend; `cached=False` bypasses the completion cache (for
        timing a model: every request really reaches it)."""
        key = self.key(role_config)
        if key not in self._backends:
            self._backends[key] = build_role(name, role_config, self.context).backend
            self._tell("start", key)
        backend = self._backends[key]
        if not cached and isinstance(backend, CachedBackend):
            backend = backend.inner
        return Role(name, role_config, backend)

    def cache_counts(self) -> tuple[int, int]:
        """(hits, misses) of the completion cache over every backend of the pool so far."""
        cached = [b for b in self._backends.values() if isinstance(b, CachedBackend)]
        return sum(b.hits for b in cached), sum(b.misses for b in cached)

    def enter_group(self, role_configs: Sequence[RoleConfig]) -> None:
        """With `stop_idle`: the engines of `role_configs` are the ones a stage uses next;
        every other engine stops now, before any of them starts (an engine kept by a role of
        the group, same `key`, stays up). Without: nothing happens."""
        if not self.stop_idle:
            return
        self.keep_only(list(role_configs))
        self._tell("enter", *dict.fromkeys(self.key(c) for c in role_configs))

    def keep_only(self, role_configs: list[RoleConfig]) -> None:
        """Stop every backend that none of `role_configs` uses (frees GPU memory between
        stages: the proposer's engine is not needed while the policy trains)."""
        wanted = {self.key(c) for c in role_configs}
        for key in [k for k in self._backends if k not in wanted]:
            self._stop(key)

    def release(self, role_config: RoleConfig) -> None:
        """Stop the backend serving `role_config`, if it runs."""
        if self.key(role_config) in self._backends:
            self._stop(self.key(role_config))

    def close(self) -> None:
        for key in list(self._backends):
            self._stop(key)

    def _stop(self, key: str) -> None:
        backend = self._backends.pop(key)
        try:
            backend.close()
        finally:
            self._tell("stop", key)

    def _tell(self, action: Literal["start", "stop", "enter"], *keys: str) -> None:
        if self._observer is not None:
            self._observer(EngineEvent(action, keys))

    def __enter__(self) -> RolePool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@contextmanager
def open_role(name: str, role_config: RoleConfig, context: RunContext) -> Iterator[Role]:
    """A started role that is always closed (engine shut down, server stopped)."""
    role = build_role(name, role_config, context)
    try:
        yield role
    finally:
        role.close()
