"""HealthBench-style grading: hand-checked scores per model, overall and by tag; unscored
responses left out and counted; the interval; grading.json through the verify stage, the
summary, the report and the terminal."""

from __future__ import annotations

import json
import re
import shutil

import pytest
from rich.console import Console

from harness.config import VerifyConfig
from harness.grading import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, grade
from harness.models.manifest import PROJECT_ROOT
from harness.report import print_summary, write_report
from harness.reward import score, unclipped_score
from harness.summary_schema import Grading, ModelGrade, Summary, TagScore, load_summary
from harness.types import Candidate, Criterion, Prompt, Rubric, Verdict
from harness.verifier import Job
from tests.test_stage_reuse import PROFILE, harness, read_json, run_dir, succeeded

# p1 (theme:emergency_referrals): positive points 5 + 3 = 8
P1 = (("c1", 5, ("axis:accuracy", "level:example")), ("c2", 3, ("axis:completeness",)),
      ("c3", -4, ("axis:accuracy",)))  # fmt: skip
# p2 (theme:hedging): positive points 2; axis:communication has a penalty alone
P2 = (("d1", 2, ("axis:accuracy",)), ("d2", -3, ("axis:communication",)))
PROMPTS = {"p1": ("theme:emergency_referrals", P1), "p2": ("theme:hedging", P2)}
Y, N, U = True, False, None
# candidate id -> (prompt, model, verdicts in criterion order)
ANSWERS = {
    "a1": ("p1", "policy", (Y, N, Y)),  # (5 - 4) / 8 = 0.125
    "a2": ("p2", "policy", (N, Y)),  # (0 - 3) / 2 = -1.5: below 0, not clipped
    # only c3 scored: 4 of |5| + |3| + |4| = 12 points < 0.5 * 12: unscored
    "a3": ("p1", "policy", (U, U, Y)),
    "o1": ("p1", "other", (Y, Y, U)),  # c3 unscored, 8 of 12 scored: 8 / 8 = 1.0
    "o2": ("p2", "other", (Y, Y)),  # (2 - 3) / 2 = -0.5
    "r1": ("p1", "physician-ideal", (U, Y, N)),  # 7 of 12 scored: 3 / 3 = 1.0
    "r2": ("p2", "physician-ideal", (Y, N)),  # 2 / 2 = 1.0
}


def jobs_and_verdicts() -> tuple[list[Job], list[Verdict]]:
    rubrics = {
        pid: Rubric(prompt_id=pid, criteria=tuple(
            Criterion(id=cid, text=f"criterion {cid}", weight=w, tags=tags)
            for cid, w, tags in spec))
        for pid, (_, spec) in PROMPTS.items()
    }  # fmt: skip
    prompts = {
        pid: Prompt(id=pid, prompt=f"question {pid}", metadata={"example_tags": [theme]})
        for pid, (theme, _) in PROMPTS.items()
    }
    jobs, verdicts = [], []
    for cid, (pid, model, met) in ANSWERS.items():
        candidate = Candidate(id=cid, prompt_id=pid, text=f"answer {cid}", model=model,
                              reference=model == "physician-ideal")  # fmt: skip
        jobs.append(Job(prompts[pid], candidate, rubrics[pid]))
        for criterion, value in zip(rubrics[pid].criteria, met):
            verdicts.append(Verdict(prompt_id=pid, candidate_id=cid, rubric_version=0,
                                    criterion_id=criterion.id, met=value,
                                    verifier="v"))  # fmt: skip
    return jobs, verdicts


@pytest.fixture(scope="module")
def grading() -> Grading:
    return grade(*jobs_and_verdicts(), VerifyConfig())


def by_model(grading: Grading) -> dict[str, ModelGrade]:
    return {m.model: m for m in grading.models}


def tags_of(model: ModelGrade) -> dict[str, TagScore]:
    return {t.tag: t for t in model.tags}


def test_a_penalty_takes_a_response_below_0_unlike_the_reward():
    criteria = [Criterion(id=cid, text="x", weight=w, tags=t) for cid, w, t in P2]
    met = {"d1": False, "d2": True}
    assert unclipped_score(criteria, met) == -1.5  # (0 - 3) / 2
    assert score(criteria, met) == 0.0  # the training reward is clipped per response


def test_models_in_order_with_their_reference_mark(grading):
    assert [(m.model, m.reference) for m in grading.models] == [
        ("policy", False), ("other", False), ("physician-ideal", True)]  # fmt: skip
    assert (grading.resamples, grading.seed) == (BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED) == (1000, 0)


def test_overall_scores_are_clipped_means_of_unclipped_responses(grading):
    models = by_model(grading)
    policy, other, ideal = models["policy"], models["other"], models["physician-ideal"]
    # policy: mean(0.125, -1.5) = -0.6875, clipped to 0; a3 left out and counted
    assert (policy.score, policy.n, policy.num_unscored) == (0.0, 2, 1)
    # other: mean(1.0, -0.5) = 0.25 (clipping each response first would give 0.5)
    assert (other.score, other.n, other.num_unscored) == (pytest.approx(0.25), 2, 0)
    assert (ideal.score, ideal.ci95, ideal.n) == (1.0, [1.0, 1.0], 2)


