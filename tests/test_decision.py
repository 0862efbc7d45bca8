"""Reading each allowed answer's probability at the token that decides it."""

import math

import pytest

from harness.decision import answer_probabilities, value_start
from harness.types import TokenLogprob


def tokens(*triples):
    return tuple(TokenLogprob(token=t, logprob=lp, top=top) for t, lp, top in triples)


def test_renormalised_over_the_allowed_answers_only():
    read = answer_probabilities(
        tokens(('{"verdict":"', -0.1, {}),
               ("2", math.log(0.3), {"2": math.log(0.3), "1": math.log(0.1),
                                     "3": math.log(0.5), "<eos>": math.log(0.1)}),
               ('"}', 0.0, {})),
        "verdict", ("1", "2"),
    )  # fmt: skip
    assert read == {"1": pytest.approx(0.25), "2": pytest.approx(0.75)}


def test_a_token_that_carries_the_quote_and_more():
    # the decision token starts before the value ('"1') or runs past it ('2"}')
    read = answer_probabilities(
        tokens(('{"verdict": ', -0.1, {}),
               ('"1', math.log(0.6), {'"1': math.log(0.6), '"2"}': math.log(0.2),
                                      '"t': math.log(0.2), '"': math.log(0.4)})),
        "verdict", ("1", "2", "tie"),
    )  # fmt: skip
    # '"' alone decides nothing yet: it is left out
    assert read == {"1": pytest.approx(0.6), "2": pytest.approx(0.2), "tie": pytest.approx(0.2)}


def test_the_sampled_token_counts_when_the_top_list_leaves_it_out():
    read = answer_probabilities(
        tokens(('{"verdict": "', 0.0, {}), ("2", math.log(0.2), {"1": math.log(0.6)})),
        "verdict", ("1", "2"),
    )  # fmt: skip
    assert read == {"1": pytest.approx(0.75), "2": pytest.approx(0.25)}


def test_nothing_to_read():
    decided = ('{"verdict": "', 0.0, {})
    assert answer_probabilities((), "verdict", ("1", "2")) is None
    assert answer_probabilities(tokens(('{"other": "', 0.0, {}), ("1", 0.0, {})),
                                "verdict", ("1", "2")) is None  # fmt: skip
    assert answer_probabilities(tokens(decided), "verdict", ("1", "2")) is None  # cut off
    masked = tokens(decided, ("1", -math.inf, {"1": -math.inf, "x": -0.1}))
    assert answer_probabilities(masked, "verdict", ("1", "2")) is None


def test_answers_must_differ_in_their_first_character():
    with pytest.raises(ValueError, match="first character"):
        answer_probabilities((), "answer", ("yes", "yeah"))


def test_value_start_skips_a_key_quoted_inside_a_string():
    text = '{"rationale": "\\"verdict\\": \\"2\\" is wrong", "verdict": "1"}'
    assert text[value_start(text, "verdict")] == "1"
    assert value_start(text, "missing") is None
