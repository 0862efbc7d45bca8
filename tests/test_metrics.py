"""Metrics on small hand-built tables: judge aggregation and verifier agreement."""

import json
import math

import numpy as np
import pytest

from harness.metrics import (
    JudgedPair,
    agreement,
    bootstrap_ci,
    fit_length_logistic,
    length_controlled_win_rate,
    off_topic_accuracy,
    pair_outcome,
    pairwise_accuracy,
    percentile,
    position_bias,
    position_flip_rate,
    soft_pair_outcome,
    soft_position_flip_rate,
    spearman,
    summarise_pairs,
    within_prompt_spearman,
)


def judged(first, second, length_a=100, length_b=100, prompt_id="p"):
    return JudgedPair(prompt_id, first, second, length_a, length_b)


# --- judge aggregation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "second", "as_tie", "as_first"),
    [
        ("a", "a", 1.0, 1.0),
        ("b", "b", 0.0, 0.0),
        ("tie", "tie", 0.5, 0.5),
        ("a", "b", 0.5, 1.0),
        ("b", "a", 0.5, 0.0),
        ("a", "tie", 0.5, 1.0),
        ("tie", "b", 0.5, 0.5),
        (None, "b", 0.0, 0.0),
        ("a", None, 1.0, 1.0),
        ("tie", None, 0.5, 0.5),
        (None, None, None, None),
    ],
)
def test_pair_outcome_under_both_disagreement_policies(first, second, as_tie, as_first):
    pair = judged(first, second)
    assert pair_outcome(pair) == as_tie
    assert pair_outcome(pair, disagreement="tie") == as_tie
    assert pair_outcome(pair, disagreement="first") == as_first


def test_pair_outcome_rejects_unknown_verdicts_and_policies():
    with pytest.raises(ValueError, match="verdict"):
        pair_outcome(judged("A", "a"))
    with pytest.raises(ValueError, match="policy"):
        pair_outcome(judged("a", "a"), disagreement="second")


def test_position_flip_rate_counts_only_pairs_scored_in_both_orders():
    pairs = [
        judged("a", "a"),
        judged("a", "b"),  # flip
        judged("b", "b"),
        judged("tie", "a"),  # flip
        judged(None, "a"),  # left out: one order unscored
    ]
    # 2 flips among 4 pairs scored twice.
    assert position_flip_rate(pairs) == 0.5
    assert position_flip_rate([judged(None, "a"), judged("b", None)]) is None
    assert position_flip_rate([]) is None


def test_bootstrap_ci_contains_the_mean_and_matches_the_normal_approximation():
    values = [1.0] * 200 + [0.0] * 200
    low, high = bootstrap_ci(values, num_resamples=4000, seed=1)
    # Mean 0.5; standard error sqrt(0.5 * 0.5 / 400) = 0.025, so about 0.5 ± 1.96 * 0.025.
    assert low < 0.5 < high
    assert low == pytest.approx(0.5 - 0.049, abs=0.006)
    assert high == pytest.approx(0.5 + 0.049, abs=0.006)


def test_bootstrap_ci_shrinks_with_more_data_and_is_reproducible():
    small = [0.0, 1.0] * 10
    large = [0.0, 1.0] * 200
    small_low, small_high = bootstrap_ci(small, seed=3)
    large_low, large_high = bootstrap_ci(large, seed=3)
    assert large_high - large_low < (small_high - small_low) / 2  # width falls like 1/sqrt(n)
    assert bootstrap_ci(small, seed=3) == (small_low, small_high)
    assert bootstrap_ci(small, seed=4) != (small_low, small_high)
    narrow_low, narrow_high = bootstrap_ci(large, seed=3, level=0.5)
    assert large_low < narrow_low < narrow_high < large_high


def test_bootstrap_ci_degenerate_and_empty():
    assert bootstrap_ci([0.5, 0.5, 0.5]) == (0.5, 0.5)
    assert bootstrap_ci([1.0]) == (1.0, 1.0)
    with pytest.raises(ValueError):
        bootstrap_ci([])


