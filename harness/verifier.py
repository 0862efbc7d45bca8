"""Verifier: a yes/no verdict for every (candidate, criterion), under a grammar.

Modes:
- `all`: one request per candidate with every criterion of its rubric; the schema forces
  exactly that rubric's criterion ids. The rubric comes before the response, so the requests
  of one prompt's candidates share their prefix (instructions, conversation, rubric).
- `each`: one request per criterion; conversation and response come first, so the criteria of
  one candidate share their prefix.
- `compact`: like `all` (one request per candidate, rubric before the response), but the
  answer is one string of "y"/"n" letters in criterion order under a pattern grammar: one
  token per criterion instead of about nine for the JSON object (`harness bench`: 2-3x the
  criteria per second of `all` on the tiny CPU profile). Letters are matched to criteria by
  position only, so check a real verifier's agreement with `all` before relying on it.

In every mode, where the backend gives logprobs (`verify.logprobs` > 0), each verdict also
carries a soft P(yes): read at the token where its value begins, renormalised over "yes" and
"no" (harness.decision; the engines apply the grammar mask first, which leaves that ratio the
model's own). The hard verdict and P(yes) are recorded side by side; `verify.score: soft`
rewards by P(yes) (harness.reward).

A verdict that cannot be obtained after the role's bounded retries is unscored (`met=None`)
with its reason: counted and reported, never "no". When more than `verify.max_unscored_share`
of a batch is unscored, `check_unscored` stops the stage: it is not done, and a rerun asks again.

    harness verify -c configs/default.yaml
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from harness.config import VerifyConfig
from harness.decision import probabilities_at, spelled
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


class UnscoredShareError(RuntimeError):
    """Too many unscored verdicts for a stage to count as done."""


NO_P_YES = "no P(yes): no logprobs at the verdict token (verify.score: soft needs them)"


def check_unscored(verdicts: Sequence[Verdict], settings: VerifyConfig, where: str) -> None:
    """Raise UnscoredShareError when the unscored share of `verdicts` passes the profile's
    `verify.max_unscored_share`; under `verify.score: soft` a verdict without P(yes) counts as
    unscored, since the reward cannot use it."""
    max_share = settings.max_unscored_share
    soft = settings.score == "soft"
    unscored = [v for v in verdicts if v.met is None or (soft and v.p_yes is None)]
    if not verdicts or len(unscored) / len(verdicts) <= max_share:
        return
    first = unscored[0]
    reason = first.unscored_reason or (NO_P_YES if first.met is not None else "no verdict")
    raise UnscoredShareError(
        f"{where}: {len(unscored)} of {len(verdicts)} verdicts unscored "
        f"({len(unscored) / len(verdicts):.0%}), more than verify.max_unscored_share "
        f"{max_share:.0%} (first reason: {reason.splitlines()[0][:160]}); not marked done, "
        "rerun to ask again"
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


def latest_rubric_jobs(
    prompts: Sequence[Prompt], candidates: Sequence[Candidate], latest: Mapping[str, Rubric]
) -> list[Job]:
    """Every candidate against its prompt's latest rubric (candidates of prompts without a
    rubric are left out), in candidate order."""
    by_id = {p.id: p for p in prompts}
    return [Job(by_id[c.prompt_id], c, latest[c.prompt_id]) for c in candidates
            if c.prompt_id in latest]  # fmt: skip


def verify(
    role: Role, jobs: Sequence[Job], settings: VerifyConfig, templates: Path
) -> list[Verdict]:
    """Verdicts for every criterion of every job, in one batch of requests, in the profile's
    `verify:` mode (`settings.logprobs` applies to `each`)."""
    if settings.mode == "each":
        return _verify_each(role, jobs, templates, settings)
    return _verify_rubric(role, jobs, templates, settings)


@lru_cache(maxsize=256)
def verdicts_schema(criterion_ids: tuple[str, ...]) -> dict[str, Any]:
    """The `all` answer schema of a rubric's ids; built once per rubric (pydantic's
    create_model costs milliseconds, more than the tiny model's whole answer)."""
    return json_schema_of(verdict_type(list(criterion_ids)))


def compact_schema(num_criteria: int) -> dict[str, Any]:
    """The `compact` answer: a JSON string of exactly one "y"/"n" per criterion."""
    return {"type": "string", "pattern": f"^[yn]{{{num_criteria}}}$"}


def parse_compact(answer: Any, criterion_ids: Sequence[str]) -> dict[str, str | None]:
    """criterion id -> "yes"/"no" from a compact answer; every id None when it does not fit."""
    if not (isinstance(answer, str) and len(answer) == len(criterion_ids)):
        return dict.fromkeys(criterion_ids)
    if set(answer) - {"y", "n"}:
        return dict.fromkeys(criterion_ids)
    return {cid: "yes" if letter == "y" else "no" for cid, letter in zip(criterion_ids, answer)}


