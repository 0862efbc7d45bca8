"""A SQLite cache in front of any backend, so reruns and resumed runs reuse model calls.

The key hashes everything that changes an output: the backend's identity (backend, model,
grammar engine, engine options) and the whole request (messages, sampling, seed, sample index,
retry attempt, schema, the chat template variables its template reads). Only clean answers
are stored: never an error, never a truncation. When the backend goes away mid-batch, the
answers it gave before are stored, so that the rerun asks only for the rest.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from harness.backends.base import Advance, Backend, BackendGone
from harness.jsonl import InputError
from harness.types import ChatRequest, Completion


def cache_key(
    identity: dict[str, Any],
    request: ChatRequest,
    template_reads: Callable[[str], bool] = lambda name: True,
) -> str:
    """The key of `request` to the backend of `identity`. Of the request's chat template
    variables, only those the template may read are part of it (`template_reads`): another
    value of those renders another prompt, whereas a request whose variables its template
    never reads keeps the key it had without them."""
    dumped = request.model_dump(mode="json", exclude={"id", "chat_template_kwargs"})
    if request.adapter is not None:  # by its weights: a moved run folder keeps its answers
        dumped["adapter"] = request.adapter.identity()
    kwargs = request.chat_template_kwargs or {}
    if read := {k: v for k, v in kwargs.items() if template_reads(k)}:
        dumped["chat_template_kwargs"] = read
    payload = {"backend": identity, "request": dumped}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


BUSY_TIMEOUT_SECONDS = 60


def _while_busy(statement: Callable[[], object]) -> None:
    """Runs `statement`, again while another process holds the file. Switching a file to WAL
    needs an exclusive lock that SQLite does not wait for (its busy timeout does not apply), so
    processes that open one cache together (the ranks of a training run) would fail at random."""
    deadline = time.monotonic() + BUSY_TIMEOUT_SECONDS
    while True:
        try:
            statement()
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


class CacheError(InputError):
    """The completion cache file cannot be used; the message names it and the way out."""


class CompletionCache:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        with self._failing_as_cache_error():
            self._db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_SECONDS)
            _while_busy(lambda: self._db.execute("PRAGMA journal_mode=WAL"))
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS completions"
                " (key TEXT PRIMARY KEY, completion TEXT NOT NULL)"
            )
            self._db.commit()

    @contextmanager
    def _failing_as_cache_error(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.OperationalError as exc:  # read-only folder, locked, cannot open
            raise CacheError(
                f"{self.path}: cannot use the completion cache ({exc}); make its folder "
                "writable, or run with --set cache=false"
            ) from None
        except (sqlite3.DatabaseError, ValidationError) as exc:
            reason = exc if isinstance(exc, sqlite3.Error) else "a stored answer does not parse"
            raise CacheError(
                f"{self.path}: the completion cache is damaged ({reason}); delete the file "
                "(its answers are then asked of the models again), or run with --set cache=false"
            ) from None

    def get_many(self, keys: Sequence[str]) -> dict[str, Completion]:
        found: dict[str, Completion] = {}
        with self._failing_as_cache_error():
            for start in range(0, len(keys), 500):
                chunk = list(keys[start : start + 500])
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(
                    f"SELECT key, completion FROM completions WHERE key IN ({marks})", chunk
                )
                for key, text in rows:
                    found[key] = Completion.model_validate_json(text).model_copy(
                        update={"cached": True}
                    )
        return found

    def put_many(self, items: Sequence[tuple[str, Completion]]) -> None:
        rows = [(k, c.model_dump_json()) for k, c in items if c.ok]
        with self._failing_as_cache_error(), self._db:
            self._db.executemany("INSERT OR REPLACE INTO completions VALUES (?, ?)", rows)

    def close(self) -> None:
        self._db.close()


class CachedBackend(Backend):
    """Wraps a backend: cached requests are answered from SQLite, the rest go to the backend."""

    def __init__(self, inner: Backend, cache: CompletionCache) -> None:
        super().__init__(inner.role, inner.config, inner.context)
        self.inner = inner
        self.cache = cache
        self.name = inner.name  # type: ignore[misc]
        self.capabilities = inner.capabilities  # type: ignore[misc]
        self.hits = 0
        self.misses = 0

    def identity(self) -> dict[str, Any]:
        return self.inner.identity()

    def prompt_too_long(self, request: ChatRequest) -> str | None:
        return self.inner.prompt_too_long(request)

    def chat_template(self) -> str | None:
        return self.inner.chat_template()

    def process_ids(self) -> list[int]:
        return self.inner.process_ids()

    def engine_handle(self) -> Any:
        return self.inner.engine_handle()

    def _generate(
        self, requests: Sequence[ChatRequest], advance: Advance | None
    ) -> list[Completion]:
        identity = self.inner.identity()
        keys = [cache_key(identity, r, self.inner.template_reads) for r in requests]
        found = self.cache.get_many(keys)
        missing = [i for i, k in enumerate(keys) if k not in found]
        self.hits += len(requests) - len(missing)
        self.misses += len(missing)
        if advance and len(requests) > len(missing):
            advance(len(requests) - len(missing))
        try:
            fresh = self.inner.generate([requests[i] for i in missing], advance) if missing else []
        except BackendGone as gone:  # keep what was answered before it went, for the rerun
            self.cache.put_many([(keys[missing[i]], c) for i, c in gone.finished.items()])
            gone.finished = {missing[i]: c for i, c in gone.finished.items()} | {
                i: found[k] for i, k in enumerate(keys) if k in found
            }
            raise
        self.cache.put_many([(keys[i], c) for i, c in zip(missing, fresh)])
        by_index = dict(zip(missing, fresh))
        return [found[k] if k in found else by_index[i] for i, k in enumerate(keys)]

    def close(self) -> None:
        self.inner.close()
        self.cache.close()