def test_length_controlled_win_rate_discounts_a_longer_winner():
    # The longer response always wins; A is longer in 7 of 10 pairs, so the raw win rate is 0.7
    # only because A is usually longer. At equal length the fit should move towards 0.5.
    differences = [100, 200, 150, 300, 50, 120, 80, -100, -200, -60]
    outcomes = [1, 1, 1, 1, 1, 1, 1, 0, 0, 0]
    controlled = length_controlled_win_rate(outcomes, differences)
    assert controlled < 0.7 - 0.05
    assert controlled > 0.5
    # Mirrored: the shorter response always wins, so A (usually longer) wins 3 of 10; at equal
    # length its rate rises, by symmetry to exactly 1 - controlled.
    mirrored = length_controlled_win_rate([1 - o for o in outcomes], differences)
    assert mirrored > 0.3 + 0.05
    assert mirrored == pytest.approx(1 - controlled, abs=1e-6)


def test_length_controlled_win_rate_equals_raw_when_length_is_unrelated():
    # Each length difference appears once as +d and once as -d with the same outcome, so the
    # fitted length weight is 0 and sigmoid(w0) is the raw mean 8/10.
    differences = [100, -100, 200, -200, 50, -50, 100, -100, 200, -200]
    outcomes = [1, 1, 1, 1, 1, 1, 0, 0, 1, 1]
    assert length_controlled_win_rate(outcomes, differences) == pytest.approx(0.8, abs=1e-6)
    # Soft targets (ties as 0.5): mean (1 + 0.5 + 0 + 0.5 + 1 + 1) / 6 = 4 / 6.
    soft = [1, 1, 0.5, 0.5, 0, 0, 0.5, 0.5, 1, 1, 1, 1]
    soft_differences = [30, -30, 10, -10, 70, -70, 20, -20, 40, -40, 90, -90]
    expected = np.mean(soft)
    assert length_controlled_win_rate(soft, soft_differences) == pytest.approx(expected, abs=1e-6)


def test_length_logistic_fit_satisfies_the_penalised_optimality_conditions():
    z = np.array([-1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0])
    targets = np.array([0.0, 1.0, 0.0, 0.5, 1.0, 0.0, 1.0, 1.0])
    w0, w1 = fit_length_logistic(z, targets)
    residuals = 1 / (1 + np.exp(-(w0 + w1 * z))) - targets
    # Gradient of the loss: sum(p - y) = 0 and sum((p - y) * z) + 1e-3 * w1 = 0.
    assert residuals.sum() == pytest.approx(0.0, abs=1e-8)
    assert (residuals * z).sum() + 1e-3 * w1 == pytest.approx(0.0, abs=1e-8)
    assert w1 > 0  # wins sit on the positive side


def test_length_controlled_win_rate_edge_cases():
    assert length_controlled_win_rate([1, 0], [5, -5]) is None
    assert length_controlled_win_rate([1, 0, 1], [5, 5, 5]) == pytest.approx(2 / 3)
    assert length_controlled_win_rate([1, 1, 1], [5, -3, 8]) == 1.0
    with pytest.raises(ValueError):
        length_controlled_win_rate([1, 0, 2], [1, 2, 3])


def test_summarise_pairs_counts_and_rates():
    pairs = [
        judged("a", "a", 120, 100),  # 1
        judged("a", "b", 90, 100),  # 0.5 under "tie", 1 under "first"
        judged("b", "b", 80, 110),  # 0
        judged("a", None, 130, 100),  # 1 (the other order is used)
        judged(None, None, 100, 100),  # unscored
        judged("tie", "tie", 60, 90),  # 0.5
    ]
    summary = summarise_pairs(pairs, num_resamples=500)
    # Outcomes 1, 0.5, 0, 1, 0.5: win rate 3 / 5; flips 1 of the 4 pairs scored twice.
    assert summary["n"] == 5
    assert (summary["wins"], summary["losses"], summary["ties"]) == (2, 1, 2)
    assert summary["unscored"] == 1
    assert summary["win_rate"] == pytest.approx(0.6)
    low, high = summary["ci95"]
    assert low <= 0.6 <= high
    assert summary["position_flip_rate"] == 0.25
    assert summary["length_controlled_win_rate"] == pytest.approx(
        length_controlled_win_rate([1, 0.5, 0, 1, 0.5], [20, -10, -30, 30, -30])
    )
    # Lengths over all six pairs: (120+90+80+130+100+60)/6 and (100+100+110+100+100+90)/6.
    assert summary["mean_length_a"] == pytest.approx(580 / 6)
    assert summary["mean_length_b"] == pytest.approx(600 / 6)
    json.dumps(summary)

    first = summarise_pairs(pairs, disagreement="first", num_resamples=500)
    # Pair 2 becomes a win: outcomes 1, 1, 0, 1, 0.5, win rate 3.5 / 5.
    assert (first["wins"], first["losses"], first["ties"]) == (3, 1, 1)
    assert first["win_rate"] == pytest.approx(0.7)


