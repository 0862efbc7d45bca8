"""Proposer: writes the initial rubric of every prompt from the prompt alone, and rewrites a
rubric from a pair of strong responses (the refinement step, driven by `refiner.py`).

The proposer's answer is constrained to a JSON array of `{criterion, weight}` with weight 1..3,
a bounded number of criteria and a bounded criterion length; the schema comes from the same
pydantic type that parses the answer. Criteria are renumbered c1..cN. A prompt whose rubric
cannot be obtained is recorded as a skip, never given an empty rubric.

    harness propose -c configs/default.yaml
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel

from harness.config import ProposeConfig
from harness.prompts import render
from harness.roles import Role
from harness.stage_config import MAX_CRITERIA
from harness.types import (
    Candidate,
    ChatRequest,
    Criterion,
    Prompt,
    Rubric,
    RubricChange,
    Skip,
    json_schema_of,
)


class ProposedCriterion(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    criterion: str
    weight: Literal[1, 2, 3]


def proposal_type(settings: ProposeConfig) -> type[RootModel[Any]]:
    """The proposer's answer type: a list of criteria within the configured bounds. With
    `criterion_pattern` the pattern alone bounds a criterion's text (grammar engines cannot
    combine a pattern with length bounds; the pattern carries its own, e.g. `{20,120}`)."""
    bounds = (
        {"pattern": settings.criterion_pattern}
        if settings.criterion_pattern
        else {"min_length": settings.min_criterion_chars,
              "max_length": settings.max_criterion_chars}
    )  # fmt: skip
    text = Annotated[str, Field(**bounds)]

    class Item(ProposedCriterion):
        criterion: text  # type: ignore[valid-type]

    items = Annotated[
        list[Item], Field(min_length=settings.min_criteria, max_length=settings.max_criteria)
    ]

    class Proposal(RootModel[items]):  # type: ignore[valid-type]
        pass

    return Proposal


@dataclass(frozen=True)
class Refinement:
    """One refinement request: a prompt, its current rubric and the pair to learn from."""

    prompt: Prompt
    rubric: Rubric
    pair: tuple[Candidate, Candidate]


def propose_request(
    prompt: Prompt,
    settings: ProposeConfig,
    role: Role,
    templates: Path,
    proposal: type[RootModel[Any]],
) -> ChatRequest:
    messages = render(
        "propose",
        templates,
        prompt=prompt.render(),
        min_criteria=settings.min_criteria,
        max_criteria=settings.max_criteria,
    )
    return ChatRequest(
        messages=messages,
        sampling=role.config.sampling,
        id=prompt.id,
        json_schema=json_schema_of(proposal),
        schema_name="rubric",
    )


def refine_request(
    item: Refinement,
    settings: ProposeConfig,
    role: Role,
    templates: Path,
    proposal: type[RootModel[Any]],
) -> ChatRequest:
    messages = render(
        "refine",
        templates,
        prompt=item.prompt.render(),
        criteria=item.rubric.criteria,
        response_a=item.pair[0].text,
        response_b=item.pair[1].text,
        min_criteria=settings.min_criteria,
        max_criteria=settings.max_criteria,
    )
    return ChatRequest(
        messages=messages,
        sampling=role.config.sampling,
        id=item.prompt.id,
        json_schema=json_schema_of(proposal),
        schema_name="rubric",
    )


def criteria_from(parsed: list[dict[str, Any]]) -> tuple[Criterion, ...]:
    """The criteria of a parsed answer; a criterion repeated word for word is kept once (a
    rubric that lists it twice would punish one mistake twice)."""
    unique: dict[str, dict[str, Any]] = {}
    for item in parsed:
        unique.setdefault(_norm(item["criterion"]), item)
    return tuple(
        Criterion(id=f"c{i}", text=item["criterion"].strip() or "(empty)", weight=item["weight"])
        for i, item in enumerate(unique.values(), start=1)
    )


def refine_bounds(settings: ProposeConfig, rubric: Rubric) -> ProposeConfig:
    """A rewrite may keep every criterion of the rubric it refines: a clinicians' rubric
    longer than `propose.max_criteria` is not cut down to it."""
    longest = min(max(settings.max_criteria, len(rubric.criteria)), MAX_CRITERIA)
    return settings.model_copy(update={"max_criteria": longest})


def keep_given_points(old: Rubric, new_criteria: Sequence[Criterion]) -> tuple[Criterion, ...]:
    """A criterion the rewrite keeps word for word keeps its tags, and its points where they
    are outside the proposer's 1..3 scale (a clinician's -10..10: a penalty stays a penalty)."""
    given = {_norm(c.text): c for c in old.criteria}
    kept = []
    for criterion in new_criteria:
        source = given.get(_norm(criterion.text))
        if source is not None:
            weight = criterion.weight if 1 <= source.weight <= 3 else source.weight
            criterion = criterion.model_copy(update={"weight": weight, "tags": source.tags})
        kept.append(criterion)
    return tuple(kept)


def rubric_change(old: Rubric, new_criteria: Sequence[Criterion]) -> RubricChange:
    """Criteria added, removed and reweighted, matched by normalised text."""
    before = {_norm(c.text): c.weight for c in old.criteria}
    after = {_norm(c.text): c.weight for c in new_criteria}
    return RubricChange(
        added=tuple(t for t in after if t not in before),
        removed=tuple(t for t in before if t not in after),
        reweighted=tuple(t for t in after if t in before and before[t] != after[t]),
    )


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def ask_for_criteria(
    role: Role, requests: Sequence[ChatRequest], prompt_ids: Sequence[str], stage: str
) -> tuple[dict[int, tuple[Criterion, ...]], list[Skip]]:
    """Send the batch; the criteria of each answer that parsed (by request index), and a
    skip with the reason for each that did not."""
    completions = role.generate(requests, description=f"{stage} ({role.config.label})")
    found, skips = {}, []
    for index, (prompt_id, completion) in enumerate(zip(prompt_ids, completions)):
        if completion.parsed is None:
            reason = completion.error or "no rubric"
            skips.append(Skip(stage=stage, prompt_id=prompt_id, reason=reason))
        else:
            found[index] = criteria_from(completion.parsed)
    return found, skips


def propose(
    role: Role, prompts: Sequence[Prompt], settings: ProposeConfig, templates: Path
) -> tuple[list[Rubric], list[Skip]]:
    """Version-0 rubrics for every prompt, in one batch."""
    proposal = proposal_type(settings)
    requests = [propose_request(p, settings, role, templates, proposal) for p in prompts]
    found, skips = ask_for_criteria(role, requests, [p.id for p in prompts], "propose")
    rubrics = [Rubric(prompt_id=prompts[i].id, criteria=criteria) for i, criteria in found.items()]
    return rubrics, skips


def rewrite(
    role: Role, items: Sequence[Refinement], settings: ProposeConfig, templates: Path
) -> tuple[list[Rubric], list[Skip]]:
    """The refined rubric of every item, in one batch; a failure keeps no new version."""
    requests = []
    for item in items:
        bounds = refine_bounds(settings, item.rubric)
        requests.append(refine_request(item, bounds, role, templates, proposal_type(bounds)))
    found, skips = ask_for_criteria(role, requests, [i.prompt.id for i in items], "refine")
    found = {i: keep_given_points(items[i].rubric, criteria) for i, criteria in found.items()}
    rubrics = [
        Rubric(
            prompt_id=items[i].prompt.id,
            version=items[i].rubric.version + 1,
            parent_version=items[i].rubric.version,
            criteria=criteria,
            refined_from=(items[i].pair[0].id, items[i].pair[1].id),
            changes=rubric_change(items[i].rubric, criteria),
        )
        for i, criteria in found.items()
    ]
    return rubrics, skips
