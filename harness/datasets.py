"""Datasets in and out: prompts, HealthBench, and the paper authors' published rubric schema.

Inputs:
- prompt files for `load_prompts`: `.jsonl` (`{"id", "prompt" | "messages", "domain"?,
  "metadata"?}` per line), `.parquet` with the same columns, a directory written by Hugging Face
  `datasets` (`save_to_disk`, a Dataset or a DatasetDict), the paper's `.json` list of
  `{"prompt": ...}` objects, or a HealthBench `.jsonl`;
- HealthBench ("oss_eval" format) for `load_healthbench`: prompts, rubrics (points -10..10, tags)
  and the physician-written ideal completions as candidates;
- the published rubric dataset (one `{"prompt", "rubrics": [{"criterion", "weight"}],
  "number_of_criteria", "total_weight"}` per line) for `import_rubric_dataset`.

Outputs: the harness's own records (`Prompt`, `Rubric`, `Candidate`); `save_prompts` writes
`.jsonl` or `.parquet`, `export_rubric_dataset` writes the published schema. Every bad input
raises `InputError` as `file:line: field: problem` (tables and JSON lists say `row N` / `item N`,
counted from 0 as `data[i]` counts).

    .venv/bin/python -c "from pathlib import Path; from harness.datasets import load_healthbench; \
print(len(load_healthbench(Path('healthbench.jsonl')).rubrics))"
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, ConfigDict, Field, ValidationError

from harness.jsonl import (
    InputError,
    read_json,
    read_lines,
    read_records,
    validation_message,
    write_records,
)
from harness.types import Candidate, ChatMessage, Criterion, Prompt, Record, Rubric

SUPPORTED_PROMPT_FORMATS = (
    ".jsonl, .json (a list of {'prompt': ...} objects), .parquet, "
    "or a directory written by datasets' save_to_disk"
)
IDEAL_MODEL = "physician-ideal"

Row = tuple[int, Any]
Prepare = Callable[[dict[str, Any]], dict[str, Any]]


def _nonzero(weight: int) -> int:
    if weight == 0:
        raise ValueError("cannot be 0")
    return weight


Weight = Annotated[int, Field(ge=-10, le=10), AfterValidator(_nonzero)]


# --- where an error is: lines count from 1 (as editors do), rows and items from 0 ---


def _where(path: Path, unit: str, number: int) -> str:
    return f"{path}:{number}" if unit == "line" else f"{path}:{unit} {number}"


def _invalid(path: Path, unit: str, number: int, exc: ValidationError) -> InputError:
    if unit == "line":
        return InputError(validation_message(path, number, exc))
    # validation_message speaks of lines; a table's rows need their own word
    where = _where(path, unit, number)
    return InputError(
        "\n".join(
            f"{where}: {'.'.join(map(str, e['loc'])) or '(record)'}: {e['msg']}"
            for e in exc.errors()
        )
    )


def _repeat_of(seen: dict[str, int], key: str, number: int) -> int | None:
    """Where `key` was first seen, or None when this is its first appearance."""
    first = seen.setdefault(key, number)
    return None if first == number else first


# --- prompts ---


def load_prompts(path: Path) -> list[Prompt]:
    """Read prompts from any supported format; ids must be present and unique, and there
    must be at least one (an empty file fails here, before any engine starts)."""
    prompts = _load_prompts(Path(path))
    if not prompts:
        raise InputError(f"{path}: no prompts in this file; a run needs at least one")
    return prompts


def _load_prompts(path: Path) -> list[Prompt]:
    if path.is_dir():
        return _parse_prompts(path, enumerate(_saved_dataset_rows(path)), "row", _table_fields)
    if not path.exists():
        raise InputError(f"{path}: cannot read (no such file or directory)")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        if _is_healthbench(path):
            return load_healthbench(path).prompts
        return _parse_prompts(path, read_lines(path), "line", _prompt_fields)
    if suffix == ".parquet":
        return _parse_prompts(path, enumerate(_parquet_rows(path)), "row", _table_fields)
    if suffix == ".json":
        return _parse_prompts(path, _json_list_rows(path), "item", _prompt_fields)
    raise InputError(f"{path}: unsupported prompt file; give {SUPPORTED_PROMPT_FORMATS}")


def _parse_prompts(path: Path, rows: Iterable[Row], unit: str, prepare: Prepare) -> list[Prompt]:
    prompts: list[Prompt] = []
    seen: dict[str, int] = {}
    for number, raw in rows:
        try:
            prompt = Prompt.model_validate(prepare(raw))
        except ValidationError as exc:
            raise _invalid(path, unit, number, exc) from None
        except (TypeError, ValueError) as exc:
            raise InputError(f"{_where(path, unit, number)}: {exc}") from None
        if (first := _repeat_of(seen, prompt.id, number)) is not None:
            raise InputError(
                f"{_where(path, unit, number)}: id: duplicate id {prompt.id!r} "
                f"(first at {unit} {first})"
            )
        prompts.append(prompt)
    return prompts


def _prompt_fields(raw: dict[str, Any]) -> dict[str, Any]:
    fields = dict(raw)
    if "messages" in fields:
        if "prompt" in fields:
            raise ValueError("prompt: give either 'prompt' or 'messages', not both")
        fields["prompt"] = fields.pop("messages")
    if "id" not in fields:
        raise ValueError("id: missing (every prompt needs a stable id so that a run can resume)")
    if fields.get("prompt") in ("", []):
        raise ValueError("prompt: empty")
    return fields


def _table_fields(raw: dict[str, Any]) -> dict[str, Any]:
    """A table has every column in every row: a null cell means the field is absent, and
    metadata is stored as JSON text because Arrow cannot hold dicts of varying keys."""
    fields = {k: v for k, v in raw.items() if v is not None}
    if isinstance(fields.get("metadata"), str):
        try:
            fields["metadata"] = json.loads(fields["metadata"])
        except json.JSONDecodeError as exc:
            raise ValueError(f"metadata: not valid JSON ({exc.msg})") from None
    return _prompt_fields(fields)


def _is_healthbench(path: Path) -> bool:
    with closing(read_lines(path)) as lines:
        first = next(lines, None)
    return first is not None and "prompt_id" in first[1] and "rubrics" in first[1]


def _json_list_rows(path: Path) -> Iterator[Row]:
    data = read_json(path)
    if not isinstance(data, list):
        raise InputError(f"{path}: expected a JSON list of objects, got {type(data).__name__}")
    for index, item in enumerate(data):
        if not isinstance(item, dict):
            raise InputError(f"{path}:item {index}: expected an object, got {type(item).__name__}")
        # the paper's sample prompts carry no ids; position is the only stable name they have
        yield index, {"id": f"prompt-{index}", **item}


def _parquet_rows(path: Path) -> list[dict[str, Any]]:
    import pyarrow
    import pyarrow.parquet

    try:
        return pyarrow.parquet.read_table(path).to_pylist()
    except (OSError, pyarrow.ArrowException) as exc:
        raise InputError(f"{path}: cannot read as parquet ({exc})") from None


def _saved_dataset_rows(path: Path) -> list[dict[str, Any]]:
    import datasets

    try:
        saved = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as exc:
        raise InputError(
            f"{path}: not a dataset written by save_to_disk ({exc}); "
            f"give {SUPPORTED_PROMPT_FORMATS}"
        ) from None
    if isinstance(saved, datasets.DatasetDict):
        splits = list(saved)
        if "train" not in saved and len(splits) != 1:
            raise InputError(f"{path}: no 'train' split and more than one to choose from: {splits}")
        saved = saved["train" if "train" in saved else splits[0]]
    return saved.to_list()


def save_prompts(path: Path, prompts: Iterable[Prompt]) -> None:
    """Write `.jsonl` or `.parquet` (atomically) so that `load_prompts` reads back the same."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        write_records(path, prompts)
    elif suffix == ".parquet":
        _write_parquet(path, prompts)
    else:
        raise InputError(f"{path}: prompts can be saved as .jsonl or .parquet")


