"""Which stages of a run are finished, and with which inputs.

A stage is done when its outputs were written (atomically) and `stages.json` records the
fingerprint of the inputs and settings it ran with. Rerunning a finished stage with the same
fingerprint does nothing; a changed input or setting makes it run again.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from harness.jsonl import InputError, read_text, write_atomic
from harness.types import Record


class Skip(Record):
    """An item a stage could not produce, and why (recorded, never silently dropped)."""

    stage: str
    prompt_id: str
    item_id: str | None = None
    reason: str


def fingerprint(*parts: Any) -> str:
    """A hash of files (by content), pydantic models and plain values."""
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, Path):
            digest.update(part.read_bytes() if part.is_file() else b"<missing>")
        elif isinstance(part, BaseModel):
            digest.update(part.model_dump_json().encode())
        else:
            digest.update(json.dumps(part, sort_keys=True, default=str).encode())
        digest.update(b"\x00")
    return digest.hexdigest()[:20]


class RunState:
    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / "stages.json"

    def _load(self) -> dict[str, Any]:
        if not self.path.is_file():
            return {}
        fix = "delete it and rerun: finished stages then run again, their model calls cached"
        try:
            state = json.loads(read_text(self.path))
        except json.JSONDecodeError as exc:
            raise InputError(
                f"{self.path}:{exc.lineno}: the run's stage record is damaged ({exc.msg}, "
                f"column {exc.colno}); {fix}"
            ) from None
        entries = state.values() if isinstance(state, dict) else [None]
        if not all(isinstance(e, dict) and isinstance(e.get("fingerprint"), str) for e in entries):
            raise InputError(
                f"{self.path}: the run's stage record is damaged (expected "
                f'{{"STAGE": {{"fingerprint": ...}}}}); {fix}'
            )
        return state

    def is_done(self, stage: str, stage_fingerprint: str, outputs: list[Path]) -> bool:
        entry = self._load().get(stage)
        return (
            bool(entry)
            and entry["fingerprint"] == stage_fingerprint
            and all(p.exists() for p in outputs)
        )

    def mark_done(self, stage: str, stage_fingerprint: str, counts: dict[str, Any]) -> None:
        state = self._load()
        state[stage] = {"fingerprint": stage_fingerprint, **counts}
        write_atomic(self.path, [json.dumps(state, indent=2, sort_keys=True)])

    def counts(self, stage: str) -> dict[str, Any]:
        entry = self._load().get(stage, {})
        return {k: v for k, v in entry.items() if k != "fingerprint"}
