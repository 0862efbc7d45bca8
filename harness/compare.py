"""Verifier-size comparison: every verifier of the profile checks the same (prompt, response,
rubric) set, and each is measured against a reference: a designated verifier (by default the
largest) or clinicians' labels (`compare.labels`, else the run's `imported/labels.jsonl`; read
by harness.labels, in the harness's layout or HealthBench's meta-evaluation one), whose
majority label per (response, criterion) is the reference; an even split has none and is left
out. With labels, `compare/metrics.json` also holds the clinicians' block: how many labelled
items the run has and has not, and the clinician-to-clinician ceiling (HealthBench's pooled
pairwise macro F1), and each verifier's pooled pairwise macro F1 against the individual
clinicians on the same items.

Per verifier: agreement on verdicts (accuracy, balanced accuracy, Cohen's kappa, F1 per class
and their mean, the macro F1), rank correlation of response scores within a prompt, pairwise
ranking accuracy overall and in the high-reward tail (pairs among a prompt's top quartile by
reference score: the paper's Table 2 probe), agreement on the pair RTD would refine on, the
unscored rate, and cost: criteria and output tokens per second, request latency p50/p95, peak
memory of the serving processes, and parameter count. Timings bypass the completion cache:
every request reaches the model. Each verifier, the reference included, also gets the off-topic
preference probe (harness.offtopic): its jobs are verified, timed and stored with the others,
but every agreement, pairwise and tail metric reads the on-topic jobs only.

Files: `compare/<label>.verdicts.jsonl` and `compare/<label>.measure.json` per verifier (a
rerun measures only the verifiers not yet done), `compare/metrics.json`.
"""

from __future__ import annotations

import json
import math
import struct
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from harness.config import HarnessConfig, RoleConfig
from harness.jsonl import InputError, read_records, write_json, write_records
from harness.labels import (
    MatchedLabels,
    clinician_ceiling,
    clinician_macro_f1,
    load_labels,
    majority_labels,
    match_labels,
)
from harness.machine import peak_gpu_memory, visible_gpus
from harness.metrics import (
    agreement,
    pairwise_accuracy,
    percentile,
    within_prompt_spearman,
)
from harness.models.manifest import local_model_dir
from harness.offtopic import off_topic_jobs, off_topic_row
from harness.refiner import select_pair
from harness.reward import PromptRewards, rewards
from harness.roles import Role
from harness.runstate import RunPaths
from harness.summary_schema import Clinicians, CompareMetrics, Reference, VerifierRow
from harness.trust import (
    ProbeSet,
    off_topic_columns,
    probe_fingerprint,
    probe_verdicts,
    recommend,
    verifier_probes,
)
from harness.types import Candidate, Verdict
from harness.verifier import Job, verify


@dataclass(frozen=True)
class Measurement:
    """What one verifier did on the comparison set, and what it cost."""

    label: str
    model: str
    params: int | None
    fingerprint: str
    num_requests: int
    num_verdicts: int
    seconds: float
    prompt_tokens: int
    output_tokens: int
    latency_p50_s: float | None
    latency_p95_s: float | None
    peak_memory_mb: float | None


def measure(
    role: Role, jobs: Sequence[Job], config: HarnessConfig, templates: Path, fingerprint: str
) -> tuple[list[Verdict], Measurement]:
    """Verify every job with `role` (uncached), timing it and sampling its memory."""
    with peak_memory(role.backend.process_ids()) as peak:
        started = time.perf_counter()
        verdicts = verify(role, jobs, config.verify, templates)
        seconds = time.perf_counter() - started
    stats = role.stats
    return verdicts, Measurement(
        label=role.config.label,
        model=role.config.model,
        params=count_parameters(role.config.model),
        fingerprint=fingerprint,
        num_requests=stats.requests,
        num_verdicts=len(verdicts),
        seconds=round(seconds, 4),
        prompt_tokens=stats.prompt_tokens,
        output_tokens=stats.completion_tokens,
        latency_p50_s=percentile(stats.latencies, 50),
        latency_p95_s=percentile(stats.latencies, 95),
        peak_memory_mb=peak.get("mb"),
    )


