"""The benchmark's workload: how much a run measures (`SMOKE`, `FULL`), the deterministic
(prompt, response, rubric) jobs built from the project's corpus, and the paper's verifier
layout with its regex parsing."""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from harness.config import RoleConfig
from harness.project import PROJECT_ROOT
from harness.types import (
    Candidate,
    ChatMessage,
    ChatRequest,
    Criterion,
    Prompt,
    Rubric,
)
from harness.verifier import Job

OUR_MODES = ("all", "each", "compact")
RUBRIC_MODES = ("all", "compact")  # one request per response: the ones with a ceiling
SMOKE_SKIP = {"skipped": "smoke run"}
CORPUS = PROJECT_ROOT / "models" / "tiny" / "corpus.txt"
RESPONSE_SENTENCES = 8
# `--smoke` checks the code paths on the project's tiny model whatever the profile's verifier;
# a random model at temperature 0 answers alike for every response, so its verdicts are
# sampled (seeded per request) to keep the work real.
SMOKE_MODEL = "tiny-s"
SMOKE_TEMPERATURE = 1.0


@dataclass(frozen=True)
class BenchSize:
    """How much of each measurement a run does."""

    num_prompts: int | None  # None: every prompt of the profile
    num_responses: int  # spread over the prompts, the same set for every layout
    num_criteria: int
    scaling: tuple[int, ...]
    grammars: tuple[str, ...]  # grammar engines measured besides the profile's
    transformers_requests: int  # 0: skipped
    train: bool
    rounds: int  # interleaved rounds; every ratio is the median of its per-round values
    skipped: tuple[tuple[str, str], ...]  # what bench.json says of a measurement left out
    all_ceilings: bool = True  # False: the ceilings of `all` and the default mode only
    min_rounds: int | None = None  # with a deadline: rounds run whatever the time
    rounds_deadline_s: float | None = None  # no round after the first min_rounds ends later


BUDGET_SKIP = (("skipped", "left out of the CPU bench (time); measured on a GPU"),)
# `make bench` on a CPU: a few GRPO-like groups (3 prompts x 2 responses) in 4 rounds of about
# 3 minutes with SmolLM2-135M on 2 cores (an even count: each order of a pair runs as often),
# 3 when the machine is slow enough that a 4th would end after 820 s (13.7 minutes into the
# run); scaling and the training step split take about a minute more.
FULL = BenchSize(
    num_prompts=3,
    num_responses=6,
    num_criteria=20,
    scaling=(1,),
    grammars=(),
    transformers_requests=0,
    train=True,
    rounds=4,
    skipped=BUDGET_SKIP,
    all_ceilings=False,
    min_rounds=3,
    rounds_deadline_s=820.0,
)
# The same command where vLLM sees a GPU: the paper-sized workload and every grammar engine.
FULL_GPU = BenchSize(
    num_prompts=None,
    num_responses=96,
    num_criteria=20,
    scaling=(16, 256, 1024),
    grammars=("xgrammar", "guidance", "outlines"),
    transformers_requests=12,
    train=True,
    rounds=6,
    skipped=BUDGET_SKIP,
)
SMOKE = BenchSize(
    num_prompts=4,
    num_responses=8,
    num_criteria=20,
    scaling=(4,),
    grammars=(),
    transformers_requests=0,
    train=False,
    rounds=2,
    skipped=tuple(SMOKE_SKIP.items()),
)


def bench_size(smoke: bool, gpu: bool) -> BenchSize:
    """How much a run measures: the smoke workload, else the GPU's or the CPU's full one."""
    return SMOKE if smoke else FULL_GPU if gpu else FULL


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


def workload_fingerprint(jobs: Sequence[Job]) -> str:
    """A short hash of every prompt, response and rubric: two runs measured the same workload
    exactly when their fingerprints match (the prompts file may change between runs)."""
    content = [
        [job.prompt.id, job.prompt.render(), job.candidate.text]
        + [[c.id, c.text, c.weight] for c in job.rubric.criteria]
        for job in jobs
    ]
    return hashlib.sha256(json.dumps(content).encode()).hexdigest()[:12]


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
