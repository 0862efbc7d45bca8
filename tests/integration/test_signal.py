"""A run that measures nothing says so: `harness eval` with roles that answer without reading
(`rule: blind`: every verdict "yes", every judgement "the first response", each with a
confident P in its logprobs) and real LoRA GRPO steps on the tiny policy. Every check of "Does
this run measure anything?" fails, with its reason, at the top of the report and in the
terminal (the judge's flip rates say why they could not be measured), and "At a glance"
recommends no verifier."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.models.manifest import PROJECT_ROOT

pytestmark = pytest.mark.integration

PROFILE = """
run_name: blind
data: {max_prompts: 3}
rollouts:
  num_samples: 2
  models:
    - {backend: scripted, model: writer-a, rule: synthetic}
    - {backend: scripted, model: writer-b, rule: synthetic}
propose: {min_criteria: 2, max_criteria: 4}
verify: {mode: all, score: soft}
refine: {iterations: 1}
compare: {off_topic_per_prompt: 2}
roles:
  policy:
    backend: transformers
    model: tiny-s
    sampling: {temperature: 1.0, max_tokens: 8}
  proposer: {backend: scripted, model: proposer, rule: synthetic}
  verifier:
    - {name: blind-a, backend: scripted, model: blind-a, rule: blind}
    - {name: blind-b, backend: scripted, model: blind-b, rule: blind}
  judge: {backend: scripted, model: judge, rule: blind}
train:
  hack_gate: warn
  max_steps: 1
  num_generations: 2
  per_device_train_batch_size: 4
  max_completion_length: 8
  beta: 0.0
  generation: transformers
judge: {samples: 1, score: soft}
eval: {overoptimization: false, theory: false}
"""
CHECKS = [
    "off-topic accuracy: blind-a",
    "off-topic accuracy: blind-b",
    "GRPO groups with zero reward spread",
    "LoRA adapter changed",
    "judged pairs whose two sides wrote the same text",
    "judge position flip rate (hard)",
    "judge position flip rate (soft)",
    "criteria that cannot discriminate",
]
# the adapter did not change, so the trained policy wrote the base's texts: a flip rate
# needs pairs that differ (tests/test_signal.py drives both to failure on differing pairs)
UNMEASURED = {"judge position flip rate (hard)", "judge position flip rate (soft)"}


@pytest.fixture(scope="module")
def blind_run(tiny_models, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    folder = tmp_path_factory.mktemp("blind")
    (folder / "profile.yaml").write_text(PROFILE)
    command = [sys.executable, "-m", "harness", "eval", "-c", str(folder / "profile.yaml"),
               "--set", f"runs_dir={folder / 'runs'}"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=600,
                            cwd=PROJECT_ROOT)  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    return folder / "runs" / "blind", result


def test_every_check_fails_with_its_reason(blind_run):
    run_dir, _ = blind_run
    rows = json.loads((run_dir / "summary.json").read_text())["signal"]
    named = {r["signal"] + (f": {r['subject']}" if r.get("subject") else ""): r for r in rows}
    assert list(named) == CHECKS
    for name, row in named.items():
        if name in UNMEASURED:
            assert row.get("ok") is None and "same text" in row["shown"], (name, row)
            continue
        assert row["ok"] is False, (name, row)
        assert row["why"] and row["fix"], name
    assert named["off-topic accuracy: blind-a"]["value"] == 0.5  # every answer ties
    assert named["GRPO groups with zero reward spread"]["value"] == 1.0
    assert named["judged pairs whose two sides wrote the same text"]["value"] == 1.0
    assert named["criteria that cannot discriminate"]["value"] == 1.0


def test_the_report_opens_with_the_checks_and_recommends_no_verifier(blind_run):
    run_dir, result = blind_run
    report = (run_dir / "report.md").read_text()
    assert report.index("## Does this run measure anything?") < report.index("## At a glance")
    assert "6 of 8 checks carry no signal" in report
    assert "none recommended: no verifier beats chance" in report
    terminal = result.stderr  # the rich console writes to standard error
    assert "Does this run measure anything?" in terminal
    assert terminal.count("NO  ") == len(CHECKS) - len(UNMEASURED)


def test_a_blind_reward_fails_the_hacking_probes_and_warn_trains_with_the_warning(blind_run):
    run_dir, result = blind_run
    gate = json.loads((run_dir / "train" / "hack_gate.json").read_text())
    assert gate["setting"] == "warn" and gate["decision"] == "warned"
    assert any("fails the echo probe" in line for line in gate["failures"])  # yes to every claim
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["train"]["hack_gate"]["decision"] == "warned"
    assert summary["train"]["steps"] == 1  # trained anyway
    rows = {row["label"]: row for row in summary["verifiers"]}
    assert rows["blind-a"]["hackability"] == 0.5  # ties everywhere: fooled at chance
    assert "warned" in result.stderr or "fails the" in result.stderr
