"""The one list of stages, the run folder's paths, pretty JSON on disk, and the summary's stage
rows: no model is called."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.config import ConfigError, HarnessConfig
from harness.jsonl import read_rows, write_json
from harness.judge import sample_side
from harness.report.summary import build_summary
from harness.report.terminal import training_table
from harness.roles import build_role
from harness.runstate import RunPaths, RunState
from harness.stages import RUBRIC_STAGES, STAGES, check_roles, stage_named, stages_through
from harness.types import Prompt
from tests.conftest import scripted_role


def profile(tmp_path: Path, **sections) -> HarnessConfig:
    return HarnessConfig.model_validate({"runs_dir": str(tmp_path), "run_name": "r", **sections})


def test_stages_run_in_the_paper_order_and_only_the_later_ones_switch_off():
    assert [s.name for s in STAGES] == [
        "prompts", "rollouts", "propose", "refine", "verify",
        "compare", "train", "judge", "overoptimization", "theory",
    ]  # fmt: skip
    assert [s.name for s in RUBRIC_STAGES] == ["prompts", "rollouts", "propose", "refine", "verify"]
    assert [s.name for s in stages_through("compare")][-2:] == ["verify", "compare"]


def test_role_check_stops_at_the_first_stage_whose_role_is_missing(tmp_path: Path):
    config = profile(tmp_path, roles={"policy": scripted_role().model_dump()})
    check_roles(config, stages_through("rollouts"))  # the policy rolls out
    with pytest.raises(ConfigError, match="proposer"):
        check_roles(config, stages_through("propose"))


def test_each_later_stage_keeps_only_the_engines_it_calls(tmp_path: Path):
    roles = {
        "policy": scripted_role(name="policy").model_dump(),
        "judge": scripted_role(name="judge").model_dump(),
        "verifier": [scripted_role(name="small").model_dump(),
                     scripted_role(name="large").model_dump()],
    }  # fmt: skip
    config = profile(tmp_path, roles=roles, train={"verifier": "large"})
    labels = {s.name: [r.label for r in s.roles(config)] for s in STAGES if s.switchable}
    assert labels == {
        "compare": [],
        "train": ["large"],
        "judge": ["judge", "policy"],
        "overoptimization": ["judge", "policy", "large"],
        "theory": [],
    }


def test_pretty_json_is_indented_with_one_closing_newline(tmp_path: Path):
    path = tmp_path / "a" / "x.json"
    write_json(path, {"b": 1, "a": [2]})
    assert path.read_bytes() == b'{\n  "b": 1,\n  "a": [\n    2\n  ]\n}\n'
    write_json(path, {"b": 1, "a": 2}, sort_keys=True)
    assert path.read_bytes() == b'{\n  "a": 2,\n  "b": 1\n}\n'
    assert read_rows(tmp_path / "absent.jsonl") == []


def test_stage_record_lands_in_the_run_folders_stages_file(tmp_path: Path):
    RunState(tmp_path).mark_done("prompts", "abc", {"prompts": 2})
    stored = json.loads(RunPaths(tmp_path).stages_path.read_text())
    assert stored == {"prompts": {"fingerprint": "abc", "prompts": 2}}


def test_summary_rows_follow_the_stage_list_and_the_profiles_switches(tmp_path: Path):
    config = profile(tmp_path, eval={"train": False, "judge": False})
    RunState(config.run_dir).mark_done("prompts", "abc", {"prompts": 3, "seconds": 1.5})
    rows = build_summary(config, "test").stages
    assert [r.stage for r in rows] == [s.name for s in STAGES]
    status = {r.stage: r.status for r in rows}
    assert status["prompts"] == "ran" and status["verify"] == "not run"
    assert status["train"] == status["judge"] == "off" and status["compare"] == "not run"
    assert rows[0].counts == {"prompts": 3} and rows[0].seconds == 1.5


def test_a_judged_side_is_saved_with_what_it_could_not_produce(tmp_path: Path, context):
    role = build_role("policy", scripted_role(["an answer", ""]), context)
    prompts = [Prompt(id="p1", prompt="q1"), Prompt(id="p2", prompt="q2")]
    side = sample_side(role, prompts, 1, None, "base", tmp_path)
    assert [c.prompt_id for c in side] == ["p1"]
    assert [c["prompt_id"] for c in read_rows(tmp_path / "base.jsonl")] == ["p1"]
    assert [s["prompt_id"] for s in read_rows(tmp_path / "base.skipped.jsonl")] == ["p2"]


@dataclass
class _Trained:
    steps: int = 2
    reward_first: float | None = None
    reward_last: float | None = 0.25
    adapter_weights_changed: bool = True
    base_weights_unchanged: bool = True
    step_split: dict | None = None
    peak_memory_mb: float = 10.0


def test_training_table_says_unscored_for_a_reward_it_does_not_have():
    split = {"step_s": 1.0, "generation_s": 0.5, "reward_s": 0.25, "update_s": 0.25,
             "verifier_share": 0.25}  # fmt: skip
    table = training_table(_Trained(step_split=split))
    cells = dict(zip(table.columns[0].cells, table.columns[1].cells, strict=True))
    assert cells["reward, first step"] == "unscored"
    assert cells["reward, last step"] == "0.250"
    assert stage_named("train").switchable
