"""Benchmark of the verification path, in one run on one engine and one workload.

Measures (1) the engine ceiling: the raw vLLM engine generating the exact token sequences the
harness sent, no harness code in between; (2) verifier layouts on the same (prompt, response,
rubric) set: the paper's (rubric after the response, free-form JSON, regex parsing) and ours
(`all`, `each`, `compact`), and how far the verdicts of `compact` and `each` agree with
`all`'s; (3) the cost of each grammar engine against unconstrained decoding of the same
lengths; (4) criteria per second at growing batch sizes; (5) the share of a LoRA GRPO step
spent in generation, verification and the update; from (2) and (5), (6) the verifier
endpoints a trainer of N GPUs needs (`harness.bench.sizing`, printed only). The workload is
deterministic: the profile's prompts, responses drawn from the project's corpus, a
20-criterion rubric per prompt. The completion cache is bypassed, so every request reaches
the engine, and the prefix cache is emptied before each measurement, so none borrows
another's.

Every compared pair is measured side by side in interleaved rounds (`harness.bench.rounds`):
each ratio is computed within its round and quoted as the median of the rounds with its
min-max, so a shared machine's drift moves both sides of a ratio alike.

Writes `OUT_DIR/bench.json` (ratios, engine_ceiling, layouts, agreement, grammar, scaling,
train_step_split, machine, goals, workload) and prints the tables. `configs/bench.yaml`
measures SmolLM2-135M; `--smoke` runs every code path on the tiny model.

    harness bench -c configs/bench.yaml [--smoke]
    python -m harness.bench A/bench.json B/bench.json   # do two runs agree within 10%?
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.backends import RunContext, capabilities_of
from harness.bench.engine import Engine, Recorder
from harness.bench.entries import layout_entry, raw_entry
from harness.bench.goals import RATE_RATIOS, compute_agreement, compute_goals, compute_ratios
from harness.bench.measure import (
    LAYOUTS,
    ROUND_STEPS,
    measure_grammar,
    measure_layout,
    measure_scaling,
    measure_transformers,
    measure_verifier,
    raw_run,
    round_steps,
    token_prompts,
)
from harness.bench.rounds import compare_ratios, per_round, run_rounds, summarize
from harness.bench.tables import print_bench
from harness.bench.train_split import measure_train_split
from harness.bench.workload import (
    CORPUS,
    CRITERIA,
    FULL,
    FULL_GPU,
    OUR_MODES,
    PAPER_LAYOUT,
    PAPER_PAIR,
    RESPONSE_SENTENCES,
    RUBRIC_MODES,
    SMOKE,
    SMOKE_MODEL,
    SMOKE_SKIP,
    SMOKE_TEMPERATURE,
    BenchSize,
    bench_rubric,
    bench_size,
    build_jobs,
    paper_request,
    parse_paper_answer,
    workload_fingerprint,
)
from harness.config import ConfigError, HarnessConfig, RoleConfig
from harness.jsonl import write_json
from harness.machine import machine_info
from harness.types import Prompt
from harness.verifier import Job

__all__ = [
    "BENCH_KEYS",
    "CORPUS",
    "CRITERIA",
    "FULL",
    "FULL_GPU",
    "LAYOUTS",
    "OUR_MODES",
    "PAPER_LAYOUT",
    "PAPER_PAIR",
    "RATE_RATIOS",
    "RESPONSE_SENTENCES",
    "ROUND_STEPS",
    "RUBRIC_MODES",
    "SMOKE",
    "SMOKE_MODEL",
    "SMOKE_SKIP",
    "SMOKE_TEMPERATURE",
    "BenchSize",
    "Engine",
    "Recorder",
    "bench_rubric",
    "bench_size",
    "bench_verifier",
    "build_jobs",
    "ceiling_modes",
    "compare_ratios",
    "compute_agreement",
    "compute_goals",
    "compute_ratios",
    "layout_entry",
    "machine_info",
    "measure_grammar",
    "measure_layout",
    "measure_scaling",
    "measure_train_split",
    "measure_transformers",
    "measure_verifier",
    "paper_request",
    "parse_paper_answer",
    "per_round",
    "print_bench",
    "raw_entry",
    "raw_run",
    "round_steps",
    "run_bench",
    "run_rounds",
    "summarize",
    "token_prompts",
    "workload_fingerprint",
]


# --- the whole run ---


def bench_verifier(config: HarnessConfig, smoke: bool = False) -> RoleConfig:
    """The profile's first verifier, served by the in-process engine (the bench reads the
    engine's own counters, so a server or a remote API cannot be measured). A smoke run
    swaps its model for `SMOKE_MODEL` (tiny, sampled verdicts) and keeps its engine options."""
    verifier = config.verifier()
    if capabilities_of(verifier).engine != "vllm":
        raise ConfigError(
            f"harness bench measures a vLLM engine: the first verifier ({verifier.label}) uses "
            f"backend {verifier.backend!r}; use a profile whose verifier is vllm or vllm-server"
        )
    verifier = verifier.model_copy(update={"backend": "vllm"})
    if smoke:
        sampling = verifier.sampling.model_copy(update={"temperature": SMOKE_TEMPERATURE})
        update = {"name": SMOKE_MODEL, "model": SMOKE_MODEL, "sampling": sampling}
        verifier = verifier.model_copy(update=update)
    return verifier


@dataclass(frozen=True)
class _Bench:
    """One bench run: what it measures, with what, and its clock for the progress lines."""

    config: HarnessConfig
    verifier: RoleConfig
    context: RunContext
    size: BenchSize
    prompts: list[Prompt]
    jobs: list[Job]
    console: Any
    started: float

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def progress(self, label: str) -> Any:
        return lambda number, step: self.console.print(
            f"  [{self.elapsed():4.0f} s] {label} round {number + 1}/{self.size.rounds}: {step}"
        )


def run_bench(
    config: HarnessConfig, out_dir: Path, smoke: bool = False, console: Any = None
) -> dict[str, Any]:
    """Run every measurement, write `out_dir/bench.json` atomically and return its content."""
    from harness.console import console as default_console
    from harness.datasets import load_prompts

    started = time.perf_counter()
    machine = machine_info()
    size = bench_size(smoke, gpu=bool(machine["gpu"]))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    verifier = bench_verifier(config, smoke)
    prompts = load_prompts(config.project_path(config.data.prompts))
    prompts = prompts[: size.num_prompts or config.data.max_prompts]
    jobs = build_jobs(prompts, size.num_responses, size.num_criteria)
    context = RunContext(run_dir=out_dir, offline=config.offline, cache=False)
    console = console or default_console
    bench = _Bench(config, verifier, context, size, prompts, jobs, console, started)
    ceilings = ceiling_modes(config.verify.mode, size)
    readings, result = _on_the_profile_engine(bench, ceilings, out_dir)
    calls = readings["all"][0]["calls"]
    readings[f"grammar:{verifier.grammar}"] = readings.pop("grammar")
    others = _other_grammars(verifier, context, calls, size, console, bench.progress)
    for grammar, entry in others.items():
        if "readings" in entry:
            readings[f"grammar:{grammar}"] = entry.pop("readings")
            readings[f"free:{grammar}"] = entry.pop("free")
    _add_comparisons(result, readings, others, bench)
    result["machine"] = machine
    result["workload"] = _workload(bench, readings, ceilings, smoke)
    result["goals"] = compute_goals(result)
    result["workload"]["seconds"] = round(bench.elapsed(), 1)
    ordered = {key: result[key] for key in BENCH_KEYS}
    write_json(out_dir / "bench.json", ordered)
    return ordered


def _on_the_profile_engine(
    bench: _Bench, ceilings: tuple[str, ...], out_dir: Path
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, Any]]:
    """The measurements on the profile's engine: layouts, engine ceiling and the profile's
    grammar in interleaved rounds (their readings), then scaling and the training step split
    (the start of the result)."""
    config, size, console = bench.config, bench.size, bench.console
    logprobs = config.verify.logprobs
    result: dict[str, Any] = {"grammar": {}}
    engine = Engine(bench.verifier, bench.context)
    try:
        console.print(
            f"[bold]layouts, engine ceiling, {bench.verifier.grammar}[/bold]: up to "
            f"{size.rounds} interleaved rounds [{bench.elapsed():.0f} s]"
        )
        deadline = bench.started + size.rounds_deadline_s if size.rounds_deadline_s else None
        readings = measure_verifier(
            engine,
            bench.jobs,
            logprobs,
            size.rounds,
            bench.progress("verifier"),
            ceilings,
            deadline,
            size.min_rounds,
        )
        console.print(f"[bold]scaling[/bold] [{bench.elapsed():.0f} s]")
        result["scaling"] = measure_scaling(engine, bench.prompts, size, logprobs)
        console.print(f"[bold]training step split[/bold] [{bench.elapsed():.0f} s]")
        result["train_step_split"] = (
            measure_train_split(config, engine, bench.jobs, out_dir)
            if size.train
            else dict(SMOKE_SKIP)
        )
    finally:
        engine.close()
    return readings, result


def _add_comparisons(
    result: dict[str, Any], readings: dict, others: dict[str, Any], bench: _Bench
) -> None:
    """Ratios, layouts, the largest scaling point, engine ceiling, grammar cost and the
    agreement of verdicts, from the readings of every round."""
    jobs = bench.jobs
    result["ratios"] = compute_ratios(readings)
    result["layouts"] = {
        name: {"layout": text, **layout_entry(readings[name])} for name, text in LAYOUTS.items()
    }
    for mode in RUBRIC_MODES:  # the rounds' batch is the largest point
        result["scaling"][mode].append(
            {"responses": len(jobs), "rounds": len(readings[mode]), **_scaling_point(result, mode)}
        )
    result["engine_ceiling"] = {
        mode: {
            **raw_entry(readings[f"ceiling:{mode}"]),
            "harness_criteria_per_s": result["layouts"][mode]["criteria_per_s"],
            "harness_efficiency": result["ratios"][f"efficiency_{mode}"]["median"],
        }
        for mode in RUBRIC_MODES
        if f"ceiling:{mode}" in readings
    }
    for grammar in (bench.verifier.grammar, *others):
        if f"grammar:{grammar}" in readings:
            result["grammar"][grammar] = _grammar_entry(readings, grammar, result["ratios"])
        else:
            result["grammar"][grammar] = others[grammar]
    first_round = {name: readings[name][0]["met"] for name in LAYOUTS}
    criterion_ids = [c.id for job in jobs for c in job.rubric.criteria]
    result["agreement"] = compute_agreement(first_round, criterion_ids)


def _workload(
    bench: _Bench, readings: dict, ceilings: tuple[str, ...], smoke: bool
) -> dict[str, Any]:
    verifier, jobs = bench.verifier, bench.jobs
    return {
        "prompts": len(bench.prompts),
        "responses": len(jobs),
        "criteria_per_rubric": bench.size.num_criteria,
        "criteria": sum(len(j.rubric.criteria) for j in jobs),
        "model": verifier.model,
        "verifier": verifier.label,
        "engine": verifier.engine,
        "grammar": verifier.grammar,
        "sampling": verifier.sampling.model_dump(mode="json"),
        "default_mode": bench.config.verify.mode,
        "smoke": smoke,
        "rounds": len(readings["all"]),
        "planned_rounds": bench.size.rounds,
        "round_order": list(round_steps(ceilings)),
        "fingerprint": workload_fingerprint(jobs),
    }


def ceiling_modes(default_mode: str, size: BenchSize) -> tuple[str, ...]:
    """The modes whose engine ceiling a run measures: `all` (the grammar's cost is read against
    it) and the default mode; every rubric mode where the size asks for all of them."""
    if size.all_ceilings:
        return RUBRIC_MODES
    return tuple(m for m in RUBRIC_MODES if m in ("all", default_mode))


def _scaling_point(result: dict[str, Any], mode: str) -> dict[str, Any]:
    keys = ("criteria_per_s", "seconds", "prompt_tokens", "output_tokens", "criteria")
    return {k: result["layouts"][mode][k] for k in keys}


def _grammar_entry(readings: dict, grammar: str, ratios: dict[str, Any]) -> dict[str, Any]:
    twin = f"free:{grammar}" if f"free:{grammar}" in readings else "ceiling:all"
    constrained, free = raw_entry(readings[f"grammar:{grammar}"]), raw_entry(readings[twin])
    slowdown = ratios[f"{grammar}_slowdown"]
    entry = {
        "backend": "vllm",
        "requests": constrained["requests"],
        "constrained_s": constrained["seconds"],
        "unconstrained_s": free["seconds"],
        "slowdown": slowdown["median"],
        "slowdown_min": slowdown["min"],
        "slowdown_max": slowdown["max"],
        "rounds": slowdown["rounds"],
        "unconstrained": twin,
        "output_tokens": constrained["output_tokens"],
        "valid": constrained["valid"],
    }
    for key in ("lengths_match", "warmup_s"):
        if key in constrained:
            entry[key] = constrained[key]
    return entry


BENCH_KEYS = (
    "ratios",
    "engine_ceiling",
    "layouts",
    "agreement",
    "grammar",
    "scaling",
    "train_step_split",
    "machine",
    "goals",
    "workload",
)


def _other_grammars(
    verifier: RoleConfig,
    context: RunContext,
    calls: list,
    size: BenchSize,
    console: Any,
    progress: Callable[[str], Any],
) -> dict[str, Any]:
    """Grammar engines other than the profile's, each on an engine of its own started and
    closed one at a time (vLLM chooses the grammar engine per engine), in interleaved rounds
    against its unconstrained twin; then outlines over transformers."""
    entries: dict[str, Any] = {}
    for grammar in ("xgrammar", "guidance", "outlines"):
        if grammar == verifier.grammar:
            continue
        if grammar not in size.grammars:
            entries[grammar] = dict(size.skipped)
            continue
        console.print(f"[bold]grammar[/bold] {grammar} (own engine)")
        engine = Engine(verifier.model_copy(update={"grammar": grammar}), context)
        try:
            measured = measure_grammar(engine, calls, size.rounds, progress(grammar))
        finally:
            engine.close()
        entries[grammar] = {
            "readings": measured["constrained"],
            "free": measured["unconstrained"],
        }
    if size.transformers_requests:
        console.print("[bold]grammar[/bold] outlines over transformers")
        step = max(1, len(calls) // size.transformers_requests)  # spread over the prompts
        picked = calls[::step][: size.transformers_requests]
        entries["outlines-transformers"] = measure_transformers(verifier, context, picked)
    else:
        entries["outlines-transformers"] = dict(size.skipped)
    return entries
