"""The measurements, each on an `Engine` and the jobs of the workload: verifier layouts, the
raw engine ceiling, grammar cost (vLLM and transformers), scaling by batch size and the
LoRA GRPO step split."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import Any

from harness.backends import Backend, RunContext, create_backend
from harness.backends.base import plain_messages
from harness.bench.engine import Engine
from harness.bench.entries import rate
from harness.bench.rounds import run_rounds
from harness.bench.workload import (
    RUBRIC_MODES,
    BenchSize,
    build_jobs,
    paper_request,
    parse_paper_answer,
)
from harness.config import RoleConfig, VerifyConfig
from harness.prompts import PROMPTS_DIR
from harness.types import ChatRequest, Completion, Prompt
from harness.verifier import Job, verify


def _ids(job: Job) -> list[str]:
    return [c.id for c in job.rubric.criteria]


# --- (1) and (2): layouts, engine ceiling and the profile's grammar, in interleaved rounds ---


def measure_layout(
    engine: Engine,
    jobs: Sequence[Job],
    layout: str,
    logprobs: int,
    role_config: RoleConfig | None = None,
) -> dict:
    """One layout over `jobs` through the harness's Role. `calls` are the requests it sent and
    `met` its verdicts, job by job and criterion by criterion (both left out of bench.json)."""
    role_config = role_config or engine.config
    role, recorder = engine.role(role_config)
    with engine.meter() as reading:  # parsing included: it is part of every layout's cost
        if layout == "paper":
            requests = [paper_request(job, role_config) for job in jobs]
            completions = role.generate(requests, description="verify paper layout")
            met = [
                None if answer is None else answer == "yes"
                for job, completion in zip(jobs, completions)
                for answer in parse_paper_answer(completion.text, _ids(job)).values()
            ]
        else:
            settings = VerifyConfig(mode=layout, logprobs=logprobs)
            found = {
                (v.candidate_id, v.criterion_id): v.met
                for v in verify(role, jobs, settings, PROMPTS_DIR)
            }
            met = [found.get((job.candidate.id, cid)) for job in jobs for cid in _ids(job)]
    return {
        "seconds": round(reading["seconds"], 3),
        "criteria": len(met),
        "criteria_per_s": rate(len(met), reading["seconds"]),
        "prompt_tokens": role.stats.prompt_tokens,
        "output_tokens": role.stats.completion_tokens,
        "prefix_cache_hit_rate": reading["prefix_cache_hit_rate"],
        "other_cpu_share": reading["other_cpu_share"],
        "unparseable": sum(v is None for v in met),
        "requests": role.stats.requests,
        "calls": recorder.calls,
        "met": met,
    }


HIDDEN = ("calls", "met")  # what a reading keeps for the bench, never written to bench.json
LAYOUTS = {
    "paper": "paper: rubric after the response, free-form JSON, regex parsing",
    "all": "all: rubric before the response (shared prefix), JSON object under a grammar",
    "each": "each: one request per criterion, JSON answer under a grammar",
    "compact": "compact: rubric before the response, one y/n letter per criterion",
}
WARM_UP_TOKENS = 8
# The order of a round (reversed every other round). The pairs the goals compare sit side by
# side: compact | ceiling, paper | all, all | ceiling, ceiling | grammar.
ROUND_STEPS = ("each", "compact", "ceiling:compact", "paper", "all", "ceiling:all", "grammar")


def round_steps(ceilings: Sequence[str]) -> tuple[str, ...]:
    """`ROUND_STEPS` with the engine ceilings of the modes in `ceilings` only (`all`'s is
    always measured: the grammar's cost is read against it)."""
    wanted = {"all", *ceilings}
    return tuple(
        s for s in ROUND_STEPS if not s.startswith("ceiling:") or s.split(":")[1] in wanted
    )


def token_prompts(engine: Engine, calls: Sequence[tuple[ChatRequest, Completion]]) -> list:
    """The prompt token ids the harness sent: the tokenizer's chat template over the messages."""
    tokenizer = engine.llm.get_tokenizer()
    return [
        tokenizer.apply_chat_template(
            plain_messages(r), tokenize=True, add_generation_prompt=True, return_dict=False
        )
        for r, _ in calls
    ]


def _common(request: ChatRequest, model: str) -> dict[str, Any]:
    return {
        "temperature": request.sampling.temperature,
        "top_p": request.sampling.top_p,
        "seed": request.effective_seed(model),
    }


def raw_run(
    engine: Engine,
    calls: Sequence[tuple[ChatRequest, Completion]],
    lengths: Sequence[int] | None,
    prompts: list | None = None,
) -> dict[str, Any]:
    """The raw engine on the harness's prompt tokens, no harness code: with `lengths`, exactly
    that many output tokens each and no grammar (the ceiling, or a grammar's unconstrained
    twin); without, each request's own grammar and max_tokens (the grammar's cost)."""
    from vllm.inputs import TokensPrompt

    ids = prompts if prompts is not None else token_prompts(engine, calls)
    params = _raw_params(calls, lengths, engine.config.model)
    with engine.meter() as reading:
        outputs = engine.llm.generate(
            [TokensPrompt(prompt_token_ids=i) for i in ids], params, use_tqdm=False
        )
    return {
        "seconds": round(reading["seconds"], 3),
        "prefix_cache_hit_rate": reading["prefix_cache_hit_rate"],
        "other_cpu_share": reading["other_cpu_share"],
        "output_tokens": sum(len(o.outputs[0].token_ids) for o in outputs),
        "requests": len(ids),
        "prompt_tokens": sum(len(i) for i in ids),
        "lengths": [len(o.outputs[0].token_ids) for o in outputs],
        "valid": sum(_valid_json(o.outputs[0].text, o.outputs[0].finish_reason) for o in outputs),
    }


def _raw_params(
    calls: Sequence[tuple[ChatRequest, Completion]], lengths: Sequence[int] | None, model: str
) -> list:
    """vLLM sampling parameters of each call: its own grammar and max_tokens, or (with
    `lengths`) exactly that many output tokens and no grammar."""
    from vllm import SamplingParams
    from vllm.sampling_params import StructuredOutputsParams

    if lengths is None:
        return [
            SamplingParams(
                **_common(r, model),
                max_tokens=r.sampling.max_tokens,
                structured_outputs=StructuredOutputsParams(json=r.json_schema),
            )
            for r, _ in calls
        ]
    return [
        SamplingParams(**_common(r, model), max_tokens=n, min_tokens=n, ignore_eos=True)
        for (r, _), n in zip(calls, lengths)
    ]


def _answered(calls: Sequence[tuple[ChatRequest, Completion]]) -> list:
    return [(r, c) for r, c in calls if c.completion_tokens > 0]


def measure_verifier(
    engine: Engine,
    jobs: Sequence[Job],
    logprobs: int,
    rounds: int,
    progress: Callable[[int, str], None] | None = None,
    ceilings: Sequence[str] = RUBRIC_MODES,
    deadline: float | None = None,
    min_rounds: int | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Every layout, the engine ceiling of `all` and of the modes in `ceilings` and the
    profile's grammar on the raw engine, once per round in `round_steps` order (reversed every
    other round; `run_rounds` for the deadline), after a short warm-up (one job, a few output
    tokens, no retries) that loads every code path and initialises the grammar engine: the
    rounds time steady state."""
    _warm_up(engine, jobs, logprobs)
    verifier_steps = _VerifierSteps(engine, jobs, logprobs)
    steps = {name: verifier_steps.step(name) for name in round_steps(ceilings)}
    return run_rounds(steps, rounds, progress, deadline, min_rounds)


def _warm_up(engine: Engine, jobs: Sequence[Job], logprobs: int) -> None:
    sampling = engine.config.sampling.model_copy(update={"max_tokens": WARM_UP_TOKENS})
    warm_config = engine.config.model_copy(update={"sampling": sampling, "max_attempts": 1})
    for layout in LAYOUTS:
        warm = measure_layout(engine, jobs[:1], layout, logprobs, warm_config)
        if layout == "all":
            raw_run(engine, _answered(warm["calls"]), None)
            raw_run(engine, _answered(warm["calls"]), [1] * len(_answered(warm["calls"])))


class _VerifierSteps:
    """The steps of a verifier round. A raw step replays, token for token, the requests a
    layout sent in round one."""

    def __init__(self, engine: Engine, jobs: Sequence[Job], logprobs: int) -> None:
        self.engine, self.jobs, self.logprobs = engine, jobs, logprobs
        self.first: dict[str, dict[str, Any]] = {}  # round one's layouts
        self.prompts: dict[str, list] = {}  # their prompt token ids

    def step(self, name: str) -> Callable[[], dict[str, Any]]:
        if name == "grammar":
            return lambda: self.raw("all", grammar=True)
        if name.startswith("ceiling:"):
            return lambda: self.raw(name.removeprefix("ceiling:"), grammar=False)
        return lambda: self.layout(name)

    def layout(self, layout: str) -> dict[str, Any]:
        reading = measure_layout(self.engine, self.jobs, layout, self.logprobs)
        self.first.setdefault(layout, reading)
        return reading

    def raw(self, layout: str, grammar: bool) -> dict[str, Any]:
        first = self.first[layout]
        calls = _answered(first["calls"])
        if layout not in self.prompts:
            self.prompts[layout] = token_prompts(self.engine, calls)
        prompts = self.prompts[layout]
        lengths = None if grammar else [c.completion_tokens for _, c in calls]
        reading = raw_run(self.engine, calls, lengths, prompts)
        reading["criteria"] = first["criteria"]
        reading["prompt_ids_match"] = sum(
            len(i) == c.prompt_tokens for i, (_, c) in zip(prompts, calls)
        )
        if grammar:
            reading["lengths_match"] = reading["lengths"] == lengths_of(first)
        return reading


def lengths_of(layout_reading: dict[str, Any]) -> list[int]:
    return [c.completion_tokens for _, c in _answered(layout_reading["calls"])]


# --- (3) grammar engines other than the profile's: each against its unconstrained twin ---


def measure_grammar(
    engine: Engine,
    calls: Sequence[tuple[ChatRequest, Completion]],
    rounds: int,
    progress: Callable[[int, str], None] | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """The `all` requests on the raw engine under its grammar, then unconstrained with the
    lengths the grammar produced (its first round's), interleaved over `rounds` after a
    warm-up that compiles each schema once, as a steady verifier would."""
    calls = _answered(calls)
    prompts = token_prompts(engine, calls)
    seen = {json.dumps(r.json_schema, sort_keys=True): i for i, (r, _) in enumerate(calls)}
    started = time.perf_counter()
    raw_run(engine, [calls[i] for i in seen.values()], None, [prompts[i] for i in seen.values()])
    warmup_s = round(time.perf_counter() - started, 3)
    lengths: list[int] = []

    def constrained() -> dict[str, Any]:
        reading = raw_run(engine, calls, None, prompts)
        lengths[:] = lengths or [max(n, 1) for n in reading["lengths"]]
        return {**reading, "warmup_s": warmup_s}

    def unconstrained() -> dict[str, Any]:
        return raw_run(engine, calls, lengths, prompts)

    steps = {"constrained": constrained, "unconstrained": unconstrained}
    return run_rounds(steps, rounds, progress)


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

    requests = [r for r, _ in calls]
    backend = create_backend("verifier", _transformers_twin(role_config), context)
    try:
        completions, constrained_s = _timed_after_first(backend, requests)
        lengths = [max(c.completion_tokens, 1) for c in completions]
        model, tokenizer = backend.engine_handle()
        unconstrained_s = 0.0
        for request, length in zip(requests, lengths):
            ids = tokenizer.apply_chat_template(
                plain_messages(request),
                add_generation_prompt=True,
                return_tensors="pt",
                return_dict=True,
            )
            torch.manual_seed(request.effective_seed(backend.config.model))
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
    return _transformers_entry(completions, lengths, constrained_s, unconstrained_s)


def _transformers_twin(role_config: RoleConfig) -> RoleConfig:
    """The verifier's model on the `transformers` backend, outlines as its grammar engine."""
    return RoleConfig(
        backend="transformers",
        model=role_config.model,
        grammar="outlines",
        sampling=role_config.sampling,
        engine={"dtype": role_config.engine.get("dtype", "auto")},
    )


def _timed_after_first(
    backend: Backend, requests: Sequence[ChatRequest]
) -> tuple[list[Completion], float]:
    """The completions of `requests` and their seconds, timed after a first request (outlines
    compiles its index on the first call)."""
    backend.generate(requests[:1])
    started = time.perf_counter()
    completions = backend.generate(requests)
    return completions, time.perf_counter() - started


def _transformers_entry(
    completions: Sequence[Completion],
    lengths: Sequence[int],
    constrained_s: float,
    unconstrained_s: float,
) -> dict[str, Any]:
    return {
        "backend": "transformers",
        "requests": len(completions),
        "constrained_s": round(constrained_s, 3),
        "unconstrained_s": round(unconstrained_s, 3),
        "slowdown": round(constrained_s / unconstrained_s, 4) if unconstrained_s else 0.0,
        "output_tokens": sum(lengths),
        "valid": sum(c.parsed is not None for c in completions),
    }


# --- (4) scaling ---


def measure_scaling(
    engine: Engine, prompts: Sequence[Prompt], size: BenchSize, logprobs: int
) -> dict[str, list[dict[str, Any]]]:
    scaling: dict[str, list[dict[str, Any]]] = {mode: [] for mode in RUBRIC_MODES}
    for num in size.scaling:
        jobs = build_jobs(prompts, num, size.num_criteria)
        for mode in RUBRIC_MODES:
            entry = measure_layout(engine, jobs, mode, logprobs)
            scaling[mode].append(
                {"responses": num, **{k: v for k, v in entry.items() if k not in HIDDEN}}
            )
    return scaling
