"""The verifier comparison on hand tables: metrics against a reference verifier or human
labels, the tail restricted to each prompt's top responses, RTD's pair, the reference pick,
engines stopped between sizes, and the off-topic preference probe run with scripted
verifiers."""

import json
from pathlib import Path

import pytest

from harness.backends.scripted import RULES, ScriptedBackend, keyword_verdicts
from harness.compare import (
    Measurement,
    compare_verifiers,
    count_parameters,
    label_verdicts,
    labels_source,
    reference_label,
    verifier_metrics,
)
from harness.config import HarnessConfig, RoleConfig
from harness.datasets import IDEAL_MODEL
from harness.jsonl import InputError, read_records, write_records
from harness.offtopic import off_topic_jobs
from harness.prompts import PROMPTS_DIR
from harness.roles import RolePool
from harness.runstate import RunPaths
from harness.summary_schema import CompareMetrics, VerifierRow
from harness.types import Candidate, Criterion, Prompt, Rubric, Verdict
from harness.verifier import Job

from .conftest import scripted_role, verdict_requests
from .fakes import FakeOpenAIServer

PROMPT = Prompt(id="p", prompt="Which dose?")
RUBRIC = Rubric(prompt_id="p", criteria=tuple(
    Criterion(id=f"c{i}", text=f"criterion {i}", weight=1) for i in range(1, 5)))  # fmt: skip
# reference: candidate k meets the first k criteria, so scores 1.0 > 0.75 > 0.5 > 0.25
CANDIDATES = [Candidate(id=f"r{k}", prompt_id="p", text=f"response {k}", model="m")
              for k in (4, 3, 2, 1)]  # fmt: skip
JOBS = [Job(PROMPT, c, RUBRIC) for c in CANDIDATES]


def verdicts(met: dict[str, int]) -> list[Verdict]:
    """Candidate id -> how many of the first criteria it meets."""
    return [
        Verdict(prompt_id="p", candidate_id=cid, rubric_version=0, criterion_id=f"c{i}",
                met=i <= count, verifier="v")
        for cid, count in met.items() for i in range(1, 5)
    ]  # fmt: skip


def measurement(label="small", seconds=2.0) -> Measurement:
    return Measurement(label=label, model=label, params=100, fingerprint="f", num_requests=4,
                       num_verdicts=16, seconds=seconds, prompt_tokens=400, output_tokens=80,
                       latency_p50_s=0.5, latency_p95_s=0.9, peak_memory_mb=512.0)  # fmt: skip


REFERENCE = verdicts({"r4": 4, "r3": 3, "r2": 2, "r1": 1})


def test_a_verifier_that_swaps_the_top_two_is_right_overall_and_wrong_in_the_tail():
    # scores 0.75, 1.0, 0.5, 0.25: of the 6 pairs only (r4, r3) is ordered wrong
    swapped = verdicts({"r4": 3, "r3": 4, "r2": 2, "r1": 1})
    row = verifier_metrics(JOBS, swapped, REFERENCE, measurement(), HarnessConfig())
    assert row["pairwise_accuracy"] == pytest.approx(5 / 6)
    # the top quartile of 4 responses is the top 2: one pair, ordered wrong
    assert row["num_tail_pairs"] == 1 and row["tail_pairwise_accuracy"] == 0.0
    # r4 and r3 differ on c4 only: 2 of 16 verdicts disagree
    assert row["accuracy"] == pytest.approx(14 / 16)
    assert row["rtd_pair_agreement"] == 1.0  # the same two responses, in the other order
    assert row["criteria_per_s"] == 8.0 and row["tokens_per_s"] == 40.0


def test_rtd_pair_agreement_drops_when_another_response_enters_the_top_two():
    flipped = verdicts({"r4": 4, "r3": 1, "r2": 3, "r1": 2})
    row = verifier_metrics(JOBS, flipped, REFERENCE, measurement(), HarnessConfig())
    assert row["rtd_pair_agreement"] == 0.0


