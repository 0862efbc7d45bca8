"""Rubrics and reference answers that come with the data (issue 13, points 1, 2 and 5), driven
through the `harness` command on scripted roles: a HealthBench file as the prompts makes the
physicians' rubrics version 0, the proposer writes only the missing rubrics, ideal completions
join the candidates marked as references, and `harness import` brings one file into a run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from harness.cli import main
from harness.datasets import file_format
from harness.proposer import keep_given_points
from harness.types import Criterion, Rubric

ROLE = "{backend: scripted, model: %s, rule: synthetic}"
PROFILE = f"""
run_name: r
rollouts: {{num_samples: 2}}
propose: {{min_criteria: 2, max_criteria: 4}}
refine: {{iterations: 0}}
eval: {{compare: false, train: false, judge: false, overoptimization: false, theory: false}}
roles:
  policy: {ROLE % "policy"}
  verifier: {ROLE % "verifier"}
"""
PROPOSER = {"roles.proposer.backend": "scripted", "roles.proposer.model": "proposer",
            "roles.proposer.rule": "synthetic"}  # fmt: skip


def healthbench_line(n: int, ideal: str | None = "See a doctor today.") -> dict:
    return {
        "prompt_id": f"hb-{n}",
        "prompt": [{"role": "user", "content": f"Question {n} about my chest pain."}],
        "rubrics": [
            {"criterion": "Advises emergency care.", "points": 9, "tags": ["axis:accuracy"]},
            {"criterion": "Recommends aspirin for all.", "points": -6, "tags": ["axis:accuracy"]},
            {"criterion": "Asks about onset.", "points": 4, "tags": ["axis:context_awareness"]},
        ],
        "example_tags": ["theme:emergency_referrals"],
        "ideal_completions_data": {"ideal_completion": ideal} if ideal else None,
    }


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def harness(folder: Path, *args: str, proposer: bool = False, **settings: str) -> Result:
    (folder / "profile.yaml").write_text(PROFILE)
    settings = {"runs_dir": str(folder / "runs"), **(PROPOSER if proposer else {}), **settings}
    command = [args[0], "-c", str(folder / "profile.yaml"), *args[1:]]
    overrides = [a for k, v in settings.items() for a in ("--set", f"{k}={v}")]
    return CliRunner().invoke(main, command + overrides)


def succeeded(result: Result) -> Result:
    assert result.exit_code == 0, f"{result.exception!r}\n{result.output[-3000:]}"
    return result


def records(folder: Path, name: str) -> list[dict]:
    text = (folder / "runs" / "r" / name).read_text()
    return [json.loads(line) for line in text.split("\n") if line]


def stage_counts(folder: Path, stage: str) -> dict:
    return json.loads((folder / "runs" / "r" / "stages.json").read_text())[stage]


@pytest.fixture
def healthbench(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "hb.jsonl", [healthbench_line(1), healthbench_line(2, None)])


def test_healthbench_rubrics_are_version_0_without_a_proposer(tmp_path, healthbench):
    succeeded(harness(tmp_path, "verify", **{"data.prompts": str(healthbench)}))
    rubrics = records(tmp_path, "rubrics.jsonl")
    assert [(r["prompt_id"], r["version"]) for r in rubrics] == [("hb-1", 0), ("hb-2", 0)]
    assert [c["weight"] for c in rubrics[0]["criteria"]] == [9, -6, 4]
    assert rubrics[0]["criteria"][2]["tags"] == ["axis:context_awareness"]
    counts = stage_counts(tmp_path, "prompts")
    assert counts["given_rubrics"] == 2 and counts["penalty_criteria"] == 2
    assert counts["references"] == 1
    assert stage_counts(tmp_path, "propose")["proposed"] == 0
    candidates = records(tmp_path, "candidates.jsonl")
    references = [c for c in candidates if c["reference"]]
    assert [(c["id"], c["model"]) for c in references] == [("hb-1:ideal:0", "physician-ideal")]
    # the reference is verified and rewarded like any candidate
    assert "hb-1:ideal:0" in {r["candidate_id"] for r in records(tmp_path, "rewards.jsonl")}


def test_references_can_be_left_out(tmp_path, healthbench):
    overrides = {"data.prompts": str(healthbench), "data.references": "ignore"}
    succeeded(harness(tmp_path, "verify", **overrides))
    assert not any(c["reference"] for c in records(tmp_path, "candidates.jsonl"))


def test_propose_writes_only_the_missing_rubrics(tmp_path):
    rows = [{"id": f"p{i}", "prompt": f"Q{i}?"} for i in (1, 2, 3)]
    prompts = write_jsonl(tmp_path / "p.jsonl", rows)
    kind = Criterion(id="c1", text="Is kind.", weight=2)
    given = Rubric(prompt_id="p2", version=3, criteria=(kind,))
    rubric_file = tmp_path / "given.jsonl"
    rubric_file.write_text(given.model_dump_json() + "\n")
    overrides = {"data.prompts": str(prompts), "data.rubrics": str(rubric_file)}
    succeeded(harness(tmp_path, "propose", proposer=True, **overrides))
    rubrics = records(tmp_path, "rubrics.jsonl")
    assert [r["prompt_id"] for r in rubrics] == ["p1", "p2", "p3"]
    assert rubrics[1]["criteria"] == [given.criteria[0].model_dump(mode="json")]
    assert rubrics[1]["version"] == 0  # another run's newest version seeds this run
    counts = stage_counts(tmp_path, "propose")
    assert (counts["given"], counts["proposed"]) == (1, 2)


def test_missing_rubrics_without_a_proposer_fail_in_one_line(tmp_path):
    rows = [{"id": "p1", "prompt": "Q?"}, {"id": "p2", "prompt": "R?"}]
    prompts = write_jsonl(tmp_path / "p.jsonl", rows)
    rubric_file = tmp_path / "given.jsonl"
    rubric = Rubric(prompt_id="p1", criteria=(Criterion(id="c1", text="Is kind.", weight=2),))
    rubric_file.write_text(rubric.model_dump_json() + "\n")
    result = harness(tmp_path, "propose", **{"data.prompts": str(prompts),
                                             "data.rubrics": str(rubric_file)})  # fmt: skip
    assert result.exit_code != 0
    message = str(result.exception)
    assert "1 of 2 prompts have no given rubric (first: 'p2')" in message
    assert "roles.proposer" in message


def test_rubrics_of_other_prompts_are_an_error(tmp_path, healthbench):
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"id": "p1", "prompt": "Q?"}])
    overrides = {"data.prompts": str(prompts), "data.rubrics": str(healthbench)}
    result = harness(tmp_path, "propose", proposer=True, **overrides)
    assert result.exit_code != 0
    assert f"{healthbench}: none of its 2 rubrics is for a prompt of this run" in str(
        result.exception
    )


def test_data_rubrics_propose_ignores_the_physicians(tmp_path, healthbench):
    overrides = {"data.prompts": str(healthbench), "data.rubrics": "propose"}
    succeeded(harness(tmp_path, "propose", proposer=True, **overrides))
    assert stage_counts(tmp_path, "propose")["proposed"] == 2
    assert all(c["weight"] in (1, 2, 3) for r in records(tmp_path, "rubrics.jsonl")
               for c in r["criteria"])  # fmt: skip


def test_published_rubrics_match_prompts_by_text(tmp_path):
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"id": "mine", "prompt": "Explain DKA."}])
    published = write_jsonl(tmp_path / "pub.jsonl", [{
        "prompt": "Explain DKA.", "rubrics": [{"criterion": "Mentions insulin.", "weight": 3}],
        "number_of_criteria": 1, "total_weight": 3}])  # fmt: skip
    overrides = {"data.prompts": str(prompts), "data.rubrics": str(published)}
    succeeded(harness(tmp_path, "propose", **overrides))
    [rubric] = records(tmp_path, "rubrics.jsonl")
    assert rubric["prompt_id"] == "mine" and rubric["criteria"][0]["text"] == "Mentions insulin."


def test_only_the_given_responses_with_no_samples(tmp_path, healthbench):
    overrides = {"data.prompts": str(healthbench), "rollouts.num_samples": "0",
                 "roles.policy": "null"}  # fmt: skip
    succeeded(harness(tmp_path, "verify", **overrides))
    assert [c["id"] for c in records(tmp_path, "candidates.jsonl")] == ["hb-1:ideal:0"]


def test_import_brings_one_file_into_a_run(tmp_path, healthbench):
    result = succeeded(harness(tmp_path, "import", str(healthbench), "--run", "r"))
    assert "imported: HealthBench" in result.output
    source = json.loads((tmp_path / "runs" / "r" / "imported" / "source.json").read_text())
    assert (source["prompts"], source["penalty_criteria"], source["references"]) == (2, 2, 1)
    # the run now starts from the imported file, whatever data.prompts says
    succeeded(harness(tmp_path, "verify"))
    assert [p["id"] for p in records(tmp_path, "prompts.jsonl")] == ["hb-1", "hb-2"]
    assert stage_counts(tmp_path, "propose")["given"] == 2


def test_import_of_a_bad_file_names_line_and_field(tmp_path):
    bad = write_jsonl(tmp_path / "hb.jsonl", [healthbench_line(1), {**healthbench_line(2),
                      "rubrics": [{"criterion": "x", "points": 11}]}])  # fmt: skip
    result = harness(tmp_path, "import", str(bad), "--run", "r")
    assert result.exit_code != 0
    assert f"{bad}:2: rubrics.0.points:" in str(result.exception)
    assert not (tmp_path / "runs" / "r" / "imported").exists()


def test_file_formats_are_told_apart(tmp_path, healthbench):
    assert file_format(healthbench) == "healthbench"
    assert file_format(write_jsonl(tmp_path / "e.jsonl", [])) is None
    assert file_format(write_jsonl(tmp_path / "p.jsonl", [{"id": "a", "prompt": "b"}])) == "other"


def test_refinement_keeps_a_clinicians_points_on_kept_criteria():
    given = Rubric(prompt_id="p", criteria=(
        Criterion(id="c1", text="Advises emergency care.", weight=9, tags=("axis:accuracy",)),
        Criterion(id="c2", text="Recommends aspirin  for all.", weight=-6),
        Criterion(id="c3", text="Is brief.", weight=1, tags=("axis:communication",)),
    ))  # fmt: skip
    rewritten = (
        Criterion(id="c1", text="advises emergency care.", weight=3),  # kept: 9 and its tag
        Criterion(id="c2", text="Recommends aspirin for all.", weight=1),  # kept: a penalty
        Criterion(id="c3", text="Is brief.", weight=2),  # on the 1..3 scale: the rewrite's 2
        Criterion(id="c4", text="Names a dose.", weight=2),  # new
    )
    kept = keep_given_points(given, rewritten)
    assert [c.weight for c in kept] == [9, -6, 2, 2]
    assert [c.tags for c in kept] == [("axis:accuracy",), (), ("axis:communication",), ()]


def meta_eval_line(prompt: str, completion: str, rubric: str, labels: list[bool]) -> dict:
    return {
        "prompt_id": prompt,
        "prompt": [{"role": "user", "content": f"Question {prompt}"}],
        "completion_id": completion,
        "completion": f"Answer {completion}",
        "rubric": rubric,
        "category": "cluster:emergency_referrals",
        "binary_labels": labels,
        "anonymized_physician_ids": [f"doc{i}" for i in range(len(labels))],
    }


def test_import_of_a_meta_evaluation_feeds_compare(tmp_path):
    meta = write_jsonl(tmp_path / "meta.jsonl", [
        meta_eval_line("q1", "a1", "Advises  emergency care.", [True, True, False]),
        meta_eval_line("q1", "a1", "Asks about onset.", [False, False]),
        meta_eval_line("q1", "a2", "Advises emergency care.", [True]),
        meta_eval_line("q2", "b1", "Names a dose.", [True, False]),  # an even split
    ])  # fmt: skip
    result = succeeded(harness(tmp_path, "import", str(meta), "--run", "r"))
    assert "meta-evaluation" in result.output
    imported = tmp_path / "runs" / "r" / "imported"
    source = json.loads((imported / "source.json").read_text())
    assert (source["prompts"], source["responses"], source["criteria"]) == (2, 3, 3)
    assert (source["labelled_items"], source["labels"]) == (4, 8)
    labels = [json.loads(line) for line in (imported / "labels.jsonl").read_text().splitlines()]
    # "Advises  emergency care." and "Advises emergency care." are one criterion of q1
    assert [(x["candidate_id"], x["criterion_id"]) for x in labels] == [
        ("a1", "c1"), ("a1", "c2"), ("a2", "c1"), ("b1", "c1")]  # fmt: skip
    overrides = {"rollouts.num_samples": "0", "roles.policy": "null"}
    succeeded(harness(tmp_path, "compare-verifiers", **overrides))
    metrics = json.loads((tmp_path / "runs" / "r" / "compare" / "metrics.json").read_text())
    assert metrics["reference"]["kind"] == "labels"
    # the even split has no majority: 3 of the 4 items are compared
    assert [row["num_compared"] for row in metrics["verifiers"]] == [3]


def test_refinement_may_keep_every_criterion_of_a_long_given_rubric():
    from harness.config import ProposeConfig
    from harness.proposer import proposal_type, refine_bounds
    from harness.types import json_schema_of

    long = Rubric(prompt_id="p", criteria=tuple(
        Criterion(id=f"c{i}", text=f"Criterion {i}.", weight=5) for i in range(25)))  # fmt: skip
    short = Rubric(prompt_id="p", criteria=long.criteria[:3])
    settings = ProposeConfig(max_criteria=20)
    assert json_schema_of(proposal_type(refine_bounds(settings, long)))["maxItems"] == 25
    assert json_schema_of(proposal_type(refine_bounds(settings, short)))["maxItems"] == 20


def test_grading_stays_on_the_physicians_rubric_after_refinement(tmp_path, healthbench):
    overrides = {"data.prompts": str(healthbench), "refine.iterations": "1"}
    succeeded(harness(tmp_path, "verify", proposer=True, **overrides))
    refined = {r["prompt_id"] for r in records(tmp_path, "rubrics.jsonl") if r["version"] > 0}
    assert refined  # the reward's rubric moved on from the physicians'
    assert {v["rubric_version"] for v in records(tmp_path, "verdicts.jsonl")
            if v["prompt_id"] in refined} == {1}  # fmt: skip
    # ...while grading verified the same candidates against version 0 as well
    again = records(tmp_path, "grading_verdicts.jsonl")
    assert {(v["prompt_id"], v["rubric_version"]) for v in again} == {(p, 0) for p in refined}
    grading = json.loads((tmp_path / "runs" / "r" / "grading.json").read_text())
    policy = next(m for m in grading["models"] if m["model"] == "policy")
    tags = {t["tag"]: t for t in policy["tags"]}
    # every policy response is graded under the axis tags of the physicians' criteria
    assert tags["axis:accuracy"]["n"] == 4 and tags["axis:context_awareness"]["n"] == 4
    assert stage_counts(tmp_path, "verify")["graded_on_given_rubrics"] == 5


def test_clinicians_labels_are_compared_on_their_own_criteria_after_refinement(
    tmp_path, healthbench
):
    # a clinician labelled the ideal answer on the physicians' criteria c1..c3 (version 0)
    labels = write_jsonl(tmp_path / "labels.jsonl", [
        {"candidate_id": "hb-1:ideal:0", "criterion_id": f"c{k}", "label": k != 2}
        for k in (1, 2, 3)])  # fmt: skip
    overrides = {"data.prompts": str(healthbench), "refine.iterations": "1",
                 "compare.labels": str(labels)}  # fmt: skip
    succeeded(harness(tmp_path, "compare-verifiers", proposer=True, **overrides))
    assert any(r["version"] > 0 for r in records(tmp_path, "rubrics.jsonl"))
    metrics = json.loads((tmp_path / "runs" / "r" / "compare" / "metrics.json").read_text())
    assert metrics["reference"]["kind"] == "labels"
    assert [row["num_compared"] for row in metrics["verifiers"]] == [3]
    # the verifier was asked about the physicians' criteria, not the refined rubric's
    compared = records(tmp_path, "compare/verifier.verdicts.jsonl")
    assert {v["rubric_version"] for v in compared if v["candidate_id"] == "hb-1:ideal:0"} == {0}


def test_the_probes_run_on_the_physicians_answers(tmp_path, healthbench):
    """With reference answers among the candidates, they are the probes' originals."""
    overrides = {"data.prompts": str(healthbench), "probes.per_prompt": "1"}
    succeeded(harness(tmp_path, "compare-verifiers", **overrides))
    perturbed = records(tmp_path, "probes/perturbations.jsonl")
    originals = {p["prompt_id"]: p["original_id"] for p in perturbed}
    assert originals["hb-1"] == "hb-1:ideal:0"  # hb-2 brings no ideal answer: a candidate
    assert originals["hb-2"] != "hb-2:ideal:0" and originals["hb-2"].startswith("hb-2")
    echo = next(p for p in perturbed if p["probe"] == "echo" and p["prompt_id"] == "hb-1")
    assert echo["text"] == (
        "The response advises emergency care. The response asks about onset."
    )  # the penalty criterion is not echoed
    metrics = json.loads((tmp_path / "runs" / "r" / "compare" / "metrics.json").read_text())
    probes = metrics["verifiers"][0]["probes_hard"]
    assert probes["num_originals"] == 2
    assert {f["probe"] for f in probes["probes"]} >= {"echo", "stuffing", "regrade"}
