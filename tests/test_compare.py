"""The verifier comparison on hand tables: metrics against a reference verifier or human
labels, the tail restricted to each prompt's top responses, RTD's pair, the reference pick,
and engines stopped between sizes."""

import json
from pathlib import Path

import pytest

from harness.backends.cache import CachedBackend, CompletionCache
from harness.backends.scripted import ScriptedBackend
from harness.compare import (
    Measurement,
    count_parameters,
    load_labels,
    reference_label,
    verifier_metrics,
)
from harness.config import HarnessConfig
from harness.jsonl import InputError
from harness.roles import RolePool
from harness.types import Candidate, Criterion, Prompt, Rubric, Verdict
from harness.verifier import Job

from .conftest import scripted_role

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


REFERENCE = {(v.candidate_id, v.criterion_id): v.met for v in verdicts(
    {"r4": 4, "r3": 3, "r2": 2, "r1": 1})}  # fmt: skip


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


def test_human_labels_are_read_with_file_and_line_in_errors(tmp_path: Path):
    path = tmp_path / "labels.jsonl"
    path.write_text('{"candidate_id": "r1", "criterion_id": "c1", "label": "yes"}\n'
                    '{"candidate_id": "r1", "criterion_id": "c2", "label": false}\n')  # fmt: skip
    assert load_labels(path) == {("r1", "c1"): True, ("r1", "c2"): False}
    path.write_text('{"candidate_id": "r1", "criterion_id": "c1", "label": "maybe"}\n')
    with pytest.raises(InputError, match=r"labels.jsonl:1: field 'label'"):
        load_labels(path)


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
    role_config = scripted_role(["{}"])
    inner = ScriptedBackend("verifier", role_config, context)
    cached = CachedBackend(inner, CompletionCache(context.cache_dir / "completions.sqlite"))
    with RolePool(context) as pool:
        pool._backends[pool.key(role_config)] = cached
        assert pool.role("verifier", role_config).backend is cached
        assert pool.role("verifier", role_config, cached=False).backend is inner
