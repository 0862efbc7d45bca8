"""Which stages a rerun repeats, driven through the CLI on scripted roles.

Every role answers by rule (`rule: synthetic`: the same request gets the same answer), so a
whole run takes a second and a rerun can be compared with the first file by file. One run is
made per module; each test copies its folder, changes one input and reruns: the stage that
reads the input runs again, so do the stages after it whose inputs (the files it writes)
changed, and every stage before it is reused. Only the run folder's files are read: a stage
that ran records a new fingerprint in `stages.json`, a reused one leaves its entry as it was.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from harness.cli import main
from harness.models.manifest import PROJECT_ROOT
from tests.fakes import FakeOpenAIServer, closed_port

RUBRIC_STAGES = ("prompts", "rollouts", "propose", "refine", "verify")  # `harness eval` runs
STAGES = (*RUBRIC_STAGES, "compare")  # `harness compare-verifiers` runs
# `refine.verifier: second` lets a change to the first verifier reach `verify` alone. The
# comparison runs through `compare-verifiers`, which draws no report plots (seconds each).
PROFILE = """
run_name: r
data: {max_prompts: 3}
rollouts:
  num_samples: 3
  models:
    - {backend: scripted, model: policy-a, rule: synthetic}
    - {backend: scripted, model: policy-b, rule: synthetic}
propose: {min_criteria: 2, max_criteria: 4}
refine: {iterations: 1, verifier: second}
eval: {compare: false, train: false, judge: false, overoptimization: false, theory: false}
roles:
  policy: {backend: scripted, model: policy-a, rule: synthetic}
  proposer: {backend: scripted, model: proposer, rule: synthetic}
  verifier:
    - {name: first, backend: scripted, model: first, rule: synthetic}
    - {name: second, backend: scripted, model: second, rule: synthetic}
"""
# written by every invocation: the report (its time, each stage's status) and the resolved
# profile (which names the copied run's folder)
NOT_STAGE_FILES = {"summary.json", "report.md", "report.html", "config.yaml"}


def harness(command: str, folder: Path, *overrides: str) -> Result:
    """`harness COMMAND` on the profile in `folder`, with its run and templates there."""
    settings = [f"runs_dir={folder / 'runs'}", f"prompts_dir={folder / 'templates'}", *overrides]
    args = [command, "-c", str(folder / "profile.yaml")]
    return CliRunner().invoke(main, args + [a for s in settings for a in ("--set", s)])


def succeeded(result: Result) -> Result:
    assert result.exit_code == 0, f"{result.exception!r}\n{result.output[-3000:]}"
    return result


def run_dir(folder: Path) -> Path:
    return folder / "runs" / "r"


def read_json(path: Path):
    return json.loads(path.read_text())


def stage_record(folder: Path) -> dict:
    return read_json(run_dir(folder) / "stages.json")


def rerun(command: str, folder: Path, *overrides: str) -> dict[str, str]:
    """Run `command` again with `overrides`; each stage's status read from `stages.json`."""
    before = stage_record(folder)
    succeeded(harness(command, folder, *overrides))
    after = stage_record(folder)
    return {stage: "reused" if after[stage] == entry else "ran" for stage, entry in before.items()}


def expected(*ran: str, stages: tuple[str, ...] = STAGES) -> dict[str, str]:
    return {stage: "ran" if stage in ran else "reused" for stage in stages}


def summary_rows(path: Path, key: str) -> dict[str, object]:
    """Each stage's `key` ("status", "counts") in a summary.json."""
    return {row["stage"]: row[key] for row in read_json(path)["stages"]}


def stage_files(folder: Path) -> dict[str, bytes]:
    """Every file the stages wrote, by its path inside the run folder."""
    root = run_dir(folder)
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.name not in NOT_STAGE_FILES
    }


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().split("\n") if line]


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The rubric pipeline through `harness eval` (no plots: no comparison to draw)."""
    folder = tmp_path_factory.mktemp("first")
    (folder / "profile.yaml").write_text(PROFILE)
    shutil.copytree(PROJECT_ROOT / "prompts", folder / "templates")
    succeeded(harness("eval", folder))
    return folder


@pytest.fixture(scope="module")
def compared_run(first_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first run, then the comparison of its verifiers."""
    folder = tmp_path_factory.mktemp("compared") / "run"
    shutil.copytree(first_run, folder)
    succeeded(harness("compare-verifiers", folder))
    return folder


