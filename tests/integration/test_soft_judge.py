"""The soft judge on a real in-process vLLM engine (tiny-s): P(A) is read in both orders of
every pair and lies in [0, 1], and the logprobs at the verdict token are the grammar's allowed
answers only (vLLM masks the logits before it computes logprobs)."""

from __future__ import annotations

import math

import pytest

from harness.backends import create_backend
from harness.config import JudgeConfig, RoleConfig
from harness.decision import value_start
from harness.judge import answer_schema, judge_pairs, pair_up, summarise
from harness.prompts import PROMPTS_DIR
from harness.roles import Role
from harness.types import Candidate, ChatMessage, ChatRequest, Prompt, Sampling

pytestmark = pytest.mark.integration
CPU_ENGINE = {"dtype": "float32", "enforce_eager": True, "max_model_len": 2048}
QUESTIONS = ["What is 2 + 2?", "Name the capital of France."]
GOOD = ["2 + 2 is 4.", "Paris is the capital of France."]
POOR = ["It is 5.", "I like turtles."]


def side(name: str, texts: list[str]) -> list[Candidate]:
    return [Candidate(id=f"p{i}:{name}:0", prompt_id=f"p{i}", text=t, model=name)
            for i, t in enumerate(texts)]  # fmt: skip


def test_the_soft_judge_reads_p_a_in_both_orders(tiny_models, context):
    config = RoleConfig(backend="vllm", model="tiny-s", engine=CPU_ENGINE,
                        sampling=Sampling(temperature=0.0, max_tokens=16))  # fmt: skip
    backend = create_backend("judge", config, context)
    settings = JudgeConfig(score="soft", logprobs=5)
    prompts = [Prompt(id=f"p{i}", prompt=q) for i, q in enumerate(QUESTIONS)]
    try:
        role = Role("judge", config, backend)
        judgements = judge_pairs(role, prompts, pair_up(side("a", GOOD), side("b", POOR)),
                                 settings, PROMPTS_DIR)  # fmt: skip
        probe = ChatRequest(messages=(ChatMessage(role="user", content="Answer 1 or 2."),),
                            sampling=Sampling(temperature=0.0, max_tokens=16, logprobs=5),
                            json_schema=answer_schema(settings))  # fmt: skip
        [answer] = backend.generate([probe])
    finally:
        backend.close()
    assert len(judgements) == 2
    for j in judgements:
        assert j.unscored_reasons == ()
        assert 0.0 <= j.first_order_p_a <= 1.0 and 0.0 <= j.second_order_p_a <= 1.0
        assert j.mean_p_a == pytest.approx((j.first_order_p_a + j.second_order_p_a) / 2)
    summary = summarise(judgements, settings)
    assert summary.score == "soft" and summary.n + summary.unscored == 2 and summary.unscored == 0
    assert summary.soft_position_flip_rate is not None and summary.hard.n == 2
    # What the mask does to the numbers read: at the verdict token the engine reports only the
    # answers the grammar allows, and their probabilities already sum to 1.
    assert answer.finish_reason == "stop" and answer.parsed["verdict"] in ("1", "2")
    start, consumed = value_start(answer.text, "verdict"), 0
    decision = next(t for t in answer.logprobs if (consumed := consumed + len(t.token)) > start)
    assert {text.strip('"')[:1] for text in decision.top} <= {"1", "2"}
    assert sum(math.exp(lp) for lp in decision.top.values()) == pytest.approx(1.0, abs=1e-3)
