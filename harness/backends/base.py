"""The one interface every backend implements: a batch of chat requests in, completions out.

A backend translates requests (messages, sampling, optional JSON schema) into its engine's
terms in exactly one place and returns one `Completion` per request, in order. It never raises
for a single failed request: that request's completion carries `finish_reason="error"`. It
raises `BackendError` only when the backend itself cannot work (bad model, key), and
`BackendGone` when it stopped working mid-run (connection refused, server exited, engine dead):
that is no verdict on any request, so the stage stops unfinished and a rerun resumes it.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar

import jsonschema

from harness.config import RoleConfig
from harness.models.manifest import local_model_dir, model_fingerprint
from harness.role_config import template_kwargs
from harness.types import ChatRequest, Completion

Advance = Callable[[int], None]


class BackendError(RuntimeError):
    """A backend that cannot serve at all; the message says which role and what to do."""


class BackendGone(BackendError):
    """A backend that stopped answering altogether. `finished` holds the completions obtained
    before it went (request index -> completion), so that a cache can keep them."""

    def __init__(self, message: str, finished: dict[int, Completion] | None = None) -> None:
        super().__init__(message)
        self.finished: dict[int, Completion] = finished or {}


AdapterEngine = Callable[[dict[str, Any], int], dict[str, Any]]


@dataclass(frozen=True)
class Capabilities:
    """What a type of backend can do, known from the role's config before anything starts.

    adapters         applies a LoRA adapter per request
    adapter_engine   (engine options, LoRA rank) -> the engine options under which it serves
                     adapters up to that rank; None where no engine option is needed
    serves_endpoint  a server the harness starts: its `base_url` is known once it runs
    cacheable        its completions may be kept in the completion cache
    engine           the inference engine underneath ("vllm", "transformers"); None for a
                     remote API or a script
    """

    adapters: bool = False
    adapter_engine: AdapterEngine | None = None
    serves_endpoint: bool = False
    cacheable: bool = True
    engine: str | None = None


@dataclass(frozen=True)
class RunContext:
    """Where a backend may write (logs, caches) and whether it may reach the network."""

    run_dir: Path
    offline: bool = True
    cache: bool = True
    env: dict[str, str] = field(default_factory=dict)

    @property
    def logs_dir(self) -> Path:
        return self.run_dir / "logs"

    @property
    def cache_dir(self) -> Path:
        return self.run_dir / "cache"


class Backend(ABC):
    """Serves one role. Use as a context manager so engines and servers are always stopped."""

    name: ClassVar[str]
    capabilities: ClassVar[Capabilities] = Capabilities()

    def __init__(self, role: str, config: RoleConfig, context: RunContext) -> None:
        self.role = role
        self.config = config
        self.context = context

    def generate(
        self, requests: Sequence[ChatRequest], advance: Advance | None = None
    ) -> list[Completion]:
        """One completion per request, in order; `advance(n)` reports n finished requests.

        Answers to schema-constrained requests are parsed and checked here, once for all
        backends: a completion whose text does not satisfy its schema carries an error.
        """
        if not self.capabilities.adapters and any(r.adapter for r in requests):
            raise BackendError(
                f"role {self.role!r}: the {self.name} backend cannot apply a LoRA adapter per "
                "request; serve this role with the vllm or transformers backend"
            )
        try:
            completions = self._generate(requests, advance)
        except BackendGone as gone:
            gone.finished = {i: parse_completion(requests[i], c) for i, c in gone.finished.items()}
            raise
        return [parse_completion(r, c) for r, c in zip(requests, completions)]

    @abstractmethod
    def _generate(
        self, requests: Sequence[ChatRequest], advance: Advance | None
    ) -> list[Completion]:
        """The backend's own generation: raw text, tokens counts, finish reason."""

    def identity(self) -> dict[str, Any]:
        """Everything about this backend that changes an output (part of the cache key)."""
        local = local_model_dir(self.config.model)
        return {
            "backend": self.name,
            "model": self.config.model,
            "grammar": self.config.grammar,
            "engine": self.config.engine,
            "weights": model_fingerprint(str(local)) if local else None,
        }

    def chat_template(self) -> str | None:
        """The source of the chat template this backend renders, or None where unknown (a
        remote endpoint): it tells which template variables can change a prompt."""
        return None

    def template_reads(self, name: str) -> bool:
        """Whether the chat template may read variable `name` (a Jinja template cannot read a
        variable it never names; an unknown template may read any)."""
        source = self.chat_template()
        return source is None or name in source

    def template_kwargs_read(self, role: str, config: RoleConfig) -> dict[str, Any]:
        """Of the chat template variables of `role` (`template_kwargs`), those this backend's
        template may read: what a client of its endpoint needs to send."""
        kwargs = template_kwargs(role, config)
        return {name: value for name, value in kwargs.items() if self.template_reads(name)}

    def process_ids(self) -> list[int]:
        """The processes that hold this backend's model (for peak-memory readings); none for
        a remote endpoint."""
        return []

    def engine_handle(self) -> Any:
        """The in-process engine a benchmark may meter and drive directly (vLLM's `LLM`; the
        transformers backend's (model, tokenizer)), or None for a server, an API or a script."""
        return None

    def prompt_too_long(self, request: ChatRequest) -> str | None:
        """Why `request` cannot fit the model's context, or None (when it fits or is unknown)."""
        return None

    def close(self) -> None:
        """Release engines, servers and connections; safe to call twice."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@lru_cache(maxsize=1024)
def validator_for(schema_json: str) -> Any:
    """A validator per distinct schema, its schema checked once: `jsonschema.validate` would
    check the schema against the metaschema on every answer (~10 ms for a rubric's schema)."""
    schema = json.loads(schema_json)
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    return validator_class(schema)


def parse_completion(request: ChatRequest, completion: Completion) -> Completion:
    """Set `parsed` for a schema-valid answer, or an `unparseable` error for any other."""
    if request.json_schema is None or completion.error is not None:
        return completion
    try:
        # Grammar engines let raw control characters through inside strings; accept them.
        parsed = json.loads(completion.text, strict=False)
        validator_for(json.dumps(request.json_schema, sort_keys=True)).validate(parsed)
    except (json.JSONDecodeError, jsonschema.ValidationError) as exc:
        reason = "truncated" if completion.finish_reason == "length" else "unparseable"
        message = getattr(exc, "message", None) or str(exc)
        return completion.model_copy(update={"error": f"{reason}: {message}"[:500]})
    return completion.model_copy(update={"parsed": parsed})


def context_overflow(num_prompt_tokens: int, context_length: int) -> str | None:
    if num_prompt_tokens < context_length:
        return None
    return (
        f"prompt too long: {num_prompt_tokens} tokens for a context of {context_length} "
        "(raise engine.max_model_len, or shorten the prompt)"
    )


def plain_messages(request: ChatRequest) -> list[dict[str, str]]:
    return [{"role": m.role, "content": m.content} for m in request.messages]


def for_role(requests: Sequence[ChatRequest], role: str, config: RoleConfig) -> list[ChatRequest]:
    """The requests with the chat template variables of `role` (`template_kwargs`), where a
    request does not carry its own: several roles may share one backend, so they travel with
    each request."""
    kwargs = template_kwargs(role, config)
    if not kwargs:
        return list(requests)
    return [
        r if r.chat_template_kwargs is not None
        else r.model_copy(update={"chat_template_kwargs": kwargs})
        for r in requests
    ]  # fmt: skip


def template_source(tokenizer_template: Any) -> str | None:
    """A tokenizer's `chat_template` as one text: a string, or named templates (a mapping or
    a list of {name, template}) joined; None when the tokenizer has none."""
    if isinstance(tokenizer_template, str):
        return tokenizer_template
    if isinstance(tokenizer_template, dict):
        return "\n".join(str(t) for t in tokenizer_template.values())
    if isinstance(tokenizer_template, list):
        return "\n".join(str(t.get("template", "")) for t in tokenizer_template)
    return None


def template_arguments(request: ChatRequest) -> dict[str, Any]:
    """Keyword arguments for `apply_chat_template`: the request's template variables."""
    return dict(request.chat_template_kwargs or {})
