"""Verifier: a yes/no verdict for every (candidate, criterion), under a grammar.

Modes:
- `all`: one request per candidate with every criterion of its rubric; the schema forces
  exactly that rubric's criterion ids. The rubric comes before the response, so the requests
  of one prompt's candidates share their prefix (instructions, conversation, rubric).
- `each`: one request per criterion; conversation and response come first, so the criteria of
  one candidate share their prefix. Where the backend gives logprobs, the verdict also carries
  a soft P(yes), renormalised over the two allowed answers (engines report logprobs from
  before the grammar mask).

A verdict that cannot be obtained after the role's bounded retries is unscored (`met=None`)
with its reason: counted and reported, never "no".

    harness verify -c configs/default.yaml
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from harness.prompts import render
from harness.roles import Role
from harness.types import (
    Candidate,
    ChatRequest,
    Completion,
    Prompt,
    Rubric,
    Verdict,
    json_schema_of,
    verdict_type,
)


class SingleVerdict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    answer: Literal["yes", "no"]


@dataclass(frozen=True)
class Job:
    """A candidate to check against a rubric."""

    prompt: Prompt
    candidate: Candidate
    rubric: Rubric


def verify(
    role: Role, jobs: Sequence[Job], mode: str, templates: Path, logprobs: int = 0
) -> list[Verdict]:
    """Verdicts for every criterion of every job, in one batch of requests."""
    if mode == "each":
        return _verify_each(role, jobs, templates, logprobs)
    return _verify_all(role, jobs, templates)


def _verify_all(role: Role, jobs: Sequence[Job], templates: Path) -> list[Verdict]:
    requests = []
    for job in jobs:
        ids = [c.id for c in job.rubric.criteria]
        messages = render(
            "verify_all",
            templates,
            prompt=job.prompt.render(),
            criteria=job.rubric.criteria,
            response=job.candidate.text,
        )
        requests.append(
            ChatRequest(
                messages=messages,
                sampling=role.config.sampling,
                json_schema=json_schema_of(verdict_type(ids)),
                schema_name="verdicts",
                id=job.candidate.id,
            )
        )
    completions = role.generate(requests, description=f"verify all ({role.config.label})")
    verdicts = []
    for job, completion in zip(jobs, completions):
        for criterion in job.rubric.criteria:
            answer = completion.parsed.get(criterion.id) if completion.parsed else None
            verdicts.append(_verdict(job, criterion.id, answer, completion, role))
    return verdicts


def _verify_each(role: Role, jobs: Sequence[Job], templates: Path, logprobs: int) -> list[Verdict]:
    sampling = role.config.sampling
    if logprobs:
        sampling = sampling.model_copy(update={"logprobs": logprobs})
    schema = json_schema_of(SingleVerdict)
    pairs, requests = [], []
    for job in jobs:
        for criterion in job.rubric.criteria:
            messages = render(
                "verify_each",
                templates,
                prompt=job.prompt.render(),
                response=job.candidate.text,
                criterion=criterion.text,
            )
            requests.append(
                ChatRequest(
                    messages=messages,
                    sampling=sampling,
                    json_schema=schema,
                    schema_name="verdict",
                    id=job.candidate.id,
                )
            )
            pairs.append((job, criterion.id))
    completions = role.generate(requests, description=f"verify each ({role.config.label})")
    return [
        _verdict(job, cid, c.parsed.get("answer") if c.parsed else None, c, role, p_yes=soft_yes(c))
        for (job, cid), c in zip(pairs, completions)
    ]


def _verdict(
    job: Job,
    criterion_id: str,
    answer: str | None,
    completion: Completion,
    role: Role,
    p_yes: float | None = None,
) -> Verdict:
    return Verdict(
        prompt_id=job.prompt.id,
        candidate_id=job.candidate.id,
        rubric_version=job.rubric.version,
        criterion_id=criterion_id,
        met=None if answer is None else answer == "yes",
        p_yes=p_yes,
        verifier=role.config.label,
        unscored_reason=None if answer is not None else (completion.error or "no verdict"),
    )


def soft_yes(completion: Completion) -> float | None:
    """P(yes) at the token that decides the answer, renormalised over "yes" and "no"."""
    if completion.parsed is None or not completion.logprobs:
        return None
    text = completion.text
    value_start = text.index('"', text.index(":")) + 1  # where yes/no begins
    consumed = ""
    for token in completion.logprobs:
        if len(consumed) + len(token.token) > value_start:
            return _renormalise(consumed, token.top, value_start)
        consumed += token.token
    return None


def _renormalise(consumed: str, top: dict[str, float], value_start: int) -> float | None:
    mass = {"y": 0.0, "n": 0.0}
    for text, logprob in top.items():
        first = (consumed + text)[value_start : value_start + 1]
        if first in mass and not math.isinf(logprob):
            mass[first] += math.exp(logprob)
    total = mass["y"] + mass["n"]
    return mass["y"] / total if total > 0 else None


def met_by_candidate(verdicts: Sequence[Verdict]) -> dict[str, dict[str, bool | None]]:
    """candidate id -> criterion id -> met, for the reward function."""
    table: dict[str, dict[str, Any]] = {}
    for verdict in verdicts:
        table.setdefault(verdict.candidate_id, {})[verdict.criterion_id] = verdict.met
    return table