def _write_parquet(path: Path, prompts: Iterable[Prompt]) -> None:
    import pyarrow
    import pyarrow.parquet

    message = pyarrow.struct([("role", pyarrow.string()), ("content", pyarrow.string())])
    schema = pyarrow.schema(
        [
            ("id", pyarrow.string()),
            # a column holds one type: plain prompts and conversations get one column each
            ("prompt", pyarrow.string()),
            ("messages", pyarrow.list_(message)),
            ("domain", pyarrow.string()),
            ("metadata", pyarrow.string()),
        ]
    )
    rows = [
        {
            "id": p.id,
            "prompt": p.prompt if isinstance(p.prompt, str) else None,
            "messages": None if isinstance(p.prompt, str) else [m.model_dump() for m in p.prompt],
            "domain": p.domain,
            "metadata": json.dumps(p.metadata, ensure_ascii=False),
        }
        for p in prompts
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        pyarrow.parquet.write_table(pyarrow.Table.from_pylist(rows, schema=schema), tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


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
    for number, raw in read_lines(path):
        try:
            line = _HealthBenchLine.model_validate(raw)
        except ValidationError as exc:
            raise _invalid(path, "line", number, exc) from None
        if (first := _repeat_of(seen, line.prompt_id, number)) is not None:
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
    for number, raw in read_lines(path):
        try:
            record = _PaperRecord.model_validate(raw)
        except ValidationError as exc:
            raise _invalid(path, "line", number, exc) from None
        _check_totals(path, number, record)
        prompt_id = "r-" + hashlib.sha256(record.prompt.encode()).hexdigest()[:12]
        if (first := _repeat_of(seen, prompt_id, number)) is not None:
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


# --- the pipeline's own files ---


def load_candidates(path: Path) -> list[Candidate]:
    return read_records(Path(path), Candidate)


def load_rubrics(path: Path) -> list[Rubric]:
    return read_records(Path(path), Rubric)