def test_unscored_verdicts_count_as_unscored_not_as_no():
    partial = [v.model_copy(update={"met": None}) if v.candidate_id == "r1" else v
               for v in verdicts({"r4": 4, "r3": 3, "r2": 2, "r1": 1})]  # fmt: skip
    row = verifier_metrics(JOBS, partial, REFERENCE, measurement(), HarnessConfig())
    assert row["num_unscored"] == 4 and row["unscored_rate"] == 0.25
    assert row["accuracy"] == 1.0 and row["num_compared"] == 12
    # r1 has no score: its 3 pairs count as wrong, the other 3 are right
    assert row["pairwise_accuracy"] == 0.5


def test_human_labels_score_like_a_reference_verifier_with_the_same_verdicts():
    labels = {(v.candidate_id, v.criterion_id): v.met for v in REFERENCE}
    swapped = verdicts({"r4": 3, "r3": 4, "r2": 2, "r1": 1})
    reference = label_verdicts(JOBS, labels, "labels.jsonl")
    by_labels = verifier_metrics(JOBS, swapped, reference, measurement(), HarnessConfig())
    assert by_labels == verifier_metrics(JOBS, swapped, REFERENCE, measurement(), HarnessConfig())
    assert by_labels["pairwise_accuracy"] == pytest.approx(5 / 6)


def test_a_criterion_without_a_label_stays_out_of_the_reference():
    [verdict] = label_verdicts(JOBS, {("r4", "c1"): True, ("other", "c1"): False}, "labels.jsonl")
    assert (verdict.candidate_id, verdict.criterion_id, verdict.met) == ("r4", "c1", True)
    assert verdict.verifier == "labels.jsonl"


def test_labels_come_from_the_profile_else_from_the_run_import(tmp_path: Path):
    config = HarnessConfig()
    paths = RunPaths(tmp_path / "run")
    assert labels_source(config, paths) is None
    paths.imported_dir.mkdir(parents=True)
    paths.imported_labels_path.write_text("{}\n")
    assert labels_source(config, paths) == paths.imported_labels_path
    named = config.model_copy(update={"compare": config.compare.model_copy(
        update={"labels": str(tmp_path / "mine.jsonl")})})  # fmt: skip
    assert labels_source(named, paths) == tmp_path / "mine.jsonl"  # named, even if absent


def test_the_reference_is_the_largest_verifier_unless_named():
    config = HarnessConfig(roles={"verifier": [
        {"name": "a", "backend": "scripted", "model": "a", "replies": []},
        {"name": "b", "backend": "scripted", "model": "b", "replies": []}]})  # fmt: skip
    sizes = {"a": measurement("a"), "b": measurement("b")}
    sizes["a"] = Measurement(**{**sizes["a"].__dict__, "params": 10**9})
    assert reference_label(config, sizes) == "a"
    named = config.model_copy(update={"compare": config.compare.model_copy(
        update={"reference": "b"})})  # fmt: skip
    assert reference_label(named, sizes) == "b"
    wrong = config.model_copy(update={"compare": config.compare.model_copy(
        update={"reference": "c"})})  # fmt: skip
    with pytest.raises(InputError, match="no verifier is labelled 'c'"):
        reference_label(wrong, sizes)


def test_parameters_are_counted_from_the_safetensors_headers(tiny_models):
    config = json.loads((tiny_models / "tiny-s" / "config.json").read_text())
    assert config["model_type"] == "qwen2"
    assert count_parameters("tiny-s") == 623_744
    assert count_parameters("no-such-model") is None


def test_the_pool_stops_only_the_engines_no_stage_needs(context):
    first, second = scripted_role(["{}"]), scripted_role(["[]"])
    with RolePool(context) as pool:
        a, b = pool.role("verifier", first), pool.role("judge", second)
        assert pool.role("proposer", first).backend is a.backend  # one backend per model
        pool.keep_only([second])
        assert pool.role("judge", second).backend is b.backend
        assert pool.role("verifier", first).backend is not a.backend  # started anew
        pool.release(second)
        assert pool.role("judge", second).backend is not b.backend


