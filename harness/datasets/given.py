"""Rubrics and responses that come with the data: a hospital's own rubrics become version 0 of
a run (the proposer writes only the missing ones), and reference answers join the candidates.

A rubric file is one of:
- the harness's rubrics JSONL (`prompt_id`, `criteria`, as a run's `rubrics.jsonl`): a prompt's
  newest version is taken, so another run's rubrics can seed this one;
- the paper authors' published rubric dataset (`prompt`, `rubrics`, `number_of_criteria`,
  `total_weight`): matched to the run's prompts by the prompt's text;
- HealthBench (`prompt_id`, `prompt`, `rubrics` with points -10..10 and tags): its physician
  ideal completions come along as reference candidates.

Rubrics for prompts outside the run (cut by `data.max_prompts`, or of another set) are counted,
not used; a file whose rubrics match none of the run's prompts is an error.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from harness.datasets.rubric_sets import import_rubric_dataset, load_healthbench
from harness.jsonl import InputError, read_lines, read_records
from harness.types import Candidate, Prompt, Rubric, latest_versions

RUBRIC_FORMATS = (
    "the harness's rubrics JSONL (prompt_id, criteria), the paper's published rubric dataset "
    "(prompt, rubrics, number_of_criteria, total_weight) or HealthBench (prompt_id, prompt, "
    "rubrics)"
)
PROPOSE_ALL = "propose"  # `data.rubrics: propose` ignores the rubrics the data carries

Format = Literal["healthbench", "published", "rubrics", "meta-eval", "labels", "other"]


def file_format(path: Path) -> Format | None:
    """What a JSONL file holds, by the keys of its first line; None when it has no lines."""
    with closing(read_lines(path)) as lines:
        first = next(lines, None)
    if first is None:
        return None
    keys = set(first[1])
    if {"binary_labels", "completion_id", "rubric"} <= keys:
        return "meta-eval"
    if {"prompt_id", "rubrics"} <= keys:
        return "healthbench"
    if {"rubrics", "number_of_criteria"} <= keys:
        return "published"
    if {"prompt_id", "criteria"} <= keys:
        return "rubrics"
    if {"candidate_id", "criterion_id"} <= keys:
        return "labels"
    return "other"


def carries_rubrics(path: Path) -> bool:
    """Whether a prompts file brings its own rubrics (HealthBench, the published dataset)."""
    return (
        path.suffix.lower() == ".jsonl"
        and path.is_file()
        and (file_format(path) in ("healthbench", "published"))
    )


@dataclass(frozen=True)
class GivenData:
    """Version-0 rubrics and candidates for the run's prompts, in prompt order."""

    rubrics: list[Rubric] = field(default_factory=list)
    candidates: list[Candidate] = field(default_factory=list)
    outside_run: int = 0  # rubrics of prompts that are not in this run


def load_given(path: Path, prompts: Sequence[Prompt]) -> GivenData:
    """The rubrics (and reference answers) of `path` for `prompts`."""
    kind = file_format(path)
    if kind is None:
        raise InputError(f"{path}: no rubrics in this file (give {RUBRIC_FORMATS})")
    if kind == "healthbench":
        data = load_healthbench(path)
        return _for_prompts(path, prompts, data.rubrics, data.candidates)
    if kind == "published":
        return _for_prompts(path, prompts, _published_by_text(path, prompts), [])
    if kind == "rubrics":
        newest = latest_versions(read_records(path, Rubric))
        return _for_prompts(path, prompts, [_as_version_0(r) for r in newest.values()], [])
    raise InputError(f"{path}:1: not a rubric file; give {RUBRIC_FORMATS}")


def _published_by_text(path: Path, prompts: Sequence[Prompt]) -> list[Rubric]:
    """The published dataset names prompts by their text: rename its rubrics to the run's ids
    (rubrics of prompts the run does not have keep the dataset's own ids)."""
    by_text = {p.render(): p.id for p in prompts}
    texts, rubrics = import_rubric_dataset(path)
    renamed = []
    for prompt, rubric in zip(texts, rubrics, strict=True):
        prompt_id = by_text.get(prompt.render(), rubric.prompt_id)
        renamed.append(rubric.model_copy(update={"prompt_id": prompt_id}))
    return renamed


def _as_version_0(rubric: Rubric) -> Rubric:
    return Rubric(prompt_id=rubric.prompt_id, criteria=rubric.criteria)


def _for_prompts(
    path: Path, prompts: Sequence[Prompt], rubrics: list[Rubric], candidates: list[Candidate]
) -> GivenData:
    order = {p.id: i for i, p in enumerate(prompts)}
    kept = sorted((r for r in rubrics if r.prompt_id in order), key=lambda r: order[r.prompt_id])
    if rubrics and not kept:
        raise InputError(
            f"{path}: none of its {len(rubrics)} rubrics is for a prompt of this run (its first "
            f"is for {rubrics[0].prompt_id!r}; the run's first prompt is {prompts[0].id!r}); "
            "give the rubric file that belongs to data.prompts"
        )
    return GivenData(
        rubrics=kept,
        candidates=[c for c in candidates if c.prompt_id in order],
        outside_run=len(rubrics) - len(kept),
    )
