"""Clinicians' yes/no labels on (response, criterion) items: read, matched to a run's jobs, and
turned into what `harness compare-verifiers` measures verifiers against (the clinicians'
majority label) and the clinician-to-clinician ceiling.

Two layouts, told apart by the keys of a file's first line:
- the harness's own, one line per item: `candidate_id`, `criterion_id`, and either `label`
  (one clinician: true/false or "yes"/"no"; optional `rater`, their id) or `labels` (a list,
  one per clinician; optional `raters`, their ids in the same order); optional `prompt_id`.
  The same item on two lines is an error: one line holds all of an item's labels.
- HealthBench's meta-evaluation, one line per conversation, completion and criterion:
  `prompt_id`, `prompt` (chat messages), `completion_id`, `completion`, `rubric` (the
  criterion's TEXT), `category`, `binary_labels` (one per physician) and
  `anonymized_physician_ids` (as many). Its items are keyed by completion id and criterion
  text; `match_labels` finds the text in the rubric of the job whose candidate has that id
  (exact once runs of whitespace are one space; case counts).

API:
- `read_label_lines(path)`: (line number, `LabelLine` or `MetaEvalLine`) per line, checked.
- `load_labels(path) -> LabelSet`: every item with every clinician's label (and rater id).
- `match_labels(labels, jobs) -> MatchedLabels`: the items the run has, keyed by the run's
  candidate and criterion ids, and the count of those it has not (none at all: InputError).
- `write_labels(path, items)`: items in the harness's own layout (`labels` and `raters`), e.g.
  a meta-evaluation file's once `match_labels` has found their criterion ids.
- `majority`, `clinician_ceiling`, `clinician_macro_f1`: the reference and the ceiling.

A bad file fails with one line naming file, line and field, e.g.
`labels.jsonl:3: binary_labels: expected a list of booleans`. Exercised by
`pytest tests/test_labels.py -q`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from itertools import permutations
from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator, ConfigDict, Field, ValidationError
from pydantic_core import PydanticCustomError

from harness.datasets.locations import invalid_record, repeat_of
from harness.jsonl import InputError, read_lines, write_records
from harness.metrics import confusion_metrics
from harness.types import ChatMessage, Criterion, Record
from harness.verifier import Job

YES_NO = {"yes": True, "no": False, "true": True, "false": False}
OWN_KEYS = "candidate_id, criterion_id and label (or labels)"
META_KEYS = (
    "prompt_id, prompt, completion_id, completion, rubric, binary_labels and "
    "anonymized_physician_ids"
)
ItemKey = tuple[str, str]  # (candidate id, criterion id)


def _yes_no(value: Any) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in YES_NO:
        return YES_NO[value.strip().lower()]
    raise PydanticCustomError("yes_no", "must be true/false or yes/no")


def _booleans(value: Any) -> list[bool]:
    if not isinstance(value, list) or not all(isinstance(v, bool) for v in value):
        raise PydanticCustomError("booleans", "expected a list of booleans")
    if not value:
        raise PydanticCustomError("booleans", "no labels (an empty list)")
    return value


YesNo = Annotated[bool | None, BeforeValidator(_yes_no)]
Name = Annotated[str, Field(min_length=1)]


class LabelLine(Record):
    """A line of the harness's own layout."""

    candidate_id: Name
    criterion_id: Name
    criterion: Name | None = None  # the criterion's text: matched by it when given
    label: YesNo = None
    labels: list[YesNo] | None = None
    rater: Name | None = None
    raters: list[Name] | None = None
    prompt_id: Name | None = None


class MetaEvalLine(Record):
    """A line of HealthBench's meta-evaluation layout."""

    model_config = ConfigDict(extra="ignore")
    prompt_id: Name
    prompt: list[ChatMessage] = Field(min_length=1)
    completion_id: Name
    completion: str
    rubric: Name
    category: str | None = None
    binary_labels: Annotated[list[bool], BeforeValidator(_booleans)]
    anonymized_physician_ids: list[Name]


@dataclass(frozen=True)
class ClinicianLabel:
    met: bool
    rater: str | None = None  # None: the file does not say who


@dataclass(frozen=True)
class LabelledItem:
    """One (response, criterion) item and every clinician's label on it. `criterion` is a
    criterion id, or in a meta-evaluation file before matching, the criterion's text."""

    candidate_id: str
    criterion: str
    labels: tuple[ClinicianLabel, ...]
    prompt_id: str | None = None
    criterion_text: str | None = None  # where known: matched by it, so a renumbering is harmless


@dataclass(frozen=True)
class LabelSet:
    path: Path
    items: list[LabelledItem]  # in file order
    by_text: bool  # a meta-evaluation file: items name criteria by their text


@dataclass(frozen=True)
class MatchedLabels:
    path: Path
    items: list[LabelledItem]  # the run's: `criterion` is the run's criterion id
    num_labelled: int
    num_unmatched: int


# ---------------------------------------------------------------- reading


