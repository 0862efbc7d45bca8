"""`harness import FILE --run NAME`: a hospital's own material into a run folder, checked once.

One file brings what it holds: prompts always; rubrics (version 0 of the run) from HealthBench
or the paper's published dataset; reference answers from HealthBench's ideal completions;
graded responses and clinicians' labels from HealthBench's meta-evaluation file. Everything
lands in `RUN/imported/` in the harness's own formats (`prompts.jsonl`, `rubrics.jsonl`,
`candidates.jsonl`, `labels.jsonl`, and `source.json` with the counts). The run's stages then
read the imported prompts instead of `data.prompts`, take the imported rubrics as version 0
(unless `data.rubrics` says otherwise), and `compare-verifiers` measures every verifier against
the imported labels (unless `compare.labels` says otherwise).

A second import into the same run replaces the first as a whole.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.datasets import file_format, import_rubric_dataset, load_healthbench, load_prompts
from harness.jsonl import write_json, write_records
from harness.runstate import RunPaths
from harness.types import Candidate, Prompt, Rubric


@dataclass
class Imported:
    """What one file held, in the harness's own records."""

    kind: str
    prompts: list[Prompt]
    rubrics: list[Rubric] = field(default_factory=list)
    candidates: list[Candidate] = field(default_factory=list)
    labels: list[Any] = field(default_factory=list)  # harness.labels items

    def counts(self) -> dict[str, int]:
        criteria = [c for r in self.rubrics for c in r.criteria]
        return {
            "prompts": len(self.prompts),
            "rubrics": len(self.rubrics),
            "criteria": len(criteria),
            "penalty_criteria": sum(c.weight < 0 for c in criteria),
            "tagged_criteria": sum(bool(c.tags) for c in criteria),
            "references": sum(c.reference for c in self.candidates),
            "responses": sum(not c.reference for c in self.candidates),
            "labelled_items": len(self.labels),
            "labels": sum(len(item.labels) for item in self.labels),
        }


def read_source(path: Path) -> Imported:
    """Every record `path` holds; bad lines fail with file, line and field."""
    kind = file_format(path) if path.suffix.lower() == ".jsonl" and path.is_file() else None
    if kind == "healthbench":
        data = load_healthbench(path)
        return Imported("HealthBench", data.prompts, data.rubrics, data.candidates)
    if kind == "published":
        prompts, rubrics = import_rubric_dataset(path)
        return Imported("published rubric dataset", prompts, rubrics)
    if kind == "meta-eval":
        from harness.labels import read_meta_eval

        meta = read_meta_eval(path)
        return Imported("HealthBench meta-evaluation", meta.prompts, meta.rubrics,
                        meta.candidates, meta.labels)  # fmt: skip
    return Imported("prompts", load_prompts(path))


def import_into_run(path: Path, run_dir: Path) -> Imported:
    """Read `path` and write it into `run_dir/imported/`, replacing an earlier import."""
    imported = read_source(path)
    target = RunPaths(run_dir).imported_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".import-", dir=run_dir))
    try:
        _write(staging, imported, path)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return imported


def _write(folder: Path, imported: Imported, source: Path) -> None:
    write_records(folder / "prompts.jsonl", imported.prompts)
    if imported.rubrics:
        write_records(folder / "rubrics.jsonl", imported.rubrics)
    if imported.candidates:
        write_records(folder / "candidates.jsonl", imported.candidates)
    if imported.labels:
        from harness.labels import write_labels

        write_labels(folder / "labels.jsonl", imported.labels)
    summary = {"source": str(source.resolve()), "kind": imported.kind, **imported.counts()}
    write_json(folder / "source.json", summary)