def softly(first_p_a, second_p_a, first="a", second="a", length_a=100, length_b=100):
    return JudgedPair("p", first, second, length_a, length_b, first_p_a, second_p_a)


@pytest.mark.parametrize(
    ("first_p_a", "second_p_a", "outcome", "flipped"),
    [
        # one pair: its own lean is taken out of both orders, which leaves its mean in each
        (0.8, 0.7, 1.0, False),
        (0.2, 0.4, 0.0, False),
        (0.9, 0.1, 0.5, True),  # a judge that only prefers position 1: a tie, which flips
        (0.3, 0.7 + 1e-12, 0.5, True),  # rounding does not decide it
        (0.8, 0.4, 1.0, False),  # a position bias the mean sees through
        (None, 0.3, 0.0, None),  # one order read: that order's
        (0.6, None, 1.0, None),
        (None, None, None, None),  # unscored, never a loss
    ],
)
def test_soft_pair_outcome_and_flip(first_p_a, second_p_a, outcome, flipped):
    pair = softly(first_p_a, second_p_a)
    assert soft_pair_outcome(pair) == outcome
    expected_rate = None if flipped is None else float(flipped)
    assert soft_position_flip_rate([pair]) == expected_rate


def test_summarise_pairs_soft_keeps_the_hard_counts_beside():
    pairs = [
        softly(0.8, 0.4, "a", "b"),  # hard: a tie (the orders disagree); soft: A
        softly(0.9, 0.1, "a", "b"),  # a tie both ways
        softly(0.3, 0.2, "b", "b"),  # B both ways
        softly(None, None, "a", "a"),  # no P(A): unscored soft, a hard win
    ]
    summary = summarise_pairs(pairs, num_resamples=200, score="soft")
    assert summary["score"] == "soft"
    assert (summary["n"], summary["unscored"]) == (3, 1)
    assert (summary["wins"], summary["ties"], summary["losses"]) == (1, 1, 1)
    assert summary["win_rate"] == pytest.approx(0.5)
    assert summary["position_flip_rate"] == 0.5
    # the lean toward position 1, (0.4 + 0.8 + 0.1) / 2 / 3, out of each order: the first
    # pair says A in both (0.58, 0.62), the third B (0.08, 0.42), the second flips
    assert summary["position_bias"] == pytest.approx(1.3 / 6)
    assert summary["soft_position_flip_rate"] == pytest.approx(1 / 3)
    hard = summary["hard"]
    assert (hard["n"], hard["wins"], hard["ties"], hard["losses"]) == (4, 1, 2, 1)
    assert hard["win_rate"] == pytest.approx(0.5)
    assert "hard" not in summarise_pairs(pairs, num_resamples=200)
    json.dumps(summary)


def test_summarise_pairs_with_nothing_scored():
    summary = summarise_pairs([judged(None, None)])
    assert summary["n"] == 0 and summary["unscored"] == 1
    assert summary["win_rate"] is None and summary["ci95"] is None
    assert summary["length_controlled_win_rate"] is None
    json.dumps(summary)


# --- verifier agreement ------------------------------------------------------------------------