def read_label_lines(path: Path) -> Iterator[tuple[int, LabelLine | MetaEvalLine]]:
    """Every line of a labels file, typed by the layout its first line shows, and checked."""
    path = Path(path)
    line_type: type[LabelLine] | type[MetaEvalLine] | None = None
    for number, raw in read_lines(path):
        line_type = line_type or _layout(path, number, raw)
        try:
            line = line_type.model_validate(raw)
        except ValidationError as exc:
            raise _one_line(invalid_record(path, "line", number, exc)) from None
        _check_raters(path, number, line)
        yield number, line
    if line_type is None:
        raise InputError(f"{path}: no labels: the file is empty")


def _layout(path: Path, number: int, raw: dict[str, Any]) -> type[LabelLine] | type[MetaEvalLine]:
    if "candidate_id" in raw or "criterion_id" in raw:
        return LabelLine
    if {"completion_id", "rubric", "binary_labels"} & raw.keys():
        return MetaEvalLine
    found = ", ".join(sorted(raw)) or "none"
    raise InputError(
        f"{path}:{number}: (record): neither layout of labels (keys found: {found}); the "
        f"harness's needs {OWN_KEYS}, HealthBench's meta-evaluation needs {META_KEYS}"
    )


def _one_line(error: InputError) -> InputError:
    """The first problem of a line, and how many more it has."""
    first, *more = str(error).splitlines()
    return InputError(f"{first} (and {len(more)} more on this line)" if more else first)


def _check_raters(path: Path, number: int, line: LabelLine | MetaEvalLine) -> None:
    where = f"{path}:{number}"
    if isinstance(line, MetaEvalLine):
        labels, raters = line.binary_labels, line.anonymized_physician_ids
        field = "anonymized_physician_ids"
    else:
        labels, raters, field = _own_labels(where, line)
    if raters is None:
        return
    if len(raters) != len(labels):
        raise InputError(f"{where}: {field}: {len(raters)} ids for {len(labels)} labels")
    twice = next((r for i, r in enumerate(raters) if r in raters[:i]), None)
    if twice is not None:
        raise InputError(f"{where}: {field}: {twice!r} twice: one label per clinician")


def _own_labels(where: str, line: LabelLine) -> tuple[list[Any], list[str] | None, str]:
    if line.label is None and line.labels is None:
        raise InputError(
            f"{where}: label: missing: give `label` (one clinician's) or `labels` "
            "(a list, one per clinician)"
        )
    if line.label is not None and line.labels is not None:
        raise InputError(f"{where}: labels: give `label` or `labels`, not both")
    if line.labels is not None:
        if line.rater is not None:
            raise InputError(f"{where}: rater: goes with `label`; with `labels` give `raters`")
        if not line.labels:
            raise InputError(f"{where}: labels: no labels (an empty list)")
        if None in line.labels:
            raise InputError(f"{where}: labels: null where true/false or yes/no was expected")
        return line.labels, line.raters, "raters"
    if line.raters is not None:
        raise InputError(f"{where}: raters: goes with `labels`; with `label` give `rater`")
    return [line.label], None if line.rater is None else [line.rater], "rater"


def load_labels(path: Path) -> LabelSet:
    """Every item of a labels file, in either layout; the same item twice is an error that
    names both lines."""
    path = Path(path)
    items: list[LabelledItem] = []
    seen: dict[str, int] = {}
    by_text = False
    for number, line in read_label_lines(path):
        item = _item(line)
        by_text = isinstance(line, MetaEvalLine)
        key = repr((item.candidate_id, _criterion_key(item.criterion, by_text)))
        if (first := repeat_of(seen, key, number)) is not None:
            field = "rubric" if by_text else "criterion_id"
            raise InputError(
                f"{path}:{number}: {field}: candidate {item.candidate_id!r} and this criterion "
                f"are labelled on line {first} too: give all of an item's labels on one line"
            )
        items.append(item)
    return LabelSet(path=path, items=items, by_text=by_text)


def _item(line: LabelLine | MetaEvalLine) -> LabelledItem:
    if isinstance(line, MetaEvalLine):
        ids = line.anonymized_physician_ids
        return LabelledItem(
            candidate_id=line.completion_id,
            criterion=line.rubric,
            labels=tuple(ClinicianLabel(m, r) for m, r in zip(line.binary_labels, ids)),
            prompt_id=line.prompt_id,
        )
    if line.labels is None:
        votes, raters = [line.label], [line.rater]
    else:
        votes, raters = line.labels, line.raters or [None] * len(line.labels)
    return LabelledItem(
        candidate_id=line.candidate_id,
        criterion=line.criterion_id,
        labels=tuple(ClinicianLabel(bool(m), r) for m, r in zip(votes, raters)),
        prompt_id=line.prompt_id,
        criterion_text=line.criterion,
    )


def _criterion_key(criterion: str, by_text: bool) -> str:
    return " ".join(criterion.split()) if by_text else criterion


# ---------------------------------------------------------------- matching and writing


