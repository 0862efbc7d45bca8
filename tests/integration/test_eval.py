"""`harness eval` end to end on the smallest profile (configs/ci.yaml): every stage with a real
model (SmolLM2) beside a random tiny one (vLLM engines, grammars, soft verdicts, LoRA GRPO steps
in a child process, a LoRA engine for the trained policy), the report written from real runs,
and a rerun that resumes without calling a model again."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from harness.models.manifest import PROJECT_ROOT

pytestmark = pytest.mark.integration
STAGES = ["prompts", "rollouts", "propose", "refine", "verify", "compare", "train", "judge",
          "overoptimization", "theory"]  # fmt: skip


def harness(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True,
                          text=True, timeout=900, cwd=PROJECT_ROOT)  # fmt: skip


@pytest.fixture(scope="module")
def evaluated(
    tiny_models, real_models, tmp_path_factory
) -> tuple[Path, subprocess.CompletedProcess]:
    runs = tmp_path_factory.mktemp("eval")
    result = harness("eval", "-c", "configs/ci.yaml", "--set", f"runs_dir={runs}")
    assert result.returncode == 0, result.stderr[-4000:]
    return runs / "ci", result


def test_every_stage_ran_and_the_summary_is_filled(evaluated):
    run_dir, result = evaluated
    summary = json.loads((run_dir / "summary.json").read_text())
    assert [s["stage"] for s in summary["stages"]] == STAGES
    assert all(s["status"] == "ran" for s in summary["stages"]), summary["stages"]

    pairwise = summary["pairwise"]
    for key in ("win_rate", "ci95", "n", "ties", "position_flip_rate",
                "length_controlled_win_rate"):  # fmt: skip
        assert key in pairwise
    assert pairwise["n"] + pairwise["unscored"] == 6  # 3 prompts x 2 samples
    assert pairwise["wins"] + pairwise["losses"] + pairwise["ties"] == pairwise["n"]
    assert pairwise["ci95"][0] <= pairwise["win_rate"] <= pairwise["ci95"][1]

    verifiers = {v["label"]: v for v in summary["verifiers"]}
    assert set(verifiers) == {"tiny-s", "smollm2-135m"}
    assert verifiers["smollm2-135m"]["reference"] and verifiers["smollm2-135m"]["accuracy"] == 1.0
    assert verifiers["smollm2-135m"]["params"] == 134_515_008
    small = verifiers["tiny-s"]
    assert small["params"] == 623_744 and small["num_verdicts"] > 0
    assert small["criteria_per_s"] > 0 and small["latency_p95_s"] >= small["latency_p50_s"]
    assert small["peak_memory_mb"] > 0

    # soft verdicts give every group a spread: the LoRA adapter on SmolLM2 learns
    train = summary["train"]
    assert train["steps"] == 2 and train["resumed_from"] == 0
    assert train["adapter_weights_changed"] and train["base_weights_unchanged"]
    assert [c["step"] for c in summary["overoptimization"]["checkpoints"]] == [0, 1, 2]

    # the reward-hacking probes: both verifiers graded every copy on real engines, criterion
    # order included (`all` mode), and the gate decided before training (warn: it trained)
    probes = {"off_topic", "echo", "stuffing", "padding", "boilerplate", "refusal",
              "truncation", "order", "regrade"}  # fmt: skip
    for row in verifiers.values():
        for score in ("hard", "soft"):
            figures = {f["probe"]: f for f in row[f"probes_{score}"]["probes"]}
            assert set(figures) == probes and figures["order"]["pairs"] > 0
        assert row["hackability"] is not None and row["probes_soft"]["num_originals"] == 3
    assert train["hack_gate"]["verifier"] == "smollm2-135m"
    assert train["hack_gate"]["decision"] in ("passed", "warned")
    assert (run_dir / "probes" / "perturbations.jsonl").is_file()
    assert not (run_dir / "train" / "probes").exists()  # the gate read the comparison's
    assert [row["kl"] for row in summary["theory"]["kl_table"]] == [0.25, 0.5, 1, 2, 3, 4, 6, 8]
    assert len(summary["refine"]) == 1
    assert set(summary["unscored"]) >= {"rollouts", "propose", "refine", "verify", "compare",
                                        "train", "judge"}  # fmt: skip
    assert "report" in result.stderr and str(run_dir / "report.html") in result.stderr


def test_the_train_stage_trained_in_a_child_process(evaluated):
    """`harness train` on the run's resolved profile, its output streamed through, its records
    in the run folder."""
    run_dir, result = evaluated
    assert "adapter: " in result.stderr  # the child's own line
    assert (run_dir / "train" / "adapter" / "adapter_model.safetensors").is_file()
    checkpoints = sorted(p.name for p in (run_dir / "train" / "checkpoints").glob("checkpoint-*"))
    assert checkpoints == ["checkpoint-1", "checkpoint-2"]
    rewards = [json.loads(line) for line in (run_dir / "train" / "rewards.jsonl").open()]
    assert [r["step"] for r in rewards] == [1, 2]
    assert all(r["unscored_verdicts"] == 0 for r in rewards)


def english_share(text: str) -> float:
    letters = sum(c.isascii() and (c.isalpha() or c.isspace()) for c in text)
    return letters / max(len(text), 1)


def test_real_model_answers_and_rubrics_are_english_text(evaluated):
    run_dir, _ = evaluated
    rows = [json.loads(line) for line in (run_dir / "candidates.jsonl").open()]
    real = [r["text"] for r in rows if r["model"] == "smollm2-135m"]
    assert len(real) == 6 and all(len(t.split()) >= 5 for t in real)
    assert sum(english_share(t) > 0.8 for t in real) >= 5, real
    rubrics = [json.loads(line) for line in (run_dir / "rubrics.jsonl").open()]
    criteria = [c["text"] for r in rubrics for c in r["criteria"]]
    assert criteria and sum(english_share(t) > 0.8 for t in criteria) >= 0.8 * len(criteria)


def test_the_html_report_is_self_contained(evaluated):
    run_dir, _ = evaluated
    html = (run_dir / "report.html").read_text()
    images = re.findall(r'<img[^>]+src="([^"]+)"', html)
    assert len(images) >= 6  # pairwise, verifier plots, training, over-optimisation, theory
    assert all(src.startswith("data:image/png;base64,") for src in images)
    assert "http://" not in html and "https://" not in html
    assert (run_dir / "report.md").is_file()


def test_a_rerun_resumes_without_model_calls(evaluated):
    run_dir, _ = evaluated
    before = (run_dir / "judge" / "judgements.jsonl").read_text()
    result = harness("eval", "-c", "configs/ci.yaml", "--set", f"runs_dir={run_dir.parent}")
    assert result.returncode == 0, result.stderr[-4000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert all(s["status"] == "reused" for s in summary["stages"]), summary["stages"]
    assert (run_dir / "judge" / "judgements.jsonl").read_text() == before


def test_report_rebuilds_from_the_run_folder(evaluated):
    run_dir, _ = evaluated
    (run_dir / "report.html").unlink()
    result = harness("report", str(run_dir))
    assert result.returncode == 0, result.stderr[-4000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["run"]["profile"] == "configs/ci.yaml"
    assert (run_dir / "report.html").is_file()