def test_an_uncached_role_reaches_the_backend(context):
    [request] = verdict_requests(1)
    with FakeOpenAIServer() as server, RolePool(context) as pool:
        role_config = RoleConfig(backend="openai", model="m", base_url=server.base_url)
        cached = pool.role("verifier", role_config)
        assert [cached.generate([request])[0].cached for _ in range(2)] == [False, True]
        assert len(server.requests) == 1
        [answer] = pool.role("verifier", role_config, cached=False).generate([request])
        assert not answer.cached and answer.parsed == cached.generate([request])[0].parsed
        assert len(server.requests) == 2


# --- the off-topic preference probe ---------------------------------------------------------

FRUITS = {"p1": ("apple", "pie"), "p2": ("banana", "bread"), "p3": ("cherry", "jam")}
AGREEMENT_KEYS = ["accuracy", "balanced_accuracy", "kappa", "f1_yes", "f1_no", "spearman",
                  "pairwise_accuracy", "tail_pairwise_accuracy", "rtd_pair_agreement",
                  "unscored_rate", "num_unscored", "num_compared", "num_pairs",
                  "num_tail_pairs"]  # fmt: skip


def fruit_jobs() -> list[Job]:
    """Three prompts whose rubric asks for their own words ("apple", "pie" for p1); each
    prompt's two responses carry one or both of them, p1's second is a reference answer."""
    jobs = []
    for pid, (fruit, dish) in FRUITS.items():
        prompt = Prompt(id=pid, prompt=f"A {fruit} recipe?")
        rubric = Rubric(prompt_id=pid, criteria=(
            Criterion(id="c1", text=f'Response contains the word "{fruit}"', weight=1),
            Criterion(id="c2", text=f'Response contains the word "{dish}"', weight=1)))  # fmt: skip
        model = {"p1": IDEAL_MODEL}.get(pid, "m")
        texts = [(f"{pid}:m:0", "m", f"{fruit} {dish}"), (f"{pid}:m:1", model, fruit)]
        jobs += [Job(prompt, Candidate(id=cid, prompt_id=pid, text=text, model=m,
                                       sample_index=i), rubric)
                 for i, (cid, m, text) in enumerate(texts)]  # fmt: skip
    return jobs


def probe_config(*verifiers, **compare) -> HarnessConfig:
    return HarnessConfig(roles={"verifier": list(verifiers)}, compare=compare)


def keyword_verifier(name="keyword") -> RoleConfig:
    return RoleConfig(name=name, backend="scripted", model=name, rule="keyword")


def constant_verifier(name="constant") -> RoleConfig:
    return RoleConfig(name=name, backend="scripted", model=name,
                      replies=['{"c1": "yes", "c2": "yes"}'])  # fmt: skip


def run_compare(
    context, config: HarnessConfig, folder: Path, labels: Path | None = None
) -> CompareMetrics:
    return compare_with_backends(context, config, folder, labels)[0]


def compare_with_backends(
    context, config: HarnessConfig, folder: Path, labels: Path | None = None
) -> tuple[CompareMetrics, dict[str, ScriptedBackend]]:
    """The comparison, and the backend of each verifier label (their calls recorded)."""
    with RolePool(context) as pool:
        backends = {v.label: pool.role("verifier", v).backend for v in config.roles.verifier}
        summary = compare_verifiers(
            pool, fruit_jobs(), config, PROMPTS_DIR, folder, "f", labels=labels
        )
        return summary, backends


def rows_by_label(summary: CompareMetrics) -> dict[str, VerifierRow]:
    return {row.label: row for row in summary.verifiers}


def test_off_topic_jobs_are_stable_distinct_and_from_other_prompts():
    jobs = fruit_jobs()
    probe = off_topic_jobs(jobs, 3)
    assert [j.candidate.id for j in probe] == [j.candidate.id for j in off_topic_jobs(jobs, 3)]
    assert len(probe) == 9 and len({j.candidate.id for j in probe}) == 9
    own = {j.candidate.id: j for j in jobs}
    for job in probe:
        _, host, donor_id = job.candidate.id.split(":", 2)
        donor = own[donor_id].candidate
        assert job.prompt.id == host == job.candidate.prompt_id != donor.prompt_id
        assert job.rubric.prompt_id == host and job.candidate.text == donor.text
    assert len(off_topic_jobs(jobs, 10)) == 12  # every other prompt's response, no more
    assert off_topic_jobs(jobs, 0) == [] and off_topic_jobs(jobs[:2], 4) == []


