"""Benchmark of the verification path, in one run on one engine and one workload.

Measures (1) the engine ceiling: the raw vLLM engine generating the exact token sequences the
harness sent, no harness code in between; (2) verifier layouts on the same (prompt, response,
rubric) set: the paper's (rubric after the response, free-form JSON, regex parsing) and ours
(`all`, `each`, `compact`); (3) the cost of each grammar engine against unconstrained decoding
of the same lengths; (4) criteria per second at growing batch sizes; (5) the share of a LoRA
GRPO step spent in generation, verification and the update. The workload is deterministic:
the profile's prompts, responses drawn from the project's corpus, a 20-criterion rubric per
prompt. The completion cache is bypassed, so every request reaches the engine, and the prefix
cache is emptied before each measurement, so none borrows another's.

Writes `OUT_DIR/bench.json` (engine_ceiling, layouts, grammar, scaling, train_step_split,
machine, goals, workload) and prints the tables. `configs/bench.yaml` is the tiny CPU profile;
on a GPU workstation point it at a profile with a real verifier.

    harness bench -c configs/bench.yaml [--smoke]
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from harness.backends import RunContext
from harness.bench.engine import Engine, Recorder, fastest
from harness.bench.goals import compute_goals
from harness.bench.measure import (
    LAYOUTS,
    measure_ceiling,
    measure_grammar,
    measure_layout,
    measure_layouts,
    measure_scaling,
    measure_train_split,
    measure_transformers,
    token_prompts,
)
from harness.bench.tables import print_bench
from harness.bench.workload import (
    CORPUS,
    CRITERIA,
    FULL,
    OUR_MODES,
    PAPER_LAYOUT,
    PAPER_PAIR,
    RESPONSE_SENTENCES,
    RUBRIC_MODES,
    SMOKE,
    SMOKE_SKIP,
    BenchSize,
    bench_rubric,
    build_jobs,
    paper_request,
    parse_paper_answer,
)
from harness.config import ConfigError, HarnessConfig, RoleConfig
from harness.jsonl import write_atomic
from harness.machine import machine_info

__all__ = [
    "BENCH_KEYS",
    "CORPUS",
    "CRITERIA",
    "FULL",
    "LAYOUTS",
    "OUR_MODES",
    "PAPER_LAYOUT",
    "PAPER_PAIR",
    "RESPONSE_SENTENCES",
    "RUBRIC_MODES",
    "SMOKE",
    "SMOKE_SKIP",
    "BenchSize",
    "Engine",
    "Recorder",
    "bench_rubric",
    "bench_verifier",
    "build_jobs",
    "compute_goals",
    "fastest",
    "machine_info",
    "measure_ceiling",
    "measure_grammar",
    "measure_layout",
    "measure_layouts",
    "measure_scaling",
    "measure_train_split",
    "measure_transformers",
    "paper_request",
    "parse_paper_answer",
    "print_bench",
    "run_bench",
    "token_prompts",
]


# --- the whole run ---


def bench_verifier(config: HarnessConfig) -> RoleConfig:
    """The profile's first verifier, served by the in-process engine (the bench reads the
    engine's own counters, so a server or a remote API cannot be measured)."""
    verifier = config.verifier()
    if verifier.backend not in ("vllm", "vllm-server"):
        raise ConfigError(
            f"harness bench measures a vLLM engine: the first verifier ({verifier.label}) uses "
            f"backend {verifier.backend!r}; use a profile whose verifier is vllm or vllm-server"
        )
    return verifier.model_copy(update={"backend": "vllm"})


