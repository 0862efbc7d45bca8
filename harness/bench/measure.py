"""The measurements, each on an `Engine` and the jobs of the workload: verifier layouts, the
raw engine ceiling, grammar cost (vLLM and transformers), scaling by batch size and the
LoRA GRPO step split."""

from __future__ import annotations

import functools
import json
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.backends import RunContext, create_backend
from harness.backends.base import plain_messages
from harness.bench.engine import Engine, fastest
from harness.bench.workload import (
    RUBRIC_MODES,
    BenchSize,
    build_jobs,
    paper_request,
    parse_paper_answer,
)
from harness.config import HarnessConfig, RoleConfig
from harness.prompts import PROMPTS_DIR
from harness.types import ChatRequest, Completion, Prompt
from harness.verifier import Job, verify


def _ids(job: Job) -> list[str]:
    return [c.id for c in job.rubric.criteria]


def _rate(criteria: int, seconds: float) -> float:
    return round(criteria / seconds, 2) if seconds > 0 else 0.0


# --- (2) layouts ---


def measure_layout(engine: Engine, jobs: Sequence[Job], layout: str, logprobs: int) -> dict:
    """One layout over `jobs` through the harness's Role; `calls` are the requests it sent."""
    role, recorder = engine.role()
    with engine.meter() as reading:  # parsing included: it is part of every layout's cost
        if layout == "paper":
            requests = [paper_request(job, engine.config) for job in jobs]
            completions = role.generate(requests, description="verify paper layout")
            met = [
                verdict
                for job, completion in zip(jobs, completions)
                for verdict in parse_paper_answer(completion.text, _ids(job)).values()
            ]
        else:
            met = [v.met for v in verify(role, jobs, layout, PROMPTS_DIR, logprobs)]
    return {
        "criteria_per_s": _rate(len(met), reading["seconds"]),
        "prompt_tokens": role.stats.prompt_tokens,
        "output_tokens": role.stats.completion_tokens,
        "prefix_cache_hit_rate": reading["prefix_cache_hit_rate"],
        "unparseable": sum(v is None for v in met),
        "criteria": len(met),
        "requests": role.stats.requests,
        "seconds": round(reading["seconds"], 3),
        "calls": recorder.calls,
    }


LAYOUTS = {
    "paper": "paper: rubric after the response, free-form JSON, regex parsing",
    "all": "all: rubric before the response (shared prefix), JSON object under a grammar",
    "each": "each: one request per criterion, JSON answer under a grammar",
    "compact": "compact: rubric before the response, one y/n letter per criterion",
}


def measure_layouts(engine: Engine, jobs: Sequence[Job], logprobs: int, repeats: int) -> dict:
    warm = list({job.prompt.id: job for job in jobs}.values())  # one job per prompt
    for layout in LAYOUTS:  # compiles every grammar once; the timings are steady state
        measure_layout(engine, warm, layout, logprobs)
    measured = {}
    for layout, text in LAYOUTS.items():
        run = functools.partial(measure_layout, engine, jobs, layout, logprobs)
        measured[layout] = {"layout": text, **fastest(repeats, run)}
    return measured


# --- (1) engine ceiling ---


def token_prompts(engine: Engine, calls: Sequence[tuple[ChatRequest, Completion]]) -> list:
    """The prompt token ids the harness sent: the tokenizer's chat template over the messages."""
    tokenizer = engine.llm.get_tokenizer()
    return [
        tokenizer.apply_chat_template(
            plain_messages(r), tokenize=True, add_generation_prompt=True, return_dict=False
        )
        for r, _ in calls
    ]


