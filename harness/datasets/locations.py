"""Where a bad input is, in the words of its format: lines count from 1 (as editors do), rows
of a table and items of a JSON list from 0 (as `data[i]` counts)."""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from harness.jsonl import InputError, validation_message


def location(path: Path, unit: str, number: int) -> str:
    return f"{path}:{number}" if unit == "line" else f"{path}:{unit} {number}"


def invalid_record(path: Path, unit: str, number: int, exc: ValidationError) -> InputError:
    if unit == "line":
        return InputError(validation_message(path, number, exc))
    # validation_message speaks of lines; a table's rows need their own word
    where = location(path, unit, number)
    return InputError(
        "\n".join(
            f"{where}: {'.'.join(map(str, e['loc'])) or '(record)'}: {e['msg']}"
            for e in exc.errors()
        )
    )


def repeat_of(seen: dict[str, int], key: str, number: int) -> int | None:
    """Where `key` was first seen, or None when this is its first appearance."""
    first = seen.setdefault(key, number)
    return None if first == number else first