def test_a_verifier_that_reads_the_response_prefers_on_topic_and_a_constant_one_is_random(
    context, tmp_path: Path
):
    config = probe_config(keyword_verifier(), constant_verifier(), reference="keyword")
    summary = run_compare(context, config, tmp_path / "compare")
    rows = rows_by_label(summary)
    # 3 prompts x 2 own responses x 4 off-topic ones; the reference answer is on-topic
    assert rows["keyword"].reference and rows["keyword"].off_topic_accuracy == 1.0
    assert rows["keyword"].off_topic_pairs == 24 and rows["keyword"].off_topic_unscored == 0
    assert rows["constant"].off_topic_accuracy == 0.5
    assert rows["constant"].off_topic_ties == 24
    saved = json.loads((tmp_path / "compare" / "metrics.json").read_text())
    assert saved == summary.as_record()
    assert saved["verifiers"][1]["off_topic_accuracy"] == 0.5
    assert saved["off_topic_per_prompt"] == 4
    stored = read_records(tmp_path / "compare" / "keyword.verdicts.jsonl", Verdict)
    assert sum(v.candidate_id.startswith("offtopic:p1:") for v in stored) == 4 * 2


def test_off_topic_jobs_leave_the_agreement_metrics_alone(context, tmp_path: Path):
    verifiers = (keyword_verifier(), constant_verifier())
    with_probe = run_compare(context, probe_config(*verifiers, reference="keyword"),
                             tmp_path / "with")  # fmt: skip
    without = run_compare(context, probe_config(*verifiers, reference="keyword",
                          off_topic_per_prompt=0), tmp_path / "without")  # fmt: skip
    for label, row in rows_by_label(with_probe).items():
        plain = rows_by_label(without)[label]
        assert {k: getattr(row, k) for k in AGREEMENT_KEYS} == {
            k: getattr(plain, k) for k in AGREEMENT_KEYS
        }
        assert plain.off_topic_accuracy is None and plain.off_topic_pairs == 0
    constant = rows_by_label(with_probe)["constant"]
    assert constant.num_compared == 12 and constant.accuracy == 0.75


def test_unscored_off_topic_pairs_are_left_out_and_counted(context, tmp_path: Path, monkeypatch):
    def script(request):  # no answer for the responses shown to p1
        return None if request.id.startswith("offtopic:p1:") else keyword_verdicts(request)

    monkeypatch.setitem(RULES, "keyword", script)  # what the registry's scripted backend follows
    flaky = RoleConfig(name="flaky", backend="scripted", model="flaky", rule="keyword",
                       max_attempts=1)  # fmt: skip
    summary = run_compare(context, probe_config(flaky), tmp_path / "c")
    row = summary.verifiers[0]
    assert row.reference and row.off_topic_unscored == 8 and row.off_topic_pairs == 16
    assert row.off_topic_accuracy == 1.0
    assert row.num_unscored == 0  # the on-topic verdicts were all answered


def test_a_rerun_measures_only_what_is_missing(context, tmp_path: Path):
    keyword, constant = keyword_verifier(), constant_verifier()
    first = run_compare(context, probe_config(keyword), tmp_path / "c")
    both = probe_config(keyword, constant)
    again, backends = compare_with_backends(context, both, tmp_path / "c")
    assert backends["keyword"].calls == []  # reused, probe included
    assert backends["constant"].calls != []
    assert rows_by_label(again)["keyword"].off_topic_accuracy == 1.0
    assert rows_by_label(first)["keyword"].off_topic_accuracy == 1.0
    # a run folder from before the probe has no verdicts of its jobs: measured again
    path = tmp_path / "c" / "keyword.verdicts.jsonl"
    kept = [v for v in read_records(path, Verdict) if not v.candidate_id.startswith("offtopic:")]
    write_records(path, kept)
    _, backends = compare_with_backends(context, both, tmp_path / "c")
    assert len(backends["keyword"].calls) == 6 + 12
