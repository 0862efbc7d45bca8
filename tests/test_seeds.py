"""Per-request seeds: one random stream per model, conversation, sample and retry, the same
on every run (never Python's per-process string hashing)."""

import os
import subprocess
import sys
from pathlib import Path

import harness
from harness.types import ChatMessage, ChatRequest, Sampling

REQUEST = ChatRequest(
    messages=(ChatMessage(role="user", content="Does the response name a dose?"),),
    sampling=Sampling(temperature=1.0, seed=0),
)
PROJECT_ROOT = str(Path(harness.__file__).resolve().parents[1])  # this checkout's harness
SEED_OF_TINY_S = (
    "from harness.types import ChatMessage, ChatRequest, Sampling; "
    "print(ChatRequest(messages=(ChatMessage(role='user', content='Does the response name a "
    "dose?'),), sampling=Sampling(temperature=1.0, seed=0)).effective_seed('tiny-s'))"
)


def test_two_models_sampling_the_same_request_get_different_seeds():
    assert REQUEST.effective_seed("tiny-s") != REQUEST.effective_seed("tiny-m")
    assert REQUEST.effective_seed("tiny-s") == REQUEST.effective_seed("tiny-s")


def test_the_seed_still_differs_per_sample_and_retry_for_one_model():
    seeds = {
        REQUEST.model_copy(update={"sample_index": i, "attempt": a}).effective_seed("tiny-s")
        for i in range(3)
        for a in range(2)
    }
    assert len(seeds) == 6


def test_one_model_gets_the_same_seed_in_every_process():
    seeds = set()
    for hash_seed in ("1", "2", "random"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": PROJECT_ROOT}
        result = subprocess.run([sys.executable, "-c", SEED_OF_TINY_S], env=env, check=True,
                                capture_output=True, text=True)  # fmt: skip
        seeds.add(int(result.stdout))
    assert seeds == {REQUEST.effective_seed("tiny-s")}
    assert 0 <= REQUEST.effective_seed("tiny-s") < 2**31  # what vLLM and the OpenAI API accept
