"""Verifier request layout and the soft P(yes) read from logprobs in every mode."""

import math

import pytest

from harness.backends.scripted import ScriptedBackend
from harness.config import VerifyConfig
from harness.prompts import PROMPTS_DIR
from harness.roles import Role
from harness.types import Candidate, Completion, Criterion, Prompt, Rubric, TokenLogprob, Verdict
from harness.verifier import (
    Job,
    UnscoredShareError,
    check_unscored,
    soft_all,
    soft_compact,
    soft_yes,
    verify,
)

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
            # answers the grammar does not allow ("maybe", "<eos>") must not count
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


def test_all_mode_reads_p_yes_at_each_criterions_value():
    completion = Completion(
        text='{"c1":"yes","c2":"no"}',
        parsed={"c1": "yes", "c2": "no"},
        logprobs=tokens(
            ('{"', -0.1, {}), ("c", -0.1, {}), ("1", -0.1, {}), ('":"', -0.1, {}),
            ("yes", math.log(0.6), {"yes": math.log(0.6), "no": math.log(0.2)}),
            ('","', -0.1, {}), ("c", -0.1, {}), ("2", -0.1, {}),
            # the value's quote and first letter in one token, "y" alternatives summed
            ('":"n', math.log(0.5), {'":"n': math.log(0.5), '":"y': math.log(0.25),
                                     '":"ye': math.log(0.25)}),
            ("o", -0.1, {}), ('"}', -0.1, {}),
        ),
    )  # fmt: skip
    assert soft_all(completion, ["c1", "c2"]) == pytest.approx({"c1": 0.75, "c2": 0.5})


def test_all_mode_p_yes_counts_the_chosen_token_an_api_left_out_of_its_top_list():
    completion = Completion(
        text='{"c1":"no"}',
        parsed={"c1": "no"},
        logprobs=tokens(('{"c1":"', -0.1, {}), ("no", math.log(0.3), {"yes": math.log(0.6)}),
                        ('"}', -0.1, {})),
    )  # fmt: skip
    assert soft_all(completion, ["c1"]) == pytest.approx({"c1": 2 / 3})


def test_compact_mode_reads_each_letter_even_inside_a_longer_token():
    completion = Completion(
        text='"yny"',
        parsed="yny",
        logprobs=tokens(
            ('"', -0.1, {}),
            # "yn" holds two letters: the first is read from the alternatives' first letter,
            # the second from their second (a marginal over the top alternatives)
            ("yn", math.log(0.5), {"yn": math.log(0.5), "yy": math.log(0.3), "n": math.log(0.2)}),
            ("y", math.log(0.9), {"y": math.log(0.9), "n": math.log(0.1)}),
            ('"', -0.1, {}),
        ),
    )  # fmt: skip
    soft = soft_compact(completion, ["c1", "c2", "c3"])
    assert soft == pytest.approx({"c1": 0.8 / 1.0, "c2": 0.3 / 0.8, "c3": 0.9})


def test_p_yes_is_none_where_neither_answer_is_among_the_alternatives():
    completion = Completion(
        text='{"c1":"yes"}',
        parsed={"c1": "yes"},
        logprobs=tokens(('{"c1":"', -0.1, {}), ("yes", float("-inf"), {"maybe": -0.1}),
                        ('"}', -0.1, {})),
    )  # fmt: skip
    assert soft_all(completion, ["c1"]) == {"c1": None}


@pytest.mark.parametrize("mode", ["all", "compact", "each"])
def test_every_mode_asks_for_logprobs_and_keeps_hard_and_soft_side_by_side(context, mode):
    answers = {"all": '{"c1":"yes","c2":"no"}', "compact": '"yn"', "each": '{"answer":"yes"}'}
    backend = ScriptedBackend("verifier", scripted_role(), context,
                              script=lambda r: answers[mode])  # fmt: skip
    role = Role("verifier", backend.config, backend)
    candidate = Candidate(id="p:m:0", prompt_id="p", text="take 4 g", model="m")
    verdicts = verify(role, [Job(PROMPT, candidate, RUBRIC)], VerifyConfig(mode=mode), PROMPTS_DIR)
    assert {r.sampling.logprobs for r in backend.calls} == {5}
    assert all(v.met is not None for v in verdicts)
    # the scripted backend gives no logprobs: P(yes) is missing, never made up from the verdict
    assert [v.p_yes for v in verdicts] == [None, None]


def test_soft_scoring_stops_a_stage_whose_verifier_gives_no_p_yes():
    verdicts = [Verdict(prompt_id="p", candidate_id="a", rubric_version=0, criterion_id=f"c{i}",
                        met=True, p_yes=None, verifier="v") for i in range(4)]  # fmt: skip
    check_unscored(verdicts, VerifyConfig(score="hard"), "verify")  # hard verdicts suffice
    with pytest.raises(UnscoredShareError, match="no P\\(yes\\): no logprobs"):
        check_unscored(verdicts, VerifyConfig(score="soft"), "verify")
