"""The rubric pipeline on the sample prompts with tiny vLLM models: rollouts -> propose ->
refine (2 iterations) -> verify, through the real CLI; then a run killed with SIGKILL midway
through refinement and resumed must end with exactly the files of the uninterrupted run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.datasets import load_prompts
from harness.models.manifest import PROJECT_ROOT

pytestmark = pytest.mark.integration
SAMPLE_PROMPTS = PROJECT_ROOT / "harness" / "data" / "sample_prompts.jsonl"
RECORD_FILES = ["prompts.jsonl", "candidates.jsonl", "rubrics.jsonl", "refine.jsonl",
                "verdicts.jsonl", "rewards.jsonl", "skipped.jsonl"]  # fmt: skip
LONG_PROMPT_ID = "too-long-for-the-context"


def write_profile(folder: Path, prompts: Path) -> Path:
    engine = "{dtype: float32, enforce_eager: true, max_model_len: 2048}"
    profile = folder / "profile.yaml"
    profile.write_text(f"""
runs_dir: {folder / "runs"}
data: {{prompts: {prompts}}}
rollouts: {{num_samples: 4}}
propose: {{min_criteria: 2, max_criteria: 6, max_criterion_chars: 60}}
refine: {{iterations: 2}}
roles:
  policy: {{backend: vllm, model: tiny-s, engine: {engine},
           sampling: {{temperature: 1.0, top_p: 0.95, max_tokens: 40}}}}
  proposer: {{backend: vllm, model: tiny-m, sampling: {{temperature: 1.0, max_tokens: 600}},
             engine: {engine}}}
  verifier: {{backend: vllm, model: tiny-m, sampling: {{temperature: 0.0, max_tokens: 200}},
             engine: {engine}}}
""")
    return profile


def harness(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True,
                          text=True, timeout=900, **kwargs)  # fmt: skip


@pytest.fixture(scope="module")
def workspace(tiny_models, tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("pipeline")
    prompts = folder / "prompts.jsonl"
    lines = SAMPLE_PROMPTS.read_text().splitlines()
    long_text = " ".join(["symptoms"] * 3000)
    lines.append(json.dumps({"id": LONG_PROMPT_ID, "prompt": long_text, "domain": "health"}))
    prompts.write_text("\n".join(lines) + "\n")
    return write_profile(folder, prompts), folder / "runs"


@pytest.fixture(scope="module")
def finished_run(workspace) -> Path:
    profile, runs = workspace
    result = harness("verify", "-c", str(profile), "--set", "run_name=straight")
    assert result.returncode == 0, result.stderr[-4000:]
    return runs / "straight"


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().split("\n") if line.strip()]


def test_pipeline_writes_every_artifact_with_no_unparseable_verdict(finished_run):
    for name in RECORD_FILES + ["stages.json", "config.yaml"]:
        assert (finished_run / name).is_file(), name
    num_prompts = len(load_prompts(SAMPLE_PROMPTS))
    candidates = records(finished_run / "candidates.jsonl")
    assert len(candidates) == num_prompts * 4
    rubrics = records(finished_run / "rubrics.jsonl")
    assert {r["version"] for r in rubrics} == {0, 1, 2}
    refined = [r for r in rubrics if r["version"] > 0]
    assert all(r["refined_from"] and r["parent_version"] == r["version"] - 1 for r in refined)
    iterations = records(finished_run / "refine.jsonl")
    assert [s["iteration"] for s in iterations] == [1, 2]
    assert all(s["num_prompts"] == num_prompts for s in iterations)
    verdicts = records(finished_run / "verdicts.jsonl")
    assert verdicts and all(v["met"] is not None for v in verdicts)
    assert all(r["reward"] is not None and 0 <= r["reward"] <= 1
               for r in records(finished_run / "rewards.jsonl"))  # fmt: skip


def test_a_prompt_too_long_for_the_context_is_skipped_with_its_reason(finished_run):
    skipped = [s for s in records(finished_run / "skipped.jsonl")
               if s["prompt_id"] == LONG_PROMPT_ID]  # fmt: skip
    assert {s["stage"] for s in skipped} == {"rollouts", "propose"}
    assert all("prompt too long" in s["reason"] for s in skipped)
    assert len(skipped) == 4 + 1  # four samples, one rubric


def test_rerunning_a_finished_run_does_nothing(workspace, finished_run):
    profile, _ = workspace
    before = {n: (finished_run / n).stat().st_mtime_ns for n in RECORD_FILES}
    result = harness("verify", "-c", str(profile), "--set", "run_name=straight")
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.count("reused") + result.stderr.count("reused") >= 5
    assert before == {n: (finished_run / n).stat().st_mtime_ns for n in RECORD_FILES}


def test_each_mode_gives_verdicts_with_soft_probabilities(workspace, finished_run):
    profile, runs = workspace
    shutil.copytree(finished_run, runs / "each")
    result = harness("verify", "-c", str(profile), "--set", "run_name=each",
                     "--set", "verify.mode=each")  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    verdicts = records(runs / "each" / "verdicts.jsonl")
    assert len(verdicts) == len(records(finished_run / "verdicts.jsonl"))
    assert all(v["met"] is not None for v in verdicts)
    assert all(v["p_yes"] is not None and 0.0 <= v["p_yes"] <= 1.0 for v in verdicts)


def wait_for(path_glob: str, root: Path, process: subprocess.Popen, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        if list(root.glob(path_glob)):
            return True
        time.sleep(0.2)
    return False


def same_verdicts(path: Path, other: Path) -> bool:
    """The same verdicts, in the same order; P(yes) equal up to the float noise of a batch of
    another composition (a resumed run asks for fewer answers at once)."""
    ours, theirs = (
        [json.loads(line) for line in p.read_text().splitlines()] for p in (path, other)
    )
    if [{**v, "p_yes": None} for v in ours] != [{**v, "p_yes": None} for v in theirs]:
        return False
    return all(
        (a["p_yes"] is None) == (b["p_yes"] is None)
        and (a["p_yes"] is None or abs(a["p_yes"] - b["p_yes"]) < 1e-3)
        for a, b in zip(ours, theirs)
    )


def test_a_killed_refine_resumes_to_the_same_records(workspace, finished_run):
    profile, runs = workspace
    command = [sys.executable, "-m", "harness", "refine", "-c", str(profile),
               "--set", "run_name=killed"]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)  # fmt: skip
    killed_run = runs / "killed"
    reached = wait_for("refine/*/iteration-1.json", killed_run, process, timeout_s=600)
    os.killpg(process.pid, signal.SIGKILL)  # the harness and its engines, mid-iteration 2
    process.wait(timeout=60)
    assert reached, "refinement never finished its first iteration"
    assert not (killed_run / "refine.jsonl").exists()
    result = harness("verify", "-c", str(profile), "--set", "run_name=killed")
    assert result.returncode == 0, result.stderr[-4000:]
    for name in RECORD_FILES:
        if name == "verdicts.jsonl":
            assert same_verdicts(killed_run / name, finished_run / name)
            continue
        assert (killed_run / name).read_bytes() == (finished_run / name).read_bytes(), name
    resumed = json.loads((killed_run / "stages.json").read_text())["refine"]
    straight = json.loads((finished_run / "stages.json").read_text())["refine"]
    # iteration 1 came from its checkpoint: the resumed stage asked for fewer answers
    assert resumed["model_calls"] - resumed["cache_hits"] < straight["model_calls"]
