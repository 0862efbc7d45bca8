"""Datasets in and out: prompts, HealthBench, and the paper authors' published rubric schema.

Inputs:
- prompt files for `load_prompts`: `.jsonl` (`{"id", "prompt" | "messages", "domain"?,
  "metadata"?}` per line), `.parquet` with the same columns, a directory written by Hugging Face
  `datasets` (`save_to_disk`, a Dataset or a DatasetDict), the paper's `.json` list of
  `{"prompt": ...}` objects, a HealthBench `.jsonl`, or the published rubric dataset;
- HealthBench ("oss_eval" format) for `load_healthbench`: prompts, rubrics (points -10..10, tags)
  and the physician-written ideal completions as candidates;
- rubrics and reference answers that come with the data, for `load_given` (harness.datasets.given);
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

import json
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from harness.datasets.given import (
    PROPOSE_ALL,
    RUBRIC_FORMATS,
    GivenData,
    carries_rubrics,
    file_format,
    load_given,
)
from harness.datasets.locations import invalid_record, location, repeat_of
from harness.datasets.rubric_sets import (
    IDEAL_MODEL,
    HealthBenchData,
    export_rubric_dataset,
    import_rubric_dataset,
    load_healthbench,
)
from harness.jsonl import InputError, read_json, read_lines, read_records, write_records
from harness.types import Candidate, Prompt, Rubric

__all__ = [
    "IDEAL_MODEL",
    "PROPOSE_ALL",
    "RUBRIC_FORMATS",
    "SUPPORTED_PROMPT_FORMATS",
    "GivenData",
    "HealthBenchData",
    "carries_rubrics",
    "export_rubric_dataset",
    "file_format",
    "import_rubric_dataset",
    "load_candidates",
    "load_given",
    "load_healthbench",
    "load_prompts",
    "load_rubrics",
    "save_prompts",
]

SUPPORTED_PROMPT_FORMATS = (
    ".jsonl, .json (a list of {'prompt': ...} objects), .parquet, "
    "or a directory written by datasets' save_to_disk"
)

Row = tuple[int, Any]
Prepare = Callable[[dict[str, Any]], dict[str, Any]]


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
        kind = file_format(path)
        if kind == "healthbench":
            return load_healthbench(path).prompts
        if kind == "published":
            return import_rubric_dataset(path)[0]
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
            raise invalid_record(path, unit, number, exc) from None
        except (TypeError, ValueError) as exc:
            raise InputError(f"{location(path, unit, number)}: {exc}") from None
        if (first := repeat_of(seen, prompt.id, number)) is not None:
            raise InputError(
                f"{location(path, unit, number)}: id: duplicate id {prompt.id!r} "
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


# --- the pipeline's own files ---


def load_candidates(path: Path) -> list[Candidate]:
    return read_records(Path(path), Candidate)


def load_rubrics(path: Path) -> list[Rubric]:
    return read_records(Path(path), Rubric)