def test_agreement_on_a_two_by_two_table():
    # true yes 5, missed yes 1, false yes 2, true no 2; plus pairs with an unscored side.
    predicted = [True] * 5 + [False] + [True] * 2 + [False] * 2 + [None, True, None]
    reference = [True] * 5 + [True] + [False] * 2 + [False] * 2 + [True, None, None]
    result = agreement(predicted, reference)
    assert result["n"] == 10
    assert result["unscored"] == 1  # only the (None, True) position
    assert result["accuracy"] == pytest.approx(7 / 10)
    # recall on yes 5/6, on no 2/4: balanced (5/6 + 1/2) / 2 = 2/3.
    assert result["balanced_accuracy"] == pytest.approx(2 / 3)
    # predicted yes 7/10, reference yes 6/10: expected 0.7*0.6 + 0.3*0.4 = 0.54;
    # kappa (0.7 - 0.54) / (1 - 0.54) = 8/23.
    assert result["kappa"] == pytest.approx(8 / 23)
    # F1 yes 2*5 / (2*5 + 2 + 1) = 10/13; F1 no 2*2 / (2*2 + 1 + 2) = 4/7.
    assert result["f1_yes"] == pytest.approx(10 / 13)
    assert result["f1_no"] == pytest.approx(4 / 7)
    # macro F1 (10/13 + 4/7) / 2 = (70/91 + 52/91) / 2 = 61/91.
    assert result["macro_f1"] == pytest.approx(61 / 91)


def test_agreement_with_an_absent_reference_class():
    result = agreement([True, True, False], [True, True, True])
    assert result["accuracy"] == pytest.approx(2 / 3)
    assert result["balanced_accuracy"] == pytest.approx(2 / 3)  # recall on yes alone
    # Expected agreement (2/3)*1 + (1/3)*0 = 2/3 equals the observed: kappa 0.
    assert result["kappa"] == pytest.approx(0.0)
    assert result["f1_no"] == 0.0  # "no" predicted once, never right
    assert result["macro_f1"] == pytest.approx(0.4)  # F1 yes 2*2 / (2*2 + 1) = 4/5, F1 no 0

    all_yes = agreement([True, True], [True, True])
    assert all_yes["kappa"] == 1.0
    assert all_yes["balanced_accuracy"] == 1.0
    assert all_yes["f1_yes"] == 1.0
    assert all_yes["f1_no"] is None  # "no" neither predicted nor present
    assert all_yes["macro_f1"] == 1.0  # the absent class is left out of the mean


def test_agreement_with_nothing_scored_on_both_sides():
    result = agreement([None, None, True], [True, False, None])
    assert result == {
        "n": 0,
        "accuracy": None,
        "balanced_accuracy": None,
        "kappa": None,
        "f1_yes": None,
        "f1_no": None,
        "macro_f1": None,
        "unscored": 2,
    }
    with pytest.raises(ValueError):
        agreement([True], [True, False])


def test_spearman_uses_average_ranks_for_ties():
    # Ranks x: 1, 2.5, 2.5, 4; y: 1, 3, 2, 4. Deviations from 2.5: x -1.5, 0, 0, 1.5;
    # y -1.5, 0.5, -0.5, 1.5. r = 4.5 / sqrt(4.5 * 5) = sqrt(0.9). (The no-ties shortcut
    # 1 - 6 * sum(d^2) / (n (n^2 - 1)) would give 0.95.)
    assert spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(math.sqrt(0.9))
    assert spearman([10, 20, 30], [3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2], [1, 2]) is None
    assert spearman([1, 1, 1], [1, 2, 3]) is None
    assert spearman([1, 2, 3], [4, 4, 4]) is None


def test_pairwise_accuracy_tail_differs_from_overall():
    # The verifier orders the low responses right but swaps the top two.
    reference = {"p1": {"c1": 1.0, "c2": 2.0, "c3": 3.0, "c4": 4.0}}
    predicted = {"p1": {"c1": 0.1, "c2": 0.2, "c3": 0.9, "c4": 0.8}}
    # Six pairs, only (c3, c4) wrong: 5/6 overall.
    assert pairwise_accuracy(reference, predicted) == {"n_pairs": 6, "accuracy": 5 / 6}
    # Top max(2, ceil(0.5 * 4)) = 2 candidates: c4, c3, whose one pair is wrong.
    assert pairwise_accuracy(reference, predicted, tail_quantile=0.5) == {
        "n_pairs": 1,
        "accuracy": 0.0,
    }
    # ceil(0.25 * 4) = 1, raised to 2.
    assert pairwise_accuracy(reference, predicted, tail_quantile=0.25)["n_pairs"] == 1
    # ceil(0.75 * 4) = 3: c4, c3, c2, pairs (c2,c3) and (c2,c4) right: 2/3.
    tail = pairwise_accuracy(reference, predicted, tail_quantile=0.75)
    assert tail == {"n_pairs": 3, "accuracy": pytest.approx(2 / 3)}


