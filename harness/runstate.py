"""Which stages of a run are finished, and with which inputs.

A stage is done when its outputs were written (atomically) and `stages.json` records the
fingerprint of the inputs and settings it ran with. Rerunning a finished stage with the same
fingerprint does nothing; a changed input or setting makes it run again. `RunPaths` names
every file of a run folder once: the stages, the report and the CLI all find them there.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from harness.jsonl import InputError, read_text, write_json


class RunPaths:
    """The files and folders of a run folder (`runs_dir/run_name`), by what they hold."""

    def __init__(self, run_dir: Path) -> None:
        self.dir = run_dir
        self.config_path = run_dir / "config.yaml"
        self.lock_path = run_dir / ".lock"  # held by the one process writing here (runlock)
        self.stages_path = run_dir / "stages.json"
        self.prompts_path = run_dir / "prompts.jsonl"
        self.candidates_path = run_dir / "candidates.jsonl"
        self.rubrics_path = run_dir / "rubrics.jsonl"  # every version, with lineage
        self.refine_stats_path = run_dir / "refine.jsonl"
        self.refine_dir = run_dir / "refine"  # checkpoints of an unfinished refinement
        self.verdicts_path = run_dir / "verdicts.jsonl"
        self.rewards_path = run_dir / "rewards.jsonl"
        self.grading_path = run_dir / "grading.json"  # HealthBench-style scores by tag
        self.grading_verdicts_path = run_dir / "grading_verdicts.jsonl"  # under given rubrics
        self.given_rubrics_path = run_dir / "given_rubrics.jsonl"  # version 0 from the data
        self.given_candidates_path = run_dir / "given_candidates.jsonl"  # references, etc.
        self.imported_dir = run_dir / "imported"  # what `harness import` brought in
        self.imported_labels_path = self.imported_dir / "labels.jsonl"
        self.skipped_path = run_dir / "skipped.jsonl"
        self.compare_dir = run_dir / "compare"
        self.compare_metrics_path = self.compare_dir / "metrics.json"
        self.probes_dir = run_dir / "probes"  # reward-hacking probes: what and how graded
        self.train_dir = run_dir / "train"
        self.train_summary_path = self.train_dir / "summary.json"
        self.train_rewards_path = self.train_dir / "rewards.jsonl"
        self.train_reward_plot_path = self.train_dir / "reward.png"
        self.adapter_dir = self.train_dir / "adapter"
        self.judge_dir = run_dir / "judge"
        self.judge_summary_path = self.judge_dir / "summary.json"
        self.judgements_path = self.judge_dir / "judgements.jsonl"
        self.overoptimization_path = run_dir / "overoptimization.json"
        self.theory_path = run_dir / "theory.json"
        self.plots_dir = run_dir / "plots"
        self.endpoint_stats_path = run_dir / "stats" / "endpoints.jsonl"  # endpoint pools
        self.summary_path = run_dir / "summary.json"
        self.report_markdown_path = run_dir / "report.md"
        self.report_html_path = run_dir / "report.html"


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
        self.path = RunPaths(run_dir).stages_path

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
        write_json(self.path, state, sort_keys=True)

    def counts(self, stage: str) -> dict[str, Any]:
        entry = self._load().get(stage, {})
        return {k: v for k, v in entry.items() if k != "fingerprint"}
