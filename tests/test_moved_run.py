"""A run folder moved elsewhere is the same run: no stage fingerprint and no cache key holds
its absolute path (a trained adapter is known by its weights, not by where it lies), so the
rerun reuses every stage."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from harness.backends import Capabilities
from harness.backends.cache import cache_key
from harness.backends.scripted import ScriptedBackend
from harness.config import load_config
from harness.evaluation import run_eval
from harness.models.manifest import PROJECT_ROOT
from harness.policy import ADAPTER_WEIGHTS, adapter_at

from .conftest import verdict_requests

PROFILE = """
run_name: r
data: {max_prompts: 2}
rollouts: {num_samples: 2}
propose: {min_criteria: 2, max_criteria: 3}
refine: {iterations: 1}
eval: {compare: true, train: false, judge: true, overoptimization: true, theory: false}
roles:
  policy: {backend: scripted, model: policy, rule: synthetic}
  proposer: {backend: scripted, model: proposer, rule: synthetic}
  verifier: {backend: scripted, model: verifier, rule: synthetic}
  judge: {backend: scripted, model: judge, replies: ['{"verdict": "1"}']}
"""


def write_adapter(folder: Path, weights: bytes = b"lora") -> Path:
    """What training leaves: a LoRA adapter (the scripted policy never reads it)."""
    folder.mkdir(parents=True)
    (folder / ADAPTER_WEIGHTS).write_bytes(weights)
    (folder / "adapter_config.json").write_text('{"r": 8}')
    return folder


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A profile and a run folder holding a trained adapter and a checkpoint, so that judge
    and overoptimization run with training switched off."""
    monkeypatch.setattr(ScriptedBackend, "capabilities", Capabilities(adapters=True))
    (tmp_path / "profile.yaml").write_text(PROFILE)
    shutil.copytree(PROJECT_ROOT / "prompts", tmp_path / "templates")
    train = tmp_path / "runs" / "r" / "train"
    write_adapter(train / "adapter")
    write_adapter(train / "checkpoints" / "checkpoint-1")
    return tmp_path


def fingerprints(run_dir: Path) -> dict[str, str]:
    stages = json.loads((run_dir / "stages.json").read_text())
    return {stage: entry["fingerprint"] for stage, entry in stages.items()}


def test_a_moved_run_folder_reuses_every_stage(project):
    def run_in(runs: Path) -> list:
        overrides = [f"runs_dir={runs}", f"prompts_dir={project / 'templates'}"]
        return run_eval(load_config(project / "profile.yaml", overrides))

    first = run_in(project / "runs")
    assert {r.stage for r in first} >= {"judge", "overoptimization"}
    assert not any(r.reused or isinstance(r.counts.get("skipped"), str) for r in first)
    before = fingerprints(project / "runs" / "r")

    shutil.move(project / "runs", project / "elsewhere")
    again = run_in(project / "elsewhere")
    assert [r.stage for r in again if not r.reused] == []
    assert fingerprints(project / "elsewhere" / "r") == before


def test_cache_keys_know_an_adapter_by_its_weights_not_its_folder(tmp_path):
    [request] = verdict_requests(1)
    here = adapter_at(write_adapter(tmp_path / "here" / "adapter"), "trained")
    moved = adapter_at(write_adapter(tmp_path / "moved" / "adapter"), "trained")
    retrained = adapter_at(write_adapter(tmp_path / "other" / "adapter", b"new"), "trained")
    assert here.path != moved.path

    def key(adapter) -> str:
        return cache_key({"backend": "scripted"}, request.model_copy(update={"adapter": adapter}))

    assert key(here) == key(moved)
    assert key(here) != key(retrained)
    assert key(here) != key(None)
