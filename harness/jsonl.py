"""JSONL on disk: every stage reads records with errors that name file, line and field, and
writes its file atomically (a temporary file renamed into place), so an interrupted run never
leaves half a file behind.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

T = TypeVar("T", bound=BaseModel)


class InputError(ValueError):
    """Bad input data; the message is `file:line: field: problem`."""


def read_lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for every non-blank line; a malformed line raises InputError."""
    try:
        handle = path.open(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})") from exc
    with handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(
                    f"{path}:{number}: not valid JSON ({exc.msg}, column {exc.colno})"
                ) from None
            if not isinstance(value, dict):
                raise InputError(
                    f"{path}:{number}: expected a JSON object, got {type(value).__name__}"
                )
            yield number, value


def validation_message(path: Path, line: int, exc: ValidationError) -> str:
    problems = []
    for error in exc.errors():
        field = ".".join(str(p) for p in error["loc"]) or "(record)"
        problems.append(f"{path}:{line}: {field}: {error['msg']}")
    return "\n".join(problems)


def read_records(
    path: Path,
    record_type: type[T],
    prepare: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> list[T]:
    """Parse every line into `record_type`; the first bad line raises InputError."""
    records = []
    for number, value in read_lines(path):
        try:
            records.append(record_type.model_validate(prepare(value) if prepare else value))
        except ValidationError as exc:
            raise InputError(validation_message(path, number, exc)) from None
        except (TypeError, ValueError, KeyError) as exc:
            raise InputError(f"{path}:{number}: {exc}") from None
    return records


def write_atomic(path: Path, lines: Iterable[str]) -> None:
    """Write text lines to `path` whole or not at all."""
    write_bytes_atomic(path, "".join(line.rstrip("\n") + "\n" for line in lines).encode())


def write_bytes_atomic(path: Path, data: bytes, mode: int | None = None) -> None:
    """Write to a temporary file beside `path`, then rename it into place: a reader (or a
    resumed run) sees the old file or the new one, never half of one. `mode`: permissions
    (default: the temporary file's, owner-only)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_records(path: Path, records: Iterable[BaseModel | dict[str, Any]]) -> None:
    write_atomic(
        path,
        (
            r.model_dump_json() if isinstance(r, BaseModel) else json.dumps(r, ensure_ascii=False)
            for r in records
        ),
    )