@pytest.fixture
def eval_copy(first_run: Path, tmp_path: Path) -> Path:
    """A copy of the first run's folder, profile and templates, to change and rerun."""
    return Path(shutil.copytree(first_run, tmp_path / "copy"))


@pytest.fixture
def run_copy(compared_run: Path, tmp_path: Path) -> Path:
    """A copy of the compared run's folder, profile and templates, to change and rerun."""
    return Path(shutil.copytree(compared_run, tmp_path / "copy"))


def test_the_summary_of_the_first_run_counts_what_the_stage_files_hold(first_run):
    root = run_dir(first_run)
    summary = read_json(root / "summary.json")
    assert summary_rows(root / "summary.json", "status") == {
        **dict.fromkeys(RUBRIC_STAGES, "ran"),
        **dict.fromkeys(("compare", "train", "judge", "overoptimization", "theory"), "off"),
    }
    counts = summary_rows(root / "summary.json", "counts")
    rubrics, candidates = lines(root / "rubrics.jsonl"), lines(root / "candidates.jsonl")
    latest = {r["prompt_id"]: r for r in rubrics if r["version"] == 1}
    assert counts["prompts"]["prompts"] == len(lines(root / "prompts.jsonl")) == 3
    assert counts["rollouts"]["candidates"] == len(candidates) == 3 * 2 * 3
    assert counts["propose"]["rubrics"] == sum(r["version"] == 0 for r in rubrics) == 3
    assert counts["refine"]["new_rubrics"] == len(latest) == 3
    assert counts["refine"]["iterations"] == 1 and summary["refine"] == lines(root / "refine.jsonl")
    num_verdicts = sum(len(latest[c["prompt_id"]]["criteria"]) for c in candidates)
    assert counts["verify"]["verdicts"] == len(lines(root / "verdicts.jsonl")) == num_verdicts
    assert len(lines(root / "rewards.jsonl")) == len(candidates)
    assert summary["unscored"] == {"rollouts": 0, "propose": 0, "refine": 0, "verify": 0,
                                   "compare": None, "train": None, "judge": None}  # fmt: skip
    done = stage_record(first_run)
    assert sorted(done) == sorted(RUBRIC_STAGES)
    for stage in RUBRIC_STAGES:
        assert {k: v for k, v in done[stage].items() if k not in ("fingerprint", "seconds")} == (
            counts[stage]
        )


def test_the_comparison_reuses_the_rubric_stages(first_run, compared_run):
    done = stage_record(compared_run)
    assert {stage: done[stage] for stage in RUBRIC_STAGES} == stage_record(first_run)
    assert done["compare"]["verifiers"] == 2
    metrics = read_json(run_dir(compared_run) / "compare" / "metrics.json")
    assert [v["label"] for v in metrics["verifiers"]] == ["first", "second"]


def test_an_unchanged_rerun_reuses_every_stage_and_rewrites_nothing(first_run, eval_copy):
    before = stage_files(eval_copy)
    assert rerun("eval", eval_copy) == expected(stages=RUBRIC_STAGES)
    assert stage_files(eval_copy) == before
    summary = run_dir(eval_copy) / "summary.json"
    first = run_dir(first_run) / "summary.json"
    assert summary_rows(summary, "status") == {
        **summary_rows(first, "status"),
        **dict.fromkeys(RUBRIC_STAGES, "reused"),
    }
    assert summary_rows(summary, "counts") == summary_rows(first, "counts")


def test_the_summary_says_which_stages_ran_and_which_were_reused(eval_copy):
    succeeded(harness("eval", eval_copy, "roles.proposer.sampling.temperature=0.5"))
    statuses = summary_rows(run_dir(eval_copy) / "summary.json", "status")
    assert [statuses[stage] for stage in RUBRIC_STAGES] == ["reused", "reused", "ran", "ran", "ran"]