def test_pairwise_accuracy_counts_predicted_ties_and_unscored_as_wrong():
    reference = {"p2": {"a": 1.0, "b": 2.0, "c": 2.0, "d": 3.0, "e": 0.0}}
    predicted = {"p2": {"a": 0.5, "b": 0.5, "c": None, "d": 0.9}}  # "e" missing
    # Pairs with differing reference (b, c skipped as a reference tie):
    # (a,b) tie wrong, (a,c) None wrong, (a,d) right, (a,e) missing wrong, (b,d) right,
    # (b,e) wrong, (c,d) wrong, (c,e) wrong, (d,e) wrong: 2 of 9.
    assert pairwise_accuracy(reference, predicted) == {
        "n_pairs": 9,
        "accuracy": pytest.approx(2 / 9),
    }
    # A prompt with no prediction at all: every pair is wrong, none is dropped.
    assert pairwise_accuracy({"p": {"x": 1.0, "y": 2.0}}, {}) == {"n_pairs": 1, "accuracy": 0.0}
    assert pairwise_accuracy({"p": {"x": 1.0, "y": 1.0}}, {}) == {"n_pairs": 0, "accuracy": None}


def test_candidates_the_reference_left_unscored_leave_every_ranking_metric():
    # The reference could not score "u": no pair with it counts, in the tail or overall.
    reference = {"p": {"a": 3.0, "u": None, "b": 2.0, "c": 1.0}}
    predicted = {"p": {"a": 0.9, "u": 0.1, "b": 0.5, "c": 0.7}}
    # Top 2 of the 3 scored: (a, b), ordered right. Overall: (a,b) right, (a,c) right, (b,c)
    # wrong. Spearman on a, b, c: ranks (3, 2, 1) against (3, 1, 2).
    assert pairwise_accuracy(reference, predicted, tail_quantile=0.5) == {
        "n_pairs": 1,
        "accuracy": 1.0,
    }
    assert pairwise_accuracy(reference, predicted)["n_pairs"] == 3
    assert within_prompt_spearman(reference, predicted) == pytest.approx(0.5)


def test_pairwise_accuracy_tail_breaks_boundary_ties_by_candidate_id():
    # Top 2 of 4: x, then y over z (same reference score, "y" < "z"). Only (x, y) is used,
    # and the prediction orders it wrong; choosing z instead would score 1.0.
    reference = {"p": {"x": 3.0, "z": 2.0, "y": 2.0, "w": 1.0}}
    predicted = {"p": {"x": 1.0, "y": 2.0, "z": 0.0, "w": 0.0}}
    assert pairwise_accuracy(reference, predicted, tail_quantile=0.5) == {
        "n_pairs": 1,
        "accuracy": 0.0,
    }
    with pytest.raises(ValueError):
        pairwise_accuracy(reference, predicted, tail_quantile=0.0)


def test_pairwise_accuracy_pools_pairs_across_prompts():
    reference = {"p1": {"a": 1.0, "b": 2.0}, "p2": {"a": 1.0, "b": 2.0, "c": 3.0}}
    predicted = {"p1": {"a": 2.0, "b": 1.0}, "p2": {"a": 1.0, "b": 2.0, "c": 3.0}}
    # p1: 0 of 1, p2: 3 of 3 -> 3 / 4 pooled (a mean of per-prompt rates would give 0.5).
    assert pairwise_accuracy(reference, predicted) == {"n_pairs": 4, "accuracy": 0.75}


def test_within_prompt_spearman_averages_over_prompts():
    reference = {
        "p1": {"c1": 1.0, "c2": 2.0, "c3": 3.0, "c4": 4.0},
        "p2": {"a": 1.0, "b": 2.0, "c": 3.0},
        "p3": {"a": 1.0, "b": 2.0, "c": 3.0},
    }
    predicted = {
        "p1": {"c1": 0.1, "c2": 0.2, "c3": 0.9, "c4": 0.8},
        "p2": {"a": None, "b": 0.5, "c": 0.6},  # two scored: skipped
        "p3": {"a": 3.0, "b": 2.0, "c": 1.0},
    }
    # p1 ranks 1,2,4,3: 1 - 6 * 2 / (4 * 15) = 0.8; p3: -1. Mean (0.8 - 1) / 2 = -0.1.
    assert within_prompt_spearman(reference, predicted) == pytest.approx(-0.1)
    assert within_prompt_spearman({"p": {"a": 1.0, "b": 2.0}}, {"p": {"a": 1.0, "b": 2.0}}) is None