@contextmanager
def peak_memory(pids: Sequence[int], interval_s: float = 0.05) -> Iterator[dict[str, float]]:
    """Sample the resident memory of `pids` (plus the memory in use on the GPUs the engines
    see) while the block runs; the peak in MB lands in the yielded dict under "mb"."""
    import psutil

    result: dict[str, float] = {}
    if not pids:
        yield result
        return
    stop = threading.Event()

    def sample() -> None:
        while True:
            total = 0
            for pid in pids:
                try:
                    total += psutil.Process(pid).memory_info().rss
                except psutil.Error:
                    continue
            result["mb"] = max(result.get("mb", 0.0), total / 2**20)
            if stop.wait(interval_s):
                return

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        with peak_gpu_memory(visible_gpus()) as gpu:  # per device: PIDs read 0 in containers
            yield result
    finally:
        stop.set()
        sampler.join()
    if gpu:
        result["mb"] = result.get("mb", 0.0) + sum(gpu.values())


def count_parameters(model: str) -> int | None:
    """Parameters of a local model, from its safetensors headers (no weights are loaded)."""
    folder = local_model_dir(model)
    if folder is None:
        return None
    total = 0
    for weights in folder.glob("*.safetensors"):
        with weights.open("rb") as handle:
            (size,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(size))
        total += sum(math.prod(t["shape"]) for name, t in header.items() if name != "__metadata__")
    return total or None


def reference_label(config: HarnessConfig, measurements: dict[str, Measurement]) -> str:
    """The profile's `compare.reference`, else the verifier with the most parameters, else
    the last one listed."""
    labels = [v.label for v in config.roles.verifier]
    if config.compare.reference:
        if config.compare.reference not in labels:
            raise InputError(
                f"compare.reference: no verifier is labelled {config.compare.reference!r} "
                f"(verifiers: {', '.join(labels)})"
            )
        return config.compare.reference
    sized = [(measurements[label].params or -1, i, label) for i, label in enumerate(labels)]
    return max(sized)[2]


def labels_source(config: HarnessConfig, run_paths: RunPaths) -> Path | None:
    """The clinicians' labels to compare against: `compare.labels`, else the labels
    `harness import` brought into the run, else none (a reference verifier)."""
    if config.compare.labels:
        return config.project_path(config.compare.labels)
    imported = run_paths.imported_labels_path
    return imported if imported.is_file() else None


def label_verdicts(
    jobs: Sequence[Job], labels: dict[tuple[str, str], bool], source: str
) -> list[Verdict]:
    """Labels of the jobs' criteria as verdicts (criteria without a label left out), so that
    they are scored by the same reward path as a verifier's."""
    return [
        Verdict(prompt_id=job.prompt.id, candidate_id=job.candidate.id,
                rubric_version=job.rubric.version, criterion_id=c.id,
                met=labels[(job.candidate.id, c.id)], verifier=source)
        for job in jobs for c in job.rubric.criteria if (job.candidate.id, c.id) in labels
    ]  # fmt: skip


def verdict_table(verdicts: Sequence[Verdict]) -> dict[tuple[str, str], bool | None]:
    return {(v.candidate_id, v.criterion_id): v.met for v in verdicts}


def response_scores(
    jobs: Sequence[Job], verdicts: Sequence[Verdict], config: HarnessConfig
) -> PromptRewards:
    scores: PromptRewards = {}
    for job, reward in zip(jobs, rewards(jobs, verdicts, config.verify), strict=True):
        scores.setdefault(job.prompt.id, {})[job.candidate.id] = reward
    return scores


