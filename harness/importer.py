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
from harness.jsonl import InputError, write_json, write_records
from harness.runstate import RunPaths
from harness.types import Candidate, Criterion, Prompt, Rubric
from harness.verifier import Job

GIVEN_MODEL = "given"  # responses that came with the data, from models it does not name


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
        return _meta_evaluation(path)
    if kind in ("labels", "rubrics"):
        setting = "compare.labels" if kind == "labels" else "data.rubrics"
        raise InputError(
            f"{path}:1: a {kind} file of the harness's own layout, which names a run's "
            f"candidates or prompts by id: give it as {setting} in the profile of that run"
        )
    return Imported("prompts", load_prompts(path))


def _meta_evaluation(path: Path) -> Imported:
    """HealthBench's meta-evaluation: its conversations, the graded completions (candidates),
    per prompt a rubric of the criteria its lines name (weight 1: the file gives no points;
    the line's category becomes a tag), and the physicians' labels keyed by those ids."""
    from harness.labels import load_labels, match_labels, read_label_lines

    prompts: dict[str, Prompt] = {}
    candidates: dict[str, Candidate] = {}
    criteria: dict[str, dict[str, Criterion]] = {}
    for number, line in read_label_lines(path):
        prompts.setdefault(line.prompt_id, Prompt(id=line.prompt_id, prompt=tuple(line.prompt),
                                                  domain="health"))  # fmt: skip
        candidate = candidates.setdefault(line.completion_id, Candidate(
            id=line.completion_id, prompt_id=line.prompt_id, text=line.completion,
            model=GIVEN_MODEL))  # fmt: skip
        if candidate.prompt_id != line.prompt_id:
            raise InputError(
                f"{path}:{number}: completion_id: {line.completion_id!r} answers prompt "
                f"{candidate.prompt_id!r} on an earlier line, here {line.prompt_id!r}"
            )
        own = criteria.setdefault(line.prompt_id, {})
        text = " ".join(line.rubric.split())
        tags = (line.category,) if line.category else ()
        own.setdefault(text, Criterion(id=f"c{len(own) + 1}", text=text, weight=1, tags=tags))
    rubrics = {p: Rubric(prompt_id=p, criteria=tuple(c.values())) for p, c in criteria.items()}
    jobs = [Job(prompts[c.prompt_id], c, rubrics[c.prompt_id]) for c in candidates.values()]
    labels = match_labels(load_labels(path), jobs).items
    return Imported("HealthBench meta-evaluation", list(prompts.values()),
                    list(rubrics.values()), list(candidates.values()), labels)  # fmt: skip


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