def run_bench(
    config: HarnessConfig, out_dir: Path, smoke: bool = False, console: Any = None
) -> dict[str, Any]:
    """Run every measurement, write `out_dir/bench.json` atomically and return its content."""
    from harness.datasets import load_prompts
    from harness.roles import console as default_console

    console = console or default_console
    size = SMOKE if smoke else FULL
    started = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    verifier = bench_verifier(config)
    prompts = load_prompts(config.project_path(config.data.prompts))
    prompts = prompts[: size.num_prompts or config.data.max_prompts]
    jobs = build_jobs(prompts, size.num_responses, size.num_criteria)
    context = RunContext(run_dir=out_dir, offline=config.offline, cache=False)
    logprobs = config.verify.logprobs
    result: dict[str, Any] = {"grammar": {}}
    engine = Engine(verifier, context)
    try:
        console.print("[bold]layouts[/bold] (after a warm-up pass)")
        layouts = measure_layouts(engine, jobs, logprobs, size.repeats)
        console.print("[bold]engine ceiling[/bold]")
        result["engine_ceiling"] = {
            m: measure_ceiling(engine, layouts[m], size.repeats) for m in RUBRIC_MODES
        }
        calls = layouts["all"]["calls"]
        if verifier.grammar in size.grammars:
            console.print(f"[bold]grammar[/bold] {verifier.grammar}")
            result["grammar"][verifier.grammar] = measure_grammar(engine, calls, size.repeats)
        console.print("[bold]scaling[/bold]")
        result["scaling"] = measure_scaling(engine, prompts, size, logprobs)
        console.print("[bold]training step split[/bold]")
        result["train_step_split"] = (
            measure_train_split(config, engine, jobs, out_dir) if size.train else dict(SMOKE_SKIP)
        )
    finally:
        engine.close()
    result["grammar"] |= _other_grammars(verifier, context, calls, size, console)
    result["layouts"] = {
        k: {f: v for f, v in e.items() if f != "calls"} for k, e in layouts.items()
    }
    result["machine"] = machine_info()
    result["workload"] = {
        "prompts": len(prompts),
        "responses": len(jobs),
        "criteria_per_rubric": size.num_criteria,
        "criteria": sum(len(j.rubric.criteria) for j in jobs),
        "model": verifier.model,
        "verifier": verifier.label,
        "engine": verifier.engine,
        "grammar": verifier.grammar,
        "sampling": verifier.sampling.model_dump(mode="json"),
        "default_mode": config.verify.mode,
        "smoke": smoke,
        "repeats": size.repeats,
    }
    result["goals"] = compute_goals(result)
    result["workload"]["seconds"] = round(time.perf_counter() - started, 1)
    ordered = {key: result[key] for key in BENCH_KEYS}
    write_atomic(out_dir / "bench.json", [json.dumps(ordered, indent=2)])
    return ordered


BENCH_KEYS = (
    "engine_ceiling",
    "layouts",
    "grammar",
    "scaling",
    "train_step_split",
    "machine",
    "goals",
    "workload",
)


def _other_grammars(
    verifier: RoleConfig, context: RunContext, calls: list, size: BenchSize, console: Any
) -> dict[str, Any]:
    """Grammar engines other than the profile's, each on an engine of its own started and
    closed one at a time (vLLM chooses the grammar engine per engine), then transformers."""
    entries: dict[str, Any] = {}
    for grammar in ("xgrammar", "guidance", "outlines"):
        if grammar == verifier.grammar:
            continue
        if grammar not in size.grammars:
            entries[grammar] = dict(SMOKE_SKIP)
            continue
        console.print(f"[bold]grammar[/bold] {grammar} (own engine)")
        engine = Engine(verifier.model_copy(update={"grammar": grammar}), context)
        try:
            entries[grammar] = measure_grammar(engine, calls, size.repeats)
        finally:
            engine.close()
    if size.transformers_requests:
        console.print("[bold]grammar[/bold] outlines over transformers")
        step = max(1, len(calls) // size.transformers_requests)  # spread over the prompts
        picked = calls[::step][: size.transformers_requests]
        entries["outlines-transformers"] = measure_transformers(verifier, context, picked)
    else:
        entries["outlines-transformers"] = dict(SMOKE_SKIP)
    return entries