def rtd_pair_agreement(
    jobs: Sequence[Job], reference: PromptRewards, predicted: PromptRewards, strategy: str
) -> float | None:
    """Share of prompts where this verifier's scores make RTD pick the same pair of
    responses as the reference's scores do."""
    pools: dict[str, list[Candidate]] = {}
    for job in jobs:
        pools.setdefault(job.prompt.id, []).append(job.candidate)
    same = []
    for prompt_id, pool in pools.items():
        ref_pair = select_pair(pool, reference[prompt_id], strategy)
        our_pair = select_pair(pool, predicted[prompt_id], strategy)
        if ref_pair is not None and our_pair is not None:
            same.append({c.id for c in ref_pair} == {c.id for c in our_pair})
    return sum(same) / len(same) if same else None


def verifier_metrics(
    jobs: Sequence[Job],
    verdicts: Sequence[Verdict],
    reference: Sequence[Verdict],
    measurement: Measurement,
    config: HarnessConfig,
) -> dict[str, Any]:
    """Every comparison metric of one verifier against the reference verdicts (a verifier's
    or the clinicians' majority labels)."""
    table, reference_table = verdict_table(verdicts), verdict_table(reference)
    keys = [k for k in table if k in reference_table]
    agree = agreement([table[k] for k in keys], [reference_table[k] for k in keys])
    ranking = ranking_metrics(jobs, response_scores(jobs, reference, config),
                              response_scores(jobs, verdicts, config), config)  # fmt: skip
    counts = {key: ranking.pop(key) for key in ("num_pairs", "num_tail_pairs")}
    return {
        "label": measurement.label,
        "model": measurement.model,
        "params": measurement.params,
        **{k: agree[k] for k in ("accuracy", "balanced_accuracy", "kappa", "f1_yes", "f1_no")},
        "macro_f1": agree["macro_f1"],
        **ranking,
        "unscored_rate": sum(v.met is None for v in verdicts) / len(verdicts) if verdicts else None,
        "num_unscored": sum(v.met is None for v in verdicts),
        "num_without_p_yes": sum(v.met is not None and v.p_yes is None for v in verdicts),
        **cost_metrics(measurement),
        "num_compared": agree["n"],
        **counts,
    }


def ranking_metrics(
    jobs: Sequence[Job], reference: PromptRewards, scores: PromptRewards, config: HarnessConfig
) -> dict[str, Any]:
    """How the verifier's rewards order each prompt's responses, against the reference's."""
    overall = pairwise_accuracy(reference, scores)
    tail = pairwise_accuracy(reference, scores, config.compare.tail_quantile)
    return {
        "spearman": within_prompt_spearman(reference, scores),
        "pairwise_accuracy": overall["accuracy"],
        "tail_pairwise_accuracy": tail["accuracy"],
        "rtd_pair_agreement": rtd_pair_agreement(jobs, reference, scores, config.refine.pair),
        "num_pairs": overall["n_pairs"],
        "num_tail_pairs": tail["n_pairs"],
    }


def cost_metrics(measurement: Measurement) -> dict[str, Any]:
    """Throughput, tokens, latency and memory of one verifier's measurement."""
    seconds = max(measurement.seconds, 1e-9)
    return {
        "criteria_per_s": measurement.num_verdicts / seconds,
        "tokens_per_s": measurement.output_tokens / seconds,
        "prompt_tokens": measurement.prompt_tokens,
        "output_tokens": measurement.output_tokens,
        "latency_p50_s": measurement.latency_p50_s,
        "latency_p95_s": measurement.latency_p95_s,
        "peak_memory_mb": measurement.peak_memory_mb,
        "seconds": measurement.seconds,
        "num_verdicts": measurement.num_verdicts,
        "num_requests": measurement.num_requests,
    }