@pytest.mark.parametrize(
    ("on_topic", "off_topic", "expected"),
    [
        # every own response above every other prompt's: 1.0
        ({"p": {"a": 1.0, "b": 0.8}}, {"p": {"x": 0.0, "y": 0.5}}, (4, 1.0, 0, 0)),
        # a constant reward ties every pair: chance
        ({"p": {"a": 0.5, "b": 0.5}}, {"p": {"x": 0.5}}, (2, 0.5, 2, 0)),
        # own below: 0.0; one tie of 4 pairs: 0.5 / 4
        ({"p": {"a": 0.0, "b": 0.2}}, {"p": {"x": 0.2, "y": 0.9}}, (4, 0.125, 1, 0)),
        # an unscored side leaves the pair out, counted: a x y is out, b x is out
        ({"p": {"a": None, "b": 1.0}}, {"p": {"x": None, "y": 0.0}}, (1, 1.0, 0, 3)),
        # everything unscored: no accuracy, every pair counted
        ({"p": {"a": None}}, {"p": {"x": None, "y": None}}, (0, None, 0, 2)),
        # pairs stay within a prompt and pool across prompts: p1 1 of 1, p2 0 of 2
        (
            {"p1": {"a": 1.0}, "p2": {"b": 0.0}},
            {"p1": {"x": 0.0}, "p2": {"y": 1.0, "z": 0.5}},
            (3, 1 / 3, 0, 0),
        ),
        # a prompt with no off-topic responses (the probe off, or one prompt): no pairs
        ({"p": {"a": 1.0}}, {}, (0, None, 0, 0)),
        ({}, {}, (0, None, 0, 0)),
    ],
)
def test_off_topic_accuracy(on_topic, off_topic, expected):
    result = off_topic_accuracy(on_topic, off_topic)
    n_pairs, accuracy, ties, unscored = expected
    assert result["n_pairs"] == n_pairs and result["ties"] == ties
    assert result["unscored"] == unscored
    assert result["accuracy"] == (None if accuracy is None else pytest.approx(accuracy))
    json.dumps(result)


def test_percentile_interpolates_linearly():
    # Position q/100 * (n - 1): p50 -> 1.5 -> 2.5; p95 -> 2.85 -> 3 + 0.85 * 1 = 3.85.
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == pytest.approx(2.5)
    assert percentile([4.0, 1.0, 3.0, 2.0], 95) == pytest.approx(3.85)
    assert percentile([7.0], 95) == 7.0
    assert percentile([], 50) is None
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_the_soft_flip_rate_takes_out_the_lean_the_judge_has_on_every_pair():
    # every pair read 0.2 more for whichever response comes first; two prefer A, one B
    pairs = [softly(0.9, 0.5), softly(0.8, 0.4), softly(0.4, 0.0)]
    assert position_bias(pairs) == pytest.approx(0.2)
    assert soft_position_flip_rate(pairs) == 0.0  # raw, each pair's orders disagree
    # a judge with no preference of its own: the same lean, P(A) 0.5 once it is out
    assert soft_position_flip_rate([softly(0.7, 0.3), softly(0.7, 0.3)]) == 1.0


def test_identical_texts_are_ties_and_stay_out_of_the_flip_rates():
    same = JudgedPair("p", "a", "b", 10, 10, 0.62, 0.37, identical=True)
    differing = [softly(0.8, 0.5, "a", "a"), softly(0.7, 0.45, "a", "b")]
    summary = summarise_pairs([same, *differing], num_resamples=200, score="soft")
    assert summary["num_identical"] == 1
    assert (summary["wins"], summary["ties"]) == (2, 1)  # the identical pair: a tie
    assert summary["position_flip_rate"] == 0.5  # over the two pairs that differ
    assert summary["position_bias"] == pytest.approx((0.3 + 0.25) / 4)
    everything_same = summarise_pairs([same], num_resamples=200, score="soft")
    assert everything_same["position_flip_rate"] is None
    assert everything_same["soft_position_flip_rate"] is None
