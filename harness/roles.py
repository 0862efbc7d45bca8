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
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

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


class RolePool:
    """Starts each distinct backend once per run: roles served by the same model and engine
    settings (say, proposer and verifier both on one model) share one engine or server."""

    def __init__(self, context: RunContext) -> None:
        self.context = context
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
        backend = self._backends[key]
        if not cached and isinstance(backend, CachedBackend):
            backend = backend.inner
        return Role(name, role_config, backend)

    def cache_counts(self) -> tuple[int, int]:
        """(hits, misses) of the completion cache over every backend of the pool so far."""
        cached = [b for b in self._backends.values() if isinstance(b, CachedBackend)]
        return sum(b.hits for b in cached), sum(b.misses for b in cached)

    def keep_only(self, role_configs: list[RoleConfig]) -> None:
        """Stop every backend that none of `role_configs` uses (frees GPU memory between
        stages: the proposer's engine is not needed while the policy trains)."""
        wanted = {self.key(c) for c in role_configs}
        for key in [k for k in self._backends if k not in wanted]:
            self._backends.pop(key).close()

    def release(self, role_config: RoleConfig) -> None:
        """Stop the backend serving `role_config`, if it runs."""
        backend = self._backends.pop(self.key(role_config), None)
        if backend is not None:
            backend.close()

    def close(self) -> None:
        backends, self._backends = list(self._backends.values()), {}
        for backend in backends:
            backend.close()

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