def compare_verifiers(
    pool: Any,
    jobs: Sequence[Job],
    config: HarnessConfig,
    templates: Path,
    folder: Path,
    fingerprint: str,
    *,
    labels: Path | None,
    probe_set: ProbeSet | None = None,
    probes_folder: Path | None = None,
) -> CompareMetrics:
    """Measure every verifier on `jobs` and the off-topic probe's jobs (reusing finished ones;
    with `eval.stop_idle_engines`, one engine at a time), then score each against the
    reference (the clinicians' majority label where `labels` names a file, see
    `labels_source`), and on the probe. With `probe_set`, each verifier also grades the
    reward-hacking probes (harness.trust; verdicts stored in `probes_folder`), and the
    verifiers are ranked by their hackability. `pool` is the run's RolePool."""
    folder.mkdir(parents=True, exist_ok=True)
    matched = match_labels(load_labels(labels), jobs) if labels is not None else None
    probe = off_topic_jobs(jobs, config.compare.off_topic_per_prompt)
    results: dict[str, tuple[list[Verdict], Measurement]] = {}
    hacking: dict[str, list[Verdict]] = {}
    for verifier in config.roles.verifier:
        results[verifier.label] = _measured(
            pool, verifier, [*jobs, *probe], config, templates, folder, fingerprint
        )
        if probe_set is not None and probe_set.originals and probes_folder is not None:
            hacking[verifier.label] = _probed(pool, verifier, probe_set, results[verifier.label][0],
                                              config, templates, probes_folder)  # fmt: skip
    on_topic = {label: on_topic_verdicts(v, probe) for label, (v, _) in results.items()}
    reference, ref = _reference(jobs, results, on_topic, config, matched)
    rows = []
    for label, (verdicts, measurement) in results.items():
        row = verifier_metrics(jobs, on_topic[label], reference, measurement, config)
        row |= probe_metrics(jobs, probe, verdicts, config)
        if label in hacking and probe_set is not None:
            row |= hacking_columns(label, probe_set, hacking[label], row, config)
        if matched is not None:
            row["clinician_macro_f1"] = clinician_macro_f1(verdict_table(on_topic[label]), matched)
        rows.append(row | {"reference": ref["kind"] == "verifier" and label == ref["label"]})
    verifiers = [VerifierRow.model_validate(row) for row in rows]
    recommended, recommendation = recommend(verifiers, config.probes.margin)
    summary = CompareMetrics(
        reference=Reference.model_validate(ref),
        verifiers=verifiers,
        tail_quantile=config.compare.tail_quantile,
        score=config.verify.score,
        off_topic_per_prompt=config.compare.off_topic_per_prompt,
        **({"clinicians": clinicians_block(matched)} if matched is not None else {}),
        **({"probe_settings": config.probes.model_dump(), "recommended": recommended,
            "recommendation": recommendation} if hacking else {}),
    )  # fmt: skip
    write_json(folder / "metrics.json", summary.as_record())
    return summary


def clinicians_block(matched: MatchedLabels) -> Clinicians:
    """What the labels held, what of it the run has, and the clinician-to-clinician ceiling."""
    majorities = majority_labels(matched)
    return Clinicians(
        source=str(matched.path),
        num_labelled=matched.num_labelled,
        num_matched=len(matched.items),
        num_unmatched=matched.num_unmatched,
        num_no_majority=sum(m is None for m in majorities.values()),
        **clinician_ceiling(matched),
    )


def _reference(
    jobs: Sequence[Job],
    results: dict[str, tuple[list[Verdict], Measurement]],
    on_topic: dict[str, list[Verdict]],
    config: HarnessConfig,
    matched: MatchedLabels | None,
) -> tuple[list[Verdict], dict[str, str]]:
    """The reference verdicts (the clinicians' majority labels, an even split left out, else
    the reference verifier's on-topic ones) and what they are, for metrics.json."""
    if matched is not None:
        majorities = {k: m for k, m in majority_labels(matched).items() if m is not None}
        source = str(matched.path)
        return label_verdicts(jobs, majorities, source), {"kind": "labels", "label": source}
    label = reference_label(config, {label: m for label, (_, m) in results.items()})
    return on_topic[label], {"kind": "verifier", "label": label}


