"""A hospital's own material through the real engine: a HealthBench-format file (penalties,
axis and theme tags, a criterion written over several lines, a physician's ideal answer) is
imported into a run, and `harness verify` on tiny vLLM models keeps the physicians' rubrics as
version 0, refines on top of them under the grammar, verifies the reference answer with every
other candidate, and grades each source model by tag."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ENGINE = "{dtype: float32, enforce_eager: true, max_model_len: 2048}"
CRITERIA = [
    {"criterion": "Advises calling emergency services for crushing chest pain.", "points": 9,
     "tags": ["level:example", "axis:accuracy"]},
    {"criterion": "Recommends waiting a day to see if the pain passes.", "points": -8,
     "tags": ["level:example", "axis:accuracy"]},
    {"criterion": "Asks when the pain started.\nAnd whether it spreads to the arm or jaw.",
     "points": 5, "tags": ["level:example", "axis:context_awareness"]},
]  # fmt: skip


def healthbench_line(n: int) -> dict:
    return {
        "prompt_id": f"chest-{n}",
        "prompt": [{"role": "user", "content": f"Case {n}: my chest hurts when I climb stairs."}],
        "rubrics": CRITERIA,
        "example_tags": ["theme:emergency_referrals"],
        "ideal_completions_data": {"ideal_completion": "Call emergency services now."},
    }


def harness(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True,
                          text=True, timeout=900)  # fmt: skip


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().split("\n") if line.strip()]


def test_physician_rubrics_through_the_real_engine(tiny_models, tmp_path):
    source = tmp_path / "healthbench.jsonl"
    source.write_text("".join(json.dumps(healthbench_line(n)) + "\n" for n in (1, 2)))
    profile = tmp_path / "profile.yaml"
    profile.write_text(f"""
runs_dir: {tmp_path / "runs"}
run_name: ward
rollouts: {{num_samples: 2}}
propose: {{min_criteria: 2, max_criteria: 4, max_criterion_chars: 80}}
refine: {{iterations: 1}}
roles:
  policy: {{backend: vllm, model: tiny-s, engine: {ENGINE}, sampling: {{max_tokens: 24}}}}
  proposer: {{backend: vllm, model: tiny-m, engine: {ENGINE},
             sampling: {{temperature: 1.0, max_tokens: 400}}}}
  verifier: {{backend: vllm, model: tiny-m, engine: {ENGINE},
             sampling: {{temperature: 1.0, max_tokens: 120}}}}
""")
    imported = harness("import", str(source), "-c", str(profile))
    assert imported.returncode == 0, imported.stderr[-3000:]
    result = harness("verify", "-c", str(profile))
    assert result.returncode == 0, result.stderr[-4000:]
    run = tmp_path / "runs" / "ward"

    given = [r for r in records(run / "rubrics.jsonl") if r["version"] == 0]
    assert [[c["weight"] for c in r["criteria"]] for r in given] == [[9, -8, 5], [9, -8, 5]]
    assert given[0]["criteria"][2]["tags"] == ["level:example", "axis:context_awareness"]
    references = [c for c in records(run / "candidates.jsonl") if c["reference"]]
    assert [c["id"] for c in references] == ["chest-1:ideal:0", "chest-2:ideal:0"]

    # every candidate, the references included, gets a verdict per criterion of its latest
    # rubric: yes, no, or unscored, never a missing one
    latest = {r["prompt_id"]: r for r in records(run / "rubrics.jsonl")}
    for r in records(run / "rubrics.jsonl"):
        if r["version"] > latest[r["prompt_id"]]["version"]:
            latest[r["prompt_id"]] = r
    verdicts = records(run / "verdicts.jsonl")
    for candidate in records(run / "candidates.jsonl"):
        rubric = latest[candidate["prompt_id"]]
        ids = sorted(v["criterion_id"] for v in verdicts if v["candidate_id"] == candidate["id"])
        assert ids == sorted(c["id"] for c in rubric["criteria"])

    grading = json.loads((run / "grading.json").read_text())
    by_model = {m["model"]: m for m in grading["models"]}
    assert set(by_model) == {"tiny-s", "physician-ideal"}
    assert by_model["physician-ideal"]["reference"] is True
    assert "grading (HealthBench-style" in result.stderr