def measure_ceiling(engine: Engine, layout: dict[str, Any], repeats: int) -> dict[str, Any]:
    """The raw engine on the same prompt tokens and output lengths, no grammar, no harness."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    calls = [(r, c) for r, c in layout["calls"] if c.completion_tokens > 0]
    ids = token_prompts(engine, calls)
    prompts = [TokensPrompt(prompt_token_ids=i) for i in ids]
    params = [
        SamplingParams(
            temperature=r.sampling.temperature,
            top_p=r.sampling.top_p,
            seed=r.effective_seed,
            max_tokens=c.completion_tokens,
            min_tokens=c.completion_tokens,
            ignore_eos=True,
        )
        for r, c in calls
    ]

    def run() -> dict[str, Any]:
        with engine.meter() as reading:
            outputs = engine.llm.generate(prompts, params, use_tqdm=False)
        return {
            "seconds": round(reading["seconds"], 3),
            "prefix_cache_hit_rate": reading["prefix_cache_hit_rate"],
            "output_tokens": sum(len(o.outputs[0].token_ids) for o in outputs),
        }

    best = fastest(repeats, run)
    rate = _rate(layout["criteria"], best["seconds"])
    return {
        "criteria_per_s": rate,
        **best,
        "prompt_tokens": sum(len(i) for i in ids),
        "requests": len(calls),
        "prompt_ids_match": sum(len(i) == c.prompt_tokens for i, (_, c) in zip(ids, calls)),
        "harness_criteria_per_s": layout["criteria_per_s"],
        "harness_efficiency": round(layout["criteria_per_s"] / rate, 4) if rate else 0.0,
    }


# --- (3) grammar cost ---


def measure_grammar(
    engine: Engine, calls: Sequence[tuple[ChatRequest, Completion]], repeats: int
) -> dict[str, Any]:
    """The same requests on the raw engine under its grammar, then unconstrained with the
    lengths the grammar produced: the slowdown is the grammar's own cost."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt
    from vllm.sampling_params import StructuredOutputsParams

    requests = [r for r, _ in calls]
    prompts = [TokensPrompt(prompt_token_ids=i) for i in token_prompts(engine, calls)]

    def params(request: ChatRequest, length: int | None) -> Any:
        common = {
            "temperature": request.sampling.temperature,
            "top_p": request.sampling.top_p,
            "seed": request.effective_seed,
        }
        if length is None:
            structured = StructuredOutputsParams(json=request.json_schema)
            return SamplingParams(
                **common, max_tokens=request.sampling.max_tokens, structured_outputs=structured
            )
        return SamplingParams(**common, max_tokens=length, min_tokens=length, ignore_eos=True)

    first = {json.dumps(r.json_schema, sort_keys=True): i for i, r in enumerate(requests)}
    started = time.perf_counter()  # compiles each schema once, as a steady verifier would
    engine.llm.generate(
        [prompts[i] for i in first.values()],
        [params(requests[i], None) for i in first.values()],
        use_tqdm=False,
    )
    warmup_s = time.perf_counter() - started
    constrained: list[float] = []
    unconstrained: list[float] = []
    for _ in range(max(repeats, 1)):
        with engine.meter() as reading:
            outputs = engine.llm.generate(
                prompts, [params(r, None) for r in requests], use_tqdm=False
            )
        constrained.append(reading["seconds"])
        lengths = [max(len(o.outputs[0].token_ids), 1) for o in outputs]
        with engine.meter() as reading:
            engine.llm.generate(
                prompts, [params(r, n) for r, n in zip(requests, lengths)], use_tqdm=False
            )
        unconstrained.append(reading["seconds"])
    constrained_s, unconstrained_s = min(constrained), min(unconstrained)
    valid = sum(_valid_json(o.outputs[0].text, o.outputs[0].finish_reason) for o in outputs)
    return {
        "backend": "vllm",
        "requests": len(requests),
        "constrained_s": round(constrained_s, 3),
        "unconstrained_s": round(unconstrained_s, 3),
        "slowdown": round(constrained_s / unconstrained_s, 4) if unconstrained_s else 0.0,
        "output_tokens": sum(lengths),
        "valid": valid,
        "warmup_s": round(warmup_s, 3),
    }


def _valid_json(text: str, finish_reason: str | None) -> bool:
    try:
        json.loads(text, strict=False)
    except json.JSONDecodeError:
        return False
    return finish_reason == "stop"


