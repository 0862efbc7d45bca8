"""Prompts that come with rubrics: HealthBench ("oss_eval" format: prompts, rubrics with points
-10..10 and tags, physician-written ideal completions) and the paper authors' published rubric
dataset (one `{"prompt", "rubrics": [{"criterion", "weight"}], "number_of_criteria",
"total_weight"}` per line), in and out."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, TypeVar

from pydantic import AfterValidator, ConfigDict, Field, ValidationError

from harness.datasets.locations import invalid_record, repeat_of
from harness.jsonl import InputError, read_lines, write_records
from harness.types import Candidate, ChatMessage, Criterion, Prompt, Record, Rubric

IDEAL_MODEL = "physician-ideal"

R = TypeVar("R", bound=Record)


def _nonzero(weight: int) -> int:
    if weight == 0:
        raise ValueError("cannot be 0")
    return weight


Weight = Annotated[int, Field(ge=-10, le=10), AfterValidator(_nonzero)]


def _valid_lines(path: Path, record_type: type[R]) -> Iterator[tuple[int, R]]:
    """Each line of a JSONL file as `record_type`, read and checked one at a time (a bad line
    fails with its number once the lines before it passed every check)."""
    for number, raw in read_lines(path):
        try:
            record = record_type.model_validate(raw)
        except ValidationError as exc:
            raise invalid_record(path, "line", number, exc) from None
        yield number, record


# --- HealthBench ---


class _HealthBenchCriterion(Record):
    criterion: str = Field(min_length=1)
    points: Weight
    tags: tuple[str, ...] = ()


class _IdealCompletions(Record):
    # the reference completions of other models and their grouping are not physician-written
    model_config = ConfigDict(extra="ignore")
    ideal_completion: str


class _HealthBenchLine(Record):
    # `canary` (a benchmark-contamination marker) is the one other key; nothing uses it
    model_config = ConfigDict(extra="ignore")
    prompt_id: str = Field(min_length=1)
    # lists, not tuples: the error messages then speak JSON's language
    prompt: list[ChatMessage] = Field(min_length=1)
    rubrics: list[_HealthBenchCriterion] = Field(min_length=1)
    example_tags: tuple[str, ...] = ()
    ideal_completions_data: _IdealCompletions | None = None


@dataclass(frozen=True)
class HealthBenchData:
    prompts: list[Prompt]
    rubrics: list[Rubric]
    candidates: list[Candidate]


def load_healthbench(path: Path) -> HealthBenchData:
    """Prompts, version-0 rubrics (criteria c1..cN in file order) and ideal completions."""
    path = Path(path)
    data = HealthBenchData(prompts=[], rubrics=[], candidates=[])
    seen: dict[str, int] = {}
    for number, line in _valid_lines(path, _HealthBenchLine):
        if (first := repeat_of(seen, line.prompt_id, number)) is not None:
            raise InputError(
                f"{path}:{number}: prompt_id: duplicate {line.prompt_id!r} (first at line {first})"
            )
        _add_healthbench_line(data, line)
    return data


def _add_healthbench_line(data: HealthBenchData, line: _HealthBenchLine) -> None:
    data.prompts.append(
        Prompt(
            id=line.prompt_id,
            prompt=tuple(line.prompt),
            domain="health",
            metadata={"example_tags": list(line.example_tags)},
        )
    )
    criteria = tuple(
        Criterion(id=f"c{k}", text=c.criterion, weight=c.points, tags=c.tags)
        for k, c in enumerate(line.rubrics, start=1)
    )
    data.rubrics.append(Rubric(prompt_id=line.prompt_id, version=0, criteria=criteria))
    ideal = line.ideal_completions_data
    if ideal is not None and ideal.ideal_completion.strip():
        data.candidates.append(
            Candidate(
                id=f"{line.prompt_id}:ideal:0",
                prompt_id=line.prompt_id,
                text=ideal.ideal_completion,
                model=IDEAL_MODEL,
                sample_index=0,
                reference=True,
            )
        )


# --- the paper authors' published rubric dataset ---


class _PaperCriterion(Record):
    criterion: str = Field(min_length=1)
    weight: Weight


class _PaperRecord(Record):
    prompt: str = Field(min_length=1)
    rubrics: list[_PaperCriterion] = Field(min_length=1)
    number_of_criteria: int
    total_weight: int


def export_rubric_dataset(path: Path, prompts: Iterable[Prompt], rubrics: Iterable[Rubric]) -> int:
    """Write each prompt with its newest rubric in the published schema; returns the count."""
    path = Path(path)
    newest: dict[str, Rubric] = {}
    for rubric in rubrics:
        if rubric.prompt_id not in newest or rubric.version > newest[rubric.prompt_id].version:
            newest[rubric.prompt_id] = rubric
    prompts = list(prompts)
    missing = [p.id for p in prompts if p.id not in newest]
    if missing:
        raise InputError(f"{path}: no rubric for {len(missing)} prompt(s): {missing[:5]}")
    write_records(path, (_paper_record(p, newest[p.id]) for p in prompts))
    return len(prompts)


def _paper_record(prompt: Prompt, rubric: Rubric) -> _PaperRecord:
    weights = [c.weight for c in rubric.criteria]
    return _PaperRecord(
        prompt=prompt.render(),
        rubrics=[_PaperCriterion(criterion=c.text, weight=c.weight) for c in rubric.criteria],
        number_of_criteria=len(weights),
        # the published data sums every weight; Rubric.total_weight counts positive ones only
        total_weight=sum(weights),
    )


def import_rubric_dataset(path: Path) -> tuple[list[Prompt], list[Rubric]]:
    """Prompts with ids `r-` + sha256(prompt)[:12] (stable across re-imports) and rubrics."""
    path = Path(path)
    prompts: list[Prompt] = []
    rubrics: list[Rubric] = []
    seen: dict[str, int] = {}
    for number, record in _valid_lines(path, _PaperRecord):
        _check_totals(path, number, record)
        prompt_id = "r-" + hashlib.sha256(record.prompt.encode()).hexdigest()[:12]
        if (first := repeat_of(seen, prompt_id, number)) is not None:
            raise InputError(f"{path}:{number}: prompt: the same prompt as line {first}")
        prompts.append(Prompt(id=prompt_id, prompt=record.prompt))
        criteria = tuple(
            Criterion(id=f"c{k}", text=c.criterion, weight=c.weight)
            for k, c in enumerate(record.rubrics, start=1)
        )
        rubrics.append(Rubric(prompt_id=prompt_id, version=0, criteria=criteria))
    return prompts, rubrics


def _check_totals(path: Path, number: int, record: _PaperRecord) -> None:
    weights = [c.weight for c in record.rubrics]
    if record.number_of_criteria != len(weights):
        raise InputError(
            f"{path}:{number}: number_of_criteria: says {record.number_of_criteria} "
            f"but rubrics has {len(weights)}"
        )
    if record.total_weight != sum(weights):
        raise InputError(
            f"{path}:{number}: total_weight: says {record.total_weight} "
            f"but the weights sum to {sum(weights)}"
        )
