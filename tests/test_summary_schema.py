"""summary.json's model: versions it reads and refuses, and records that keep their keys."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.jsonl import InputError
from harness.report import write_report
from harness.summary_schema import Checkpoint, Theory, TrainSummary, load_summary
from tests.test_report import full_summary


def test_a_summary_without_a_schema_version_reads_as_version_1(tmp_path: Path) -> None:
    paths = write_report(tmp_path / "run", full_summary(tmp_path / "run"))
    saved = json.loads(paths["summary"].read_text(encoding="utf-8"))
    del saved["schema_version"]  # written by a harness from before the version
    old = tmp_path / "summary.json"
    old.write_text(json.dumps(saved), encoding="utf-8")
    summary = load_summary(old)
    assert summary.schema_version == 1
    assert summary.verifiers[2].reference and summary.theory.peaks["Top 25% wrong"].kl == 1.37
    again = write_report(tmp_path / "again", summary)["summary"].read_text(encoding="utf-8")
    assert json.loads(again)["schema_version"] == 1


def test_a_newer_summary_is_refused_with_one_line_naming_it(tmp_path: Path) -> None:
    newer = tmp_path / "summary.json"
    newer.write_text(json.dumps({"schema_version": 2, "stages": []}), encoding="utf-8")
    with pytest.raises(InputError) as caught:
        load_summary(newer)
    message = str(caught.value)
    assert "\n" not in message and str(newer) in message and "schema_version 2" in message


def test_stage_records_keep_their_keys_through_the_models() -> None:
    """A record read and dumped is the same record: no key added, none dropped, 0 stays 0."""
    row = {"step": 0, "reward": 0.0, "win_rate": None, "ci95": None, "n": 0, "extra": [1]}
    assert Checkpoint.model_validate(row).as_record() == row
    theory = {"kl_table": [{"kl": 1, "Correct": 0.5}], "beta_0.1": {"kl": 2.0}}
    assert Theory.model_validate(theory).as_record() == theory
    train = TrainSummary.model_validate({"steps": 3, "peak_memory_mb": 0})
    assert json.dumps(train.as_record()) == '{"steps": 3, "peak_memory_mb": 0}'