def _verify_rubric(role: Role, jobs: Sequence[Job], templates: Path, settings: VerifyConfig
                   ) -> list[Verdict]:  # fmt: skip
    """One request per job with its whole rubric (`all` or `compact`). Requests go out grouped
    by prompt, so those sharing a prefix sit together in the engine's batch."""
    mode = settings.mode
    order = sorted(range(len(jobs)), key=lambda i: (jobs[i].prompt.id, jobs[i].rubric.version))
    requests = [_rubric_request(role, jobs[i], templates, settings) for i in order]
    answers = role.generate(requests, description=f"verify {mode} ({role.config.label})")
    completions = dict(zip(order, answers))
    verdicts = []
    for i, job in enumerate(jobs):
        ids = tuple(c.id for c in job.rubric.criteria)
        completion = completions[i]
        if mode == "compact":
            table = parse_compact(completion.parsed, ids)
            soft = soft_compact(completion, ids)
        else:
            table = completion.parsed or {}
            soft = soft_all(completion, ids)
        for cid in ids:
            verdicts.append(
                _verdict(job, cid, table.get(cid), completion, role, p_yes=soft.get(cid))
            )
    return verdicts


def _verdict_sampling(role: Role, settings: VerifyConfig) -> Any:
    """The role's sampling, asking for the top logprobs that P(yes) is read from."""
    sampling = role.config.sampling
    if settings.logprobs:
        sampling = sampling.model_copy(update={"logprobs": settings.logprobs})
    return sampling


def _rubric_request(role: Role, job: Job, templates: Path, settings: VerifyConfig) -> ChatRequest:
    ids = tuple(c.id for c in job.rubric.criteria)
    messages = render(
        f"verify_{settings.mode}",
        templates,
        prompt=job.prompt.render(),
        criteria=job.rubric.criteria,
        response=job.candidate.text,
    )
    all_mode = settings.mode == "all"
    return ChatRequest(
        messages=messages,
        sampling=_verdict_sampling(role, settings),
        json_schema=verdicts_schema(ids) if all_mode else compact_schema(len(ids)),
        schema_name="verdicts",
        id=job.candidate.id,
    )


def _verify_each(
    role: Role, jobs: Sequence[Job], templates: Path, settings: VerifyConfig
) -> list[Verdict]:
    sampling = _verdict_sampling(role, settings)
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
        p_yes=None if answer is None else p_yes,
        verifier=role.config.label,
        unscored_reason=None if answer is not None else (completion.error or "no verdict"),
    )


# A JSON object key and the opening quote of its string value: `"c3":"` (whitespace allowed)
_KEY_AND_VALUE = re.compile(r'"((?:[^"\\]|\\.)*)"\s*:\s*"')
VERDICTS = ("yes", "no")


def soft_all(completion: Completion, criterion_ids: Sequence[str]) -> dict[str, float | None]:
    """criterion id -> P(yes) of an `all` answer (`{"c1":"yes",...}`), each read at the token
    where that criterion's value begins; empty without a parsed answer or logprobs."""
    if completion.parsed is None or not completion.logprobs:
        return {}
    starts = {}
    for match in _KEY_AND_VALUE.finditer(spelled(completion.logprobs)):
        key = json.loads(f'"{match.group(1)}"')
        if key in criterion_ids:
            starts[key] = match.end()
    return dict(zip(starts, _p_yes(completion, list(starts.values()))))


def soft_compact(completion: Completion, criterion_ids: Sequence[str]) -> dict[str, float | None]:
    """criterion id -> P(yes) of a `compact` answer (`"ynny"`), letter k read at its offset.
    A token that holds several letters is read at each of them from its top alternatives."""
    if completion.parsed is None or not completion.logprobs:
        return {}
    first = spelled(completion.logprobs).find('"') + 1
    offsets = [first + k for k in range(len(criterion_ids))]
    return dict(zip(criterion_ids, _p_yes(completion, offsets)))


def soft_yes(completion: Completion) -> float | None:
    """P(yes) of an `each` answer (`{"answer":"yes"}`), renormalised over "yes" and "no"."""
    return soft_all(completion, ["answer"]).get("answer")


def _p_yes(completion: Completion, starts: Sequence[int]) -> list[float | None]:
    read = probabilities_at(completion.logprobs or (), starts, VERDICTS)
    return [None if probabilities is None else probabilities["yes"] for probabilities in read]


def met_by_candidate(verdicts: Sequence[Verdict]) -> dict[str, dict[str, bool | None]]:
    """candidate id -> criterion id -> met, for the reward function."""
    table: dict[str, dict[str, Any]] = {}
    for verdict in verdicts:
        table.setdefault(verdict.candidate_id, {})[verdict.criterion_id] = verdict.met
    return table


def p_yes_by_candidate(verdicts: Sequence[Verdict]) -> dict[str, dict[str, float | None]]:
    """candidate id -> criterion id -> P(yes), for soft scoring (None: no usable P(yes))."""
    table: dict[str, dict[str, Any]] = {}
    for verdict in verdicts:
        table.setdefault(verdict.candidate_id, {})[verdict.criterion_id] = verdict.p_yes
    return table