@pytest.mark.parametrize(
    ("override", "ran"),
    [
        # other prompts: every stage reads them in the end
        ("data.max_prompts=4", STAGES),
        ("rollouts.num_samples=2", ("rollouts", "refine", "verify", "compare")),
        ("rollouts.models.1.sampling.temperature=0.5", ("rollouts", "refine", "verify", "compare")),
        ("roles.proposer.sampling.temperature=0.5", ("propose", "refine", "verify", "compare")),
        ("propose.max_criteria=3", ("propose", "refine", "verify", "compare")),
        ("refine.pair=diverse", ("refine", "verify", "compare")),
        # the refiner scores each pool with the reward to pick its pair
        ("verify.reward=paper", ("refine", "verify", "compare")),
        # the verifier of `verify` (not of `refine`): the rubrics stay as they are
        ("roles.verifier.0.sampling.temperature=0.5", ("verify", "compare")),
        # refine's verifier answers by rule, so the rubrics come out the same: verify is reused
        ("roles.verifier.1.sampling.temperature=0.5", ("refine", "compare")),
        ("compare.tail_quantile=0.5", ("compare",)),
        # whether a stage is done, not what it writes: nothing reruns
        ("verify.max_unscored_share=0.9", ()),
    ],
)
def test_a_changed_input_reruns_its_stage_and_the_stages_that_read_its_output(
    run_copy, override, ran
):
    assert rerun("compare-verifiers", run_copy, override) == expected(*ran)


def test_the_same_prompts_from_another_file_rerun_only_the_prompts_stage(run_copy):
    source = run_copy / "prompts-copy.jsonl"
    shutil.copyfile(PROJECT_ROOT / "harness" / "data" / "sample_prompts.jsonl", source)
    before = stage_files(run_copy)
    assert rerun("compare-verifiers", run_copy, f"data.prompts={source}") == expected("prompts")
    after = stage_files(run_copy)
    assert after.pop("stages.json") != before.pop("stages.json")
    assert after == before


def test_an_edited_template_reruns_every_stage_that_fills_templates(run_copy):
    template = run_copy / "templates" / "verify_all.user.j2"
    template.write_text(template.read_text() + "\n")
    ran = rerun("compare-verifiers", run_copy)
    assert ran == expected("propose", "refine", "verify", "compare")


NO_ANSWERS = (
    "roles.verifier.0.rule=null",
    "roles.verifier.0.replies=[]",
    "roles.verifier.0.max_attempts=1",
)


def test_a_stage_with_too_many_unscored_verdicts_is_not_marked_done(run_copy):
    before = stage_record(run_copy)
    num = before["verify"]["verdicts"]
    result = harness("verify", run_copy, *NO_ANSWERS)
    assert result.exit_code != 0
    assert f"verify: {num} of {num} verdicts unscored" in str(result.exception)
    assert stage_record(run_copy) == before
    verdicts = lines(run_dir(run_copy) / "verdicts.jsonl")
    assert [v["met"] for v in verdicts] == [None] * num  # kept to look at
    # max_unscored_share is no stage input: the unfinished stage runs, the rest is reused
    ran = rerun("verify", run_copy, *NO_ANSWERS, "verify.max_unscored_share=1.0")
    assert ran == expected("verify")
    assert stage_record(run_copy)["verify"]["unscored"] == num


def test_a_stage_whose_verifier_is_gone_is_not_marked_done(run_copy):
    port = closed_port()
    served = (
        "roles.verifier.1={name: second, backend: openai, model: second, max_attempts: 1, "
        f"base_url: 'http://127.0.0.1:{port}/v1'}}"
    )
    before = stage_record(run_copy)
    result = harness("verify", run_copy, served)
    assert result.exit_code != 0
    assert "refine stopped, not marked done" in str(result.exception)
    assert stage_record(run_copy) == before
    with FakeOpenAIServer(port=port):
        assert rerun("verify", run_copy, served) == expected("refine", "verify")
