"""Verifier request layout and the soft P(yes) of `each` mode."""

import math

import pytest

from harness.backends.scripted import ScriptedBackend
from harness.config import VerifyConfig
from harness.prompts import PROMPTS_DIR
from harness.roles import Role
from harness.types import Candidate, Completion, Criterion, Prompt, Rubric, TokenLogprob
from harness.verifier import Job, soft_yes, verify

from .conftest import scripted_role

PROMPT = Prompt(id="p", prompt="How much paracetamol per day?")
RUBRIC = Rubric(
    prompt_id="p",
    criteria=(
        Criterion(id="c1", text="says 4 g", weight=3),
        Criterion(id="c2", text="warns about liver", weight=2),
    ),
)


def tokens(*pairs):
    return tuple(TokenLogprob(token=t, logprob=lp, top=top) for t, lp, top in pairs)


def test_soft_yes_renormalises_over_the_two_answers():
    completion = Completion(
        text='{"answer":"yes"}',
        parsed={"answer": "yes"},
        logprobs=tokens(
            ('{"', -0.1, {'{"': -0.1}),
            ("answer", -0.2, {"answer": -0.2}),
            ('":"', -0.3, {'":"': -0.3}),
            # the grammar mask is not in these numbers: "maybe" and "<eos>" must not count
            ("yes", math.log(0.3), {"yes": math.log(0.3), "no": math.log(0.1),
                                    "maybe": math.log(0.5), "<eos>": math.log(0.1)}),
            ('"}', -0.01, {'"}': -0.01}),
        ),
    )  # fmt: skip
    assert soft_yes(completion) == pytest.approx(0.75)


def test_soft_yes_when_the_answer_token_carries_the_quote():
    completion = Completion(
        text='{"answer": "no"}',
        parsed={"answer": "no"},
        logprobs=tokens(('{"answer": ', -0.1, {}),
                        ('"no', math.log(0.6), {'"no': math.log(0.6), '"y': math.log(0.2)}),
                        ('"}', 0.0, {})),
    )  # fmt: skip
    assert soft_yes(completion) == pytest.approx(0.25)


def test_soft_yes_is_none_without_logprobs_or_answer():
    assert soft_yes(Completion(text='{"answer":"yes"}', parsed={"answer": "yes"})) is None
    assert soft_yes(Completion(text="", error="timeout", finish_reason="error")) is None


def test_all_mode_schema_forces_exactly_the_rubric_ids_and_shares_the_prefix(context):
    backend = ScriptedBackend("verifier", scripted_role(), context,
                              script=lambda r: '{"c1": "yes", "c2": "no"}')  # fmt: skip
    role = Role("verifier", backend.config, backend)
    jobs = [Job(PROMPT, Candidate(id=f"p:m:{k}", prompt_id="p", text=f"answer {k}", model="m"),
                RUBRIC) for k in range(2)]  # fmt: skip
    verdicts = verify(role, jobs, VerifyConfig(mode="all"), PROMPTS_DIR)
    assert [(v.candidate_id, v.criterion_id, v.met) for v in verdicts] == [
        ("p:m:0", "c1", True), ("p:m:0", "c2", False),
        ("p:m:1", "c1", True), ("p:m:1", "c2", False),
    ]  # fmt: skip
    schema = backend.calls[0].json_schema
    assert set(schema["required"]) == {"c1", "c2"} and schema["additionalProperties"] is False
    first, second = (r.messages[-1].content for r in backend.calls)
    shared = first[: first.index("<response>")]
    assert second.startswith(shared) and "warns about liver" in shared


def test_each_mode_puts_the_criterion_last(context):
    backend = ScriptedBackend("verifier", scripted_role(), context,
                              script=lambda r: '{"answer": "yes"}')  # fmt: skip
    role = Role("verifier", backend.config, backend)
    candidate = Candidate(id="p:m:0", prompt_id="p", text="take 4 g", model="m")
    verdicts = verify(role, [Job(PROMPT, candidate, RUBRIC)], VerifyConfig(mode="each", logprobs=5),
                      PROMPTS_DIR)  # fmt: skip
    assert [v.met for v in verdicts] == [True, True]
    first, second = (r.messages[-1].content for r in backend.calls)
    assert first.endswith("says 4 g\n</criterion>") and second.endswith("liver\n</criterion>")
    assert first[: first.index("<criterion>")] == second[: second.index("<criterion>")]
    assert backend.calls[0].sampling.logprobs == 5