def measure_transformers(
    role_config: RoleConfig, context: RunContext, calls: Sequence[tuple[ChatRequest, Completion]]
) -> dict[str, Any]:
    """outlines over transformers (the `transformers` backend), request by request, against
    plain `generate` of the same lengths."""
    import torch

    hf_config = RoleConfig(
        backend="transformers",
        model=role_config.model,
        grammar="outlines",
        sampling=role_config.sampling,
        engine={"dtype": role_config.engine.get("dtype", "auto")},
    )
    requests = [r for r, _ in calls]
    backend = create_backend("verifier", hf_config, context)
    try:
        backend.generate(requests[:1])  # outlines compiles its index on the first call
        started = time.perf_counter()
        completions = backend.generate(requests)
        constrained_s = time.perf_counter() - started
        lengths = [max(c.completion_tokens, 1) for c in completions]
        model, tokenizer = backend.hf_model, backend.tokenizer  # type: ignore[attr-defined]
        unconstrained_s = 0.0
        for request, length in zip(requests, lengths):
            ids = tokenizer.apply_chat_template(
                plain_messages(request),
                add_generation_prompt=True,
                return_tensors="pt",
                return_dict=True,
            )
            torch.manual_seed(request.effective_seed)
            sample = request.sampling.temperature > 0
            started = time.perf_counter()
            with torch.no_grad():
                model.generate(
                    **ids.to(model.device),
                    do_sample=sample,
                    top_k=None,
                    temperature=request.sampling.temperature if sample else None,
                    top_p=request.sampling.top_p if sample else None,
                    min_new_tokens=length,
                    max_new_tokens=length,
                    pad_token_id=tokenizer.pad_token_id,
                )
            unconstrained_s += time.perf_counter() - started
    finally:
        backend.close()
    return {
        "backend": "transformers",
        "requests": len(requests),
        "constrained_s": round(constrained_s, 3),
        "unconstrained_s": round(unconstrained_s, 3),
        "slowdown": round(constrained_s / unconstrained_s, 4) if unconstrained_s else 0.0,
        "output_tokens": sum(lengths),
        "valid": sum(c.parsed is not None for c in completions),
    }


# --- (4) scaling and (5) the training step split ---


def measure_scaling(
    engine: Engine, prompts: Sequence[Prompt], size: BenchSize, logprobs: int
) -> dict[str, list[dict[str, Any]]]:
    scaling: dict[str, list[dict[str, Any]]] = {mode: [] for mode in RUBRIC_MODES}
    for num in size.scaling:
        jobs = build_jobs(prompts, num, size.num_criteria)
        for mode in RUBRIC_MODES:
            entry = measure_layout(engine, jobs, mode, logprobs)
            scaling[mode].append(
                {"responses": num, **{k: v for k, v in entry.items() if k != "calls"}}
            )
    return scaling


def measure_train_split(
    config: HarnessConfig, engine: Engine, jobs: Sequence[Job], out_dir: Path
) -> dict[str, Any]:
    """A few LoRA GRPO steps of the profile's policy, rewarded by this engine, per layout."""
    from harness.datasets import export_rubric_dataset
    from harness.training import train

    if config.roles.policy is None:
        return {"skipped": "the profile has no policy role"}
    prompts = list({job.prompt.id: job.prompt for job in jobs}.values())
    rubric_path = out_dir / "train" / "rubrics.jsonl"
    export_rubric_dataset(rubric_path, prompts, [job.rubric for job in jobs])
    split: dict[str, Any] = {}
    for mode in RUBRIC_MODES:
        run_config = config.model_copy(
            update={
                "runs_dir": str(out_dir / "train"),
                "run_name": mode,
                "cache": False,
                "verify": config.verify.model_copy(update={"mode": mode}),
                "train": config.train.model_copy(
                    update={"rubrics": str(rubric_path), "verifier": None}
                ),
            }
        )
        shutil.rmtree(run_config.run_dir, ignore_errors=True)  # no resume: every step is timed
        result = train(run_config, verifier_role=engine.role()[0])
        split[mode] = {**result.step_split, "steps": result.steps}
    return split