def test_the_interval_holds_the_mean_and_is_the_same_every_time(grading):
    models = by_model(grading)
    # Two responses: a resample is both of one (1/4 each) or one of each, so the 2.5% and
    # 97.5% points are the lowest and highest resample means, clipped.
    assert models["other"].ci95 == [0.0, 1.0]  # [-0.5, 1.0] clipped; holds 0.25
    assert models["policy"].ci95 == [0.0, 0.125]  # [-1.5, 0.125] clipped; holds 0
    for m in grading.models:
        low, high = m.ci95
        assert low <= m.score <= high
    assert grade(*jobs_and_verdicts(), VerifyConfig()).as_record() == grading.as_record()


def test_criterion_tags_score_only_their_criteria(grading):
    policy, other, ideal = (tags_of(by_model(grading)[m])
                            for m in ("policy", "other", "physician-ideal"))  # fmt: skip
    # policy: a1 over c1, c3 = (5 - 4) / 5 = 0.2; a2 over d1 = 0 / 2 = 0; mean 0.1
    assert (policy["axis:accuracy"].score, policy["axis:accuracy"].n) == (pytest.approx(0.1), 2)
    # a1 over c2 = 0 / 3; a2 has no completeness criterion
    assert (policy["axis:completeness"].score, policy["axis:completeness"].n) == (0.0, 1)
    assert (policy["level:example"].score, policy["level:example"].n) == (1.0, 1)  # c1: 5 / 5
    # other: o1 over c1 (c3 unscored: 5 of 9 points scored, >= 4.5) = 5 / 5; o2 d1 = 2 / 2
    assert (other["axis:accuracy"].score, other["axis:accuracy"].n) == (1.0, 2)
    # reference r1: c1 unscored leaves 4 of 9 accuracy points (< 4.5): r1 out of the tag
    assert (ideal["axis:accuracy"].score, ideal["axis:accuracy"].n) == (1.0, 1)
    assert (ideal["level:example"].score, ideal["level:example"].n) == (None, 0)
    assert all(t.kind == "criterion" for t in policy.values() if not t.tag.startswith("theme"))


def test_a_tag_without_positive_points_is_reported_empty(grading):
    for model in grading.models:  # d2 (-3) alone carries axis:communication
        communication = tags_of(model)["axis:communication"]
        assert (communication.score, communication.ci95, communication.n) == (None, None, 0)


def test_prompt_tags_score_the_responses_to_their_prompts(grading):
    policy, other = (tags_of(by_model(grading)[m]) for m in ("policy", "other"))
    emergency, hedging = policy["theme:emergency_referrals"], policy["theme:hedging"]
    assert (emergency.kind, emergency.score, emergency.n) == ("prompt", 0.125, 1)  # a3 left out
    assert (hedging.score, hedging.ci95, hedging.n) == (0.0, [0.0, 0.0], 1)  # -1.5 clipped
    assert other["theme:hedging"].score == 0.0  # -0.5 clipped
    assert other["theme:emergency_referrals"].score == 1.0


def test_no_jobs_grade_no_models():
    assert grade([], [], VerifyConfig()).models == []


def test_the_report_shows_the_grading_and_summary_json_keeps_it(grading, tmp_path):
    paths = write_report(tmp_path, Summary(grading=grading))
    saved = load_summary(paths["summary"])
    assert saved.grading == grading
    assert json.loads(paths["summary"].read_text())["grading"] == grading.as_record()
    markdown = paths["markdown"].read_text()
    assert "## Grading" in markdown
    header = "| tag | policy | n | other | n | physician-ideal (reference) | n |"
    assert header in markdown
    assert "| overall | 0.000 [0.000, 0.125] | 2 | 0.250 [0.000, 1.000] | 2 |" in markdown
    assert "| unscored (left out) |  | 1 |  | 0 |  | 0 |" in markdown
    rows = re.findall(r"^\| ((?:axis|level|theme)[^ |]*) \|", markdown, flags=re.MULTILINE)
    assert rows == ["axis:accuracy", "axis:communication", "axis:completeness",
                    "theme:emergency_referrals", "theme:hedging", "level:example"]  # fmt: skip
    assert saved.plots == {"grading_axes": "plots/grading_axes.png"}
    assert (tmp_path / "plots" / "grading_axes.png").read_bytes()[:4] == b"\x89PNG"


def test_the_terminal_prints_the_grading(grading):
    console = Console(record=True, width=200)
    print_summary(Summary(grading=grading), console)
    text = console.export_text()
    assert "Grading" in text and "0.250 [0.000, 1.000]" in text and "axis:accuracy" in text


def test_harness_verify_writes_and_prints_the_grading(tmp_path):
    """A run through the CLI on scripted roles; then a run folder from before grading.json
    (the file gone) reruns verify to write it."""
    (tmp_path / "profile.yaml").write_text(PROFILE)
    shutil.copytree(PROJECT_ROOT / "prompts", tmp_path / "templates")
    result = succeeded(harness("verify", tmp_path, "refine.iterations=0"))
    assert "grading (HealthBench-style" in result.output
    path = run_dir(tmp_path) / "grading.json"
    models = read_json(path)["models"]
    # 3 prompts x 3 samples from each rollout model
    assert [(m["model"], m["n"] + m["num_unscored"]) for m in models] == [
        ("policy-a", 9), ("policy-b", 9)]  # fmt: skip
    first = path.read_bytes()
    path.unlink()
    succeeded(harness("verify", tmp_path, "refine.iterations=0"))
    assert path.read_bytes() == first
    succeeded(harness("eval", tmp_path, "refine.iterations=0"))  # writes summary.json
    assert read_json(run_dir(tmp_path) / "summary.json")["grading"]["models"] == models