def on_topic_verdicts(verdicts: Sequence[Verdict], probe: Sequence[Job]) -> list[Verdict]:
    """The verdicts of the comparison's own jobs: the probe's stay out of every agreement,
    pairwise and tail metric."""
    probe_ids = {job.candidate.id for job in probe}
    return [v for v in verdicts if v.candidate_id not in probe_ids]


def probe_metrics(
    jobs: Sequence[Job], probe: Sequence[Job], verdicts: Sequence[Verdict], config: HarnessConfig
) -> dict[str, Any]:
    """A verifier's off-topic preference, from its own rewards of both sets of jobs: under the
    profile's `verify.score`, and under hard and soft scores side by side (`*_hard`,
    `*_soft`; soft is unscored where the verifier gave no P(yes))."""
    row: dict[str, Any] = {}
    for score in ("hard", "soft"):
        scored = config.model_copy(
            update={"verify": config.verify.model_copy(update={"score": score})}
        )
        columns = off_topic_row(
            response_scores(jobs, verdicts, scored), response_scores(probe, verdicts, scored)
        )
        row |= {f"{key}_{score}": value for key, value in columns.items()}
        if score == config.verify.score:
            row |= columns
    return row


def hacking_columns(
    label: str,
    probe_set: ProbeSet,
    verdicts: Sequence[Verdict],
    row: dict[str, Any],
    config: HarnessConfig,
) -> dict[str, Any]:
    """A verifier's probe figures under hard and soft scores (the off-topic probe's from its
    row), and its hackability under the profile's score."""
    figures = verifier_probes(label, probe_set, verdicts, config, off_topic_columns(row))
    chosen = figures[config.verify.score]
    return {
        "hackability": chosen.hackability,
        "hackability_probe": chosen.worst_probe,
        "hackability_tail": chosen.hackability_tail,
        "probes_hard": figures["hard"],
        "probes_soft": figures["soft"],
    }


def _probed(
    pool: Any,
    verifier: RoleConfig,
    probe_set: ProbeSet,
    measured: Sequence[Verdict],
    config: HarnessConfig,
    templates: Path,
    folder: Path,
) -> list[Verdict]:
    """The verifier's probe verdicts: stored ones while their inputs hold, else graded now
    (uncached, the originals' first grading taken from the comparison's own verdicts)."""

    def grade(batch: Sequence[Job]) -> list[Verdict]:
        pool.enter_group([verifier])
        return verify(pool.role("verifier", verifier, cached=False), batch, config.verify,
                      templates)  # fmt: skip

    stamp = probe_fingerprint(probe_set, verifier, config, sorted(templates.glob("*.j2")))
    return probe_verdicts(probe_set, verifier.label, folder, stamp, grade, config.verify.mode,
                          originals=measured)  # fmt: skip


def _measured(
    pool: Any,
    verifier: RoleConfig,
    jobs: Sequence[Job],
    config: HarnessConfig,
    templates: Path,
    folder: Path,
    fingerprint: str,
) -> tuple[list[Verdict], Measurement]:
    verdicts_path = folder / f"{verifier.label}.verdicts.jsonl"
    measure_path = folder / f"{verifier.label}.measure.json"
    if verdicts_path.is_file() and measure_path.is_file():
        stored = Measurement(**json.loads(measure_path.read_text(encoding="utf-8")))
        verdicts = read_records(verdicts_path, Verdict)
        # a run folder from before the probe holds no verdicts of its jobs: measure again
        done = {v.candidate_id for v in verdicts}
        if stored.fingerprint == fingerprint and all(j.candidate.id in done for j in jobs):
            return verdicts, stored
    pool.enter_group([verifier])  # each size has the memory to itself (eval.stop_idle_engines)
    role = pool.role("verifier", verifier, cached=False)
    verdicts, measurement = measure(role, jobs, config, templates, fingerprint)
    write_records(verdicts_path, verdicts)
    write_json(measure_path, asdict(measurement))
    return verdicts, measurement
