"""The nouns every stage shares: chat requests and completions, and output schemas.

Everything read from disk, written to disk or sent to a model as a schema is a frozen pydantic
model; a schema a model must follow is generated from the same type that parses its answer.
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator


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


class Adapter(Record):
    """A LoRA adapter to apply for one request (the trained policy, a training checkpoint).
    `fingerprint` hashes its weights, so a retrained adapter at the same path never meets
    the cached answers of the old one."""

    name: str
    path: str
    fingerprint: str

    def identity(self) -> dict[str, str]:
        """What answers with the adapter depend on: its name and weights, not the folder it
        lies in (a moved run folder keeps its stage fingerprints and cached answers)."""
        return self.model_dump(exclude={"path"})


class ChatRequest(Record):
    """One chat conversation to complete, optionally constrained to a JSON schema."""

    messages: tuple[ChatMessage, ...]
    sampling: Sampling = Sampling()
    sample_index: int = Field(0, ge=0, description="which of N samples of the same prompt")
    attempt: int = Field(0, ge=0, description="retry number; changes the seed")
    json_schema: dict[str, Any] | None = None
    schema_name: str = "output"
    adapter: Adapter | None = None
    chat_template_kwargs: dict[str, Any] | None = Field(
        None, description="variables for the chat template (set by the role)",
        exclude_if=lambda value: value is None,
    )  # fmt: skip
    id: str | None = None

    def effective_seed(self, model: str) -> int:
        """A seed that differs per model, conversation, sample and retry, and is the same on
        every run: samples of different prompts, and two models sampling the same request (two
        verifiers, two rollout models), must not share one random stream."""
        digest = hashlib.sha256(f"{self.sampling.seed}:{self.sample_index}:{self.attempt}".encode())
        digest.update(f"\x00model\x00{model}".encode())
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


# --- the rubric pipeline's records: prompts -> candidates -> rubrics -> verdicts ---


class Prompt(Record):
    """A task to write rubrics for: a user prompt or a whole conversation."""

    id: str = Field(min_length=1)
    prompt: str | tuple[ChatMessage, ...]
    domain: str | None = None
    metadata: dict[str, Any] = {}

    @property
    def messages(self) -> tuple[ChatMessage, ...]:
        if isinstance(self.prompt, str):
            return (ChatMessage(role="user", content=self.prompt),)
        return self.prompt

    def render(self) -> str:
        """The conversation as plain text, for templates that show it to a model."""
        if isinstance(self.prompt, str):
            return self.prompt
        return "\n\n".join(f"[{m.role}]\n{m.content}" for m in self.prompt)


class Candidate(Record):
    """One response to a prompt, from a named model (or a reference answer)."""

    id: str
    prompt_id: str
    text: str
    model: str
    sample_index: int = 0
    reference: bool = Field(False, description="a given reference answer, not a sampled one")


class Criterion(Record):
    """A yes/no check. Paper rubrics weigh 1..3; HealthBench points run -10..10, and a negative
    criterion is a penalty that "yes" triggers."""

    id: str
    text: str = Field(min_length=1)
    weight: int = Field(ge=-10, le=10)
    tags: tuple[str, ...] = ()

    @field_validator("weight")
    @classmethod
    def _nonzero(cls, weight: int) -> int:
        if weight == 0:
            raise ValueError("a criterion's weight cannot be 0")
        return weight


class RubricChange(Record):
    """What a refinement did to the criteria (matched by text)."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    reweighted: tuple[str, ...] = ()


class Rubric(Record):
    prompt_id: str
    version: int = Field(0, ge=0)
    parent_version: int | None = None
    criteria: tuple[Criterion, ...] = Field(min_length=1)
    refined_from: tuple[str, str] | None = None
    changes: RubricChange | None = None

    @property
    def total_weight(self) -> int:
        return sum(c.weight for c in self.criteria if c.weight > 0)


def latest_versions(rubrics: list[Rubric]) -> dict[str, Rubric]:
    """The highest version of each prompt's rubric, by prompt id."""
    latest: dict[str, Rubric] = {}
    for rubric in rubrics:
        if rubric.prompt_id not in latest or rubric.version > latest[rubric.prompt_id].version:
            latest[rubric.prompt_id] = rubric
    return latest


class Verdict(Record):
    """Whether a candidate meets one criterion; `met=None` means unscored (never "no")."""

    prompt_id: str
    candidate_id: str
    rubric_version: int
    criterion_id: str
    met: bool | None
    p_yes: float | None = None
    verifier: str
    unscored_reason: str | None = None


class Skip(Record):
    """An item a stage could not produce, and why (recorded, never silently dropped)."""

    stage: str
    prompt_id: str
    item_id: str | None = None
    reason: str
