"""JSONL on disk: every stage reads records with errors that name file, line and field, and
writes its file atomically (a temporary file renamed into place), so an interrupted run never
leaves half a file behind.
"""

from __future__ import annotations

import codecs
import errno
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

T = TypeVar("T", bound=BaseModel)
SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class InputError(ValueError):
    """Bad input data; the message is `file:line: field: problem`."""


def decode(path: Path, data: bytes, line: int = 1, offset: int = 0) -> str:
    """`data` as UTF-8 text, a leading byte-order mark dropped. A NUL byte counts as not
    UTF-8: UTF-8 allows it, but only UTF-16 text is full of them. `line` and `offset`: where
    `data` begins in the file, so that the error points into the file."""
    skip = len(codecs.BOM_UTF8) if offset == 0 and data.startswith(codecs.BOM_UTF8) else 0
    try:
        text = data[skip:].decode("utf-8")
        bad = data.find(b"\x00")
    except UnicodeDecodeError as exc:
        nul = data.find(b"\x00")
        bad = skip + exc.start if nul < 0 else min(nul, skip + exc.start)
    if bad < 0:
        return text
    utf16 = data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or data[bad] == 0
    hint = "it looks like UTF-16" if utf16 else "Latin-1 or Windows-1252?"
    line += data[:bad].count(b"\n")
    raise InputError(
        f"{path}:{line}: not UTF-8 text (byte 0x{data[bad]:02x} at byte offset {offset + bad}; "
        f"{hint}): save the file as UTF-8"
    )


def read_text(path: Path) -> str:
    """A whole text file; unreadable or not UTF-8 raises InputError naming file and line."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})") from exc
    return decode(path, data)


def parse_json(path: Path, text: str, line: int = 1) -> Any:
    """JSON text of `path` (`line`: where `text` begins): InputError for broken JSON and for
    a `\\ud800`-style escape of half a surrogate pair, which no text file can hold."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"{path}:{line + exc.lineno - 1}: not valid JSON ({exc.msg}, column {exc.colno})"
        ) from None
    except RecursionError:
        raise InputError(f"{path}:{line}: JSON nested too deeply") from None
    if SURROGATE_ESCAPE.search(text):
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise InputError(
                f"{path}:{line}: a \\u escape gives half of a surrogate pair, which is not text"
            ) from None
    return value


def read_json(path: Path) -> Any:
    """A whole JSON file; a damaged one (a killed writer, an edit) names file and line."""
    return parse_json(path, read_text(path))


def read_lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for every non-blank line; a malformed line raises InputError."""
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})") from exc
    with handle:
        offset = 0
        for number, raw in enumerate(handle, start=1):
            line = decode(path, raw, number, offset)
            offset += len(raw)
            if not line.strip():
                continue
            value = parse_json(path, line.rstrip("\r\n"), number)
            if not isinstance(value, dict):
                raise InputError(
                    f"{path}:{number}: expected a JSON object, got {type(value).__name__}"
                )
            yield number, value


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Every object of a JSONL file; none when the file is not there (a stage not run)."""
    return [row for _, row in read_lines(path)] if path.is_file() else []


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


def check_writable(path: Path) -> None:
    """Raise the OSError that writing `path` would raise (a folder there, no permission, a
    read-only disk), now rather than after the work whose result it is to hold."""
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    blocking = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(blocking))
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise _naming(exc, path) from exc
    os.close(fd)
    os.unlink(tmp)


def write_json(path: Path, value: Any, sort_keys: bool = False) -> None:
    """`value` as indented JSON (two spaces, one closing newline), whole or not at all."""
    write_atomic(path, [json.dumps(value, indent=2, sort_keys=sort_keys)])


def write_atomic(path: Path, lines: Iterable[str]) -> None:
    """Write text lines to `path` whole or not at all."""
    write_bytes_atomic(path, "".join(line.rstrip("\n") + "\n" for line in lines).encode())


def write_bytes_atomic(path: Path, data: bytes, mode: int | None = None) -> None:
    """Write to a temporary file beside `path`, then rename it into place: a reader (or a
    resumed run) sees the old file or the new one, never half of one. `mode`: permissions
    (default: the temporary file's, owner-only)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise _naming(exc, path) from exc
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise _naming(exc, path) from exc
        raise


def _naming(exc: OSError, path: Path) -> OSError:
    """The same error about `path`: the temporary file is no name the user knows, and a
    failed write (a full disk) names no file at all."""
    return OSError(exc.errno, exc.strerror or str(exc), str(path))


def write_records(path: Path, records: Iterable[BaseModel | dict[str, Any]]) -> None:
    write_atomic(
        path,
        (
            r.model_dump_json() if isinstance(r, BaseModel) else json.dumps(r, ensure_ascii=False)
            for r in records
        ),
    )
