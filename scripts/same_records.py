"""Do two run folders hold the same records? The check behind "behaviour unchanged".

    python scripts/same_records.py runs/before runs/after

Every JSON and JSONL file of the first folder must exist in the second with the same content,
leaving out what differs between two runs of the same code: timings, throughput, memory,
timestamps, the run folder's own path and the completion cache. Prints one line per file that
differs (with its first differing field) and exits 1 if any does.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

SKIPPED_FOLDERS = {"cache", "logs", "checkpoints", "adapter", "plots"}
VOLATILE_KEY = re.compile(
    r"(seconds|_s|per_s|latency.*|peak_memory.*|created|dir|machine|startup.*|harness_version"
    r"|step_split|step_time|train_runtime|train_samples_per_second|train_steps_per_second)$"
)


def records(folder: Path) -> dict[str, Any]:
    found = {}
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if not path.is_file() or SKIPPED_FOLDERS & set(relative.parts[:-1]):
            continue
        if path.suffix == ".jsonl":
            lines = path.read_text(encoding="utf-8").split("\n")
            found[str(relative)] = [stable(json.loads(line)) for line in lines if line.strip()]
        elif path.suffix == ".json":
            found[str(relative)] = stable(json.loads(path.read_text(encoding="utf-8")))
    return found


def stable(value: Any) -> Any:
    """`value` without the fields that change between two runs of the same code."""
    if isinstance(value, dict):
        return {k: stable(v) for k, v in value.items() if not VOLATILE_KEY.search(str(k))}
    if isinstance(value, list):
        return [stable(v) for v in value]
    return value


def first_difference(a: Any, b: Any, where: str = "") -> str:
    if type(a) is not type(b):
        return f"{where or '.'}: {a!r:.80} != {b!r:.80}"
    if isinstance(a, dict):
        for key in sorted(set(a) | set(b), key=str):
            if key not in a or key not in b:
                return f"{where}.{key}: only in {'second' if key not in a else 'first'}"
            if a[key] != b[key]:
                return first_difference(a[key], b[key], f"{where}.{key}")
    if isinstance(a, list):
        if len(a) != len(b):
            return f"{where}: {len(a)} items != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            if x != y:
                return first_difference(x, y, f"{where}[{i}]")
    return f"{where or '.'}: {a!r:.80} != {b!r:.80}"


def main(first: str, second: str) -> int:
    before, after = records(Path(first)), records(Path(second))
    differing = 0
    for name in sorted(set(before) | set(after)):
        if name not in after or name not in before:
            print(f"{name}: only in {'first' if name in before else 'second'}")
            differing += 1
        elif before[name] != after[name]:
            print(f"{name}: {first_difference(before[name], after[name])}")
            differing += 1
    print(f"{len(before)} record files compared, {differing} differ")
    return 1 if differing else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
