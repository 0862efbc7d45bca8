"""The nouns every stage shares: chat requests and completions, and output schemas.

Everything read from disk, written to disk or sent to a model as a schema is a frozen pydantic
model; a schema a model must follow is generated from the same type that parses its answer.
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model


class Record(BaseModel):
    """Base of every on-disk and on-wire type: immutable, strict about unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class ChatMessage(Record):
    role: Literal["system", "user", "assistant"]
    content: str


class Sampling(Record):
    """Sampling settings of one request; the same names as vLLM and the OpenAI API."""

    temperature: float = Field(1.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_tokens: int = Field(512, ge=1)
    seed: int = 0
    logprobs: int | None = Field(None, ge=0, le=20, description="top-k logprobs per token")
    stop: tuple[str, ...] = ()


class ChatRequest(Record):
    """One chat conversation to complete, optionally constrained to a JSON schema."""

    messages: tuple[ChatMessage, ...]
    sampling: Sampling = Sampling()
    sample_index: int = Field(0, ge=0, description="which of N samples of the same prompt")
    attempt: int = Field(0, ge=0, description="retry number; changes the seed")
    json_schema: dict[str, Any] | None = None
    schema_name: str = "output"
    id: str | None = None

    @property
    def effective_seed(self) -> int:
        """A seed that differs per conversation, sample and retry, and is the same on every
        run: samples of different prompts must not share one random stream."""
        digest = hashlib.sha256(f"{self.sampling.seed}:{self.sample_index}:{self.attempt}".encode())
        for message in self.messages:
            digest.update(f"\x00{message.role}\x00{message.content}".encode())
        return int.from_bytes(digest.digest()[:4], "big") & 0x7FFFFFFF


class TokenLogprob(Record):
    token: str
    logprob: float
    top: dict[str, float] = {}


FinishReason = Literal["stop", "length", "error"]


class Completion(Record):
    """A model's answer to one request. `parsed` is set only when it satisfies the schema."""

    text: str = ""
    parsed: Any | None = None
    finish_reason: FinishReason = "stop"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    logprobs: tuple[TokenLogprob, ...] | None = None
    model: str = ""
    error: str | None = None
    cached: bool = False
    latency_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None and self.finish_reason == "stop"


def failed_completion(model: str, error: str) -> Completion:
    return Completion(finish_reason="error", error=error, model=model)


def verdict_type(criterion_ids: list[str]) -> type[BaseModel]:
    """The pydantic type of a verifier's answer: exactly these ids, each "yes" or "no"."""
    fields: dict[str, Any] = {cid: (Literal["yes", "no"], ...) for cid in criterion_ids}
    return create_model(  # type: ignore[call-overload, no-any-return]
        "Verdicts", __config__=ConfigDict(extra="forbid", frozen=True), **fields
    )


def json_schema_of(output_type: type[BaseModel]) -> dict[str, Any]:
    """A JSON schema that strict structured-output APIs accept (no titles, closed objects)."""
    schema = output_type.model_json_schema()
    return _strip_titles(schema)


def _strip_titles(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            k: _strip_titles(v)
            for k, v in node.items()
            if not (k == "title" and isinstance(v, str))
        }
    if isinstance(node, list):
        return [_strip_titles(v) for v in node]
    return node