def match_labels(labels: LabelSet, jobs: Sequence[Job]) -> MatchedLabels:
    """The labelled items the run has, keyed by its candidate and criterion ids (a prompt id
    is carried along, not matched: candidate ids are unique in a run); the others are
    counted. An item that names its criterion's text is matched by the text (a refined rubric
    renumbers its criteria), else by the id. None matched at all is an InputError with an
    example of a key not found."""
    found_by: dict[tuple[str, str, bool], Criterion] = {}
    prompts: dict[str, str] = {}
    for job in jobs:
        prompts[job.candidate.id] = job.prompt.id
        for criterion in job.rubric.criteria:
            # a text repeated within one rubric goes to its first criterion
            found_by.setdefault((job.candidate.id, _criterion_key(criterion.text, True), True),
                                criterion)  # fmt: skip
            found_by.setdefault((job.candidate.id, criterion.id, False), criterion)
    matched = []
    for item in labels.items:
        criterion = found_by.get(_lookup_key(item, labels.by_text))
        if criterion is not None:
            prompt_id = prompts[item.candidate_id]
            matched.append(replace(item, prompt_id=prompt_id, criterion=criterion.id,
                                   criterion_text=criterion.text))  # fmt: skip
    if labels.items and not matched:
        raise InputError(_none_matched(labels, jobs))
    return MatchedLabels(labels.path, matched, len(labels.items), len(labels.items) - len(matched))


def _lookup_key(item: LabelledItem, by_text: bool) -> tuple[str, str, bool]:
    text = item.criterion if by_text else item.criterion_text
    if text is not None:
        return item.candidate_id, _criterion_key(text, True), True
    return item.candidate_id, item.criterion, False


def _none_matched(labels: LabelSet, jobs: Sequence[Job]) -> str:
    item = labels.items[0]
    criterion = item.criterion if len(item.criterion) <= 60 else item.criterion[:57] + "..."
    kind = "completion_id" if labels.by_text else "candidate_id"
    field = "rubric" if labels.by_text else "criterion_id"
    run = f"e.g. candidate {jobs[0].candidate.id!r}" if jobs else "none"
    return (
        f"{labels.path}: none of its {len(labels.items)} labelled items is in this run, e.g. "
        f"{kind} {item.candidate_id!r} with {field} {criterion!r} (the run's candidates: "
        f"{run}): were the labels written for another run's responses?"
    )


def write_labels(path: Path, items: Iterable[LabelledItem]) -> int:
    """`items` (criterion ids, not texts) in the harness's own layout, one line each with
    `labels` and, where every rater is known, `raters`; returns the count."""
    lines = [_line(item) for item in items]
    write_records(path, (line.model_dump(exclude_none=True) for line in lines))
    return len(lines)


def _line(item: LabelledItem) -> LabelLine:
    raters = [label.rater for label in item.labels]
    return LabelLine(
        candidate_id=item.candidate_id,
        criterion_id=item.criterion,
        criterion=item.criterion_text,
        labels=[label.met for label in item.labels],
        raters=None if None in raters else raters,
        prompt_id=item.prompt_id,
    )


# ---------------------------------------------------------------- the reference and the ceiling


def majority(labels: Sequence[ClinicianLabel]) -> bool | None:
    """The clinicians' majority label; None for an even split (no majority)."""
    yes = sum(label.met for label in labels)
    return None if 2 * yes == len(labels) else 2 * yes > len(labels)


def majority_labels(matched: MatchedLabels) -> dict[ItemKey, bool | None]:
    """Each matched item's majority label, None where the clinicians split evenly."""
    return {(i.candidate_id, i.criterion): majority(i.labels) for i in matched.items}


def _multi_rated(matched: MatchedLabels) -> list[LabelledItem]:
    return [item for item in matched.items if len(item.labels) >= 2]


def clinician_ceiling(matched: MatchedLabels) -> dict[str, Any]:
    """Clinician against clinician, as HealthBench's meta-evaluation scores a physician: over
    the items two or more labelled, every ordered pair of two clinicians' labels on one item
    (the first as the prediction, the second as the reference), pooled."""
    items = _multi_rated(matched)
    pairs = [(a.met, b.met) for item in items for a, b in permutations(item.labels, 2)]
    scores = confusion_metrics(pairs) if pairs else {}
    return {
        "num_multi_rated": len(items),
        "num_rater_pairs": len(pairs),
        "rater_agreement": scores.get("accuracy"),
        "rater_macro_f1": scores.get("macro_f1"),
    }


def clinician_macro_f1(
    verdicts: Mapping[ItemKey, bool | None], matched: MatchedLabels
) -> float | None:
    """A verifier's macro F1 against each clinician's own label, pooled over the items two or
    more clinicians labelled (the ceiling's items): HealthBench's headline score for a
    grader. Unscored verdicts are left out."""
    pairs = [
        (verdict, label.met)
        for item in _multi_rated(matched)
        if (verdict := verdicts.get((item.candidate_id, item.criterion))) is not None
        for label in item.labels
    ]
    return confusion_metrics(pairs)["macro_f1"] if pairs else None
