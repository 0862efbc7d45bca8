"""Metrics for comparisons: pure functions over verdicts and scores, no model code.

Three families:
- Judge aggregation. A pairwise judge sees each pair twice, once with A first and once with B
  first; `pair_outcome` merges the two verdicts, `summarise_pairs` turns a list of judged pairs
  into a win rate with a bootstrap interval, the position-flip rate and a length-controlled win
  rate (the win rate a logistic fit predicts when both responses have the same length, the idea
  of AlpacaEval's length-controlled win rate). A soft judge (`soft_pair_outcome`) instead
  averages P(A better) over the two orders and takes its side of 0.5.
- Verifier agreement. Per-criterion yes/no verdicts against a reference verifier (`agreement`),
  and per-response scores against reference scores (`pairwise_accuracy`,
  `within_prompt_spearman`). As in Table 2 of Chasing the Tail, a predicted tie or an unscored
  response counts as wrong; `tail_quantile` restricts the pairs to the top responses, where
  rubric rewards are least reliable.
- Off-topic preference (`off_topic_accuracy`): how often a verifier's reward prefers a
  prompt's own responses to responses written for other prompts; ties count half, so 0.5 is
  chance. It needs no reference at all.

An unscored value is `None`: it is counted, never read as a loss or a "no". Every summary is
JSON-serialisable (Python floats, ints, lists and None). Exercised by
`pytest tests/test_metrics.py -q`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations, product
from typing import Any, Literal

import numpy as np

# which side a pairwise judge preferred, or a tie (not a verifier's yes/no `types.Verdict`)
Preference = Literal["a", "b", "tie"]
DisagreementPolicy = Literal["tie", "first"]
JudgeScore = Literal["hard", "soft"]

PREFERENCE_OUTCOMES: dict[str, float] = {"a": 1.0, "b": 0.0, "tie": 0.5}
LENGTH_PENALTY = 1e-3
NEWTON_MAX_ITERATIONS = 100
NEWTON_TOLERANCE = 1e-10
SOFT_TIE_TOLERANCE = 1e-9  # a soft P(A) this close to 0.5 is a tie


# --- judge aggregation -------------------------------------------------------------------------


@dataclass(frozen=True)
class JudgedPair:
    """Both judge verdicts on one pair, already mapped back to the original labels A and B."""

    prompt_id: str
    first_order: Preference | None  # A shown first
    second_order: Preference | None  # B shown first
    length_a: int
    length_b: int
    first_p_a: float | None = None  # P(A better) read in the A-first order (soft judge)
    second_p_a: float | None = None  # and in the B-first order
    identical: bool = False  # A and B are the same text: a tie, whatever the judge says


def preference_outcome(preference: str) -> float:
    """A's score: 1.0 when A wins, 0.0 when B wins, 0.5 for a tie."""
    if preference not in PREFERENCE_OUTCOMES:
        raise ValueError(f"unknown judge verdict {preference!r}; expected one of 'a', 'b', 'tie'")
    return PREFERENCE_OUTCOMES[preference]


def pair_outcome(pair: JudgedPair, disagreement: DisagreementPolicy = "tie") -> float | None:
    """A's score on the pair from both orders; None when neither order was scored.

    When the two orders disagree the judge has shown a position bias, so by default the pair is
    a tie; `disagreement="first"` keeps the verdict from the A-first order instead.
    """
    if disagreement not in ("tie", "first"):
        raise ValueError(f"unknown disagreement policy {disagreement!r}; use 'tie' or 'first'")
    first, second = pair.first_order, pair.second_order
    for preference in (first, second):
        if preference is not None:
            preference_outcome(preference)  # rejects an unknown one even when it is not used
    if first is None and second is None:
        return None
    if first is None or second is None:
        return preference_outcome(first if first is not None else second)
    if first == second:
        return preference_outcome(first)
    return 0.5 if disagreement == "tie" else preference_outcome(first)


def position_flip_rate(pairs: Sequence[JudgedPair]) -> float | None:
    """Share of pairs, among those scored in both orders, whose verdict changed with the order."""
    both_scored = [p for p in pairs if p.first_order is not None and p.second_order is not None]
    if not both_scored:
        return None
    num_flipped = sum(p.first_order != p.second_order for p in both_scored)
    return num_flipped / len(both_scored)


def mean_p_a(pair: JudgedPair) -> float | None:
    """The pair's P(A better): the mean over the orders in which it was read (the one order
    when only one was, as `pair_outcome` uses the one scored verdict); None when neither was."""
    read = [p for p in (pair.first_p_a, pair.second_p_a) if p is not None]
    return sum(read) / len(read) if read else None


def _side_of_half(p: float) -> float:
    # A judge that only prefers a position gives P(A) = p and 1 - p in the two orders: their
    # mean is 0.5 up to rounding, and rounding must not decide the pair.
    if abs(p - 0.5) <= SOFT_TIE_TOLERANCE:
        return 0.5
    return 1.0 if p > 0.5 else 0.0


def soft_pair_outcome(pair: JudgedPair) -> float | None:
    """A's score from the soft judge: 1.0 when the mean P(A) is above 0.5, 0.0 below it, 0.5
    at 0.5 (within 1e-9); None (unscored, never a loss) when P(A) was read in neither order."""
    p = mean_p_a(pair)
    return None if p is None else _side_of_half(p)


def position_bias(pairs: Sequence[JudgedPair]) -> float | None:
    """The judge's lean toward the response shown first: over the pairs whose P(A) was read
    in both orders, the mean of P(the first shown is better) - 0.5, i.e. of (first_p_a -
    second_p_a) / 2; None when no pair was read in both orders."""
    both = _read_in_both_orders(pairs)
    return sum((first - second) / 2 for first, second in both) / len(both) if both else None


def soft_position_flip_rate(pairs: Sequence[JudgedPair]) -> float | None:
    """Share of the pairs read in both orders whose P(A), once the judge's lean toward the
    first position (`position_bias`, the same on every pair) is taken out of each order, does
    not lie on one side of 0.5 in both: the soft judge's own flips, beyond the lean it has on
    every pair. A judge that only leans is left with 0.5 in both orders, which decides
    nothing: it flips. None when no pair was read in both orders."""
    both = _read_in_both_orders(pairs)
    bias = position_bias(pairs)
    if not both or bias is None:
        return None
    sides = [(_side_of_half(first - bias), _side_of_half(second + bias)) for first, second in both]
    return sum(a == 0.5 or a != b for a, b in sides) / len(sides)


def _read_in_both_orders(pairs: Sequence[JudgedPair]) -> list[tuple[float, float]]:
    return [
        (first, second)
        for p in pairs
        if (first := p.first_p_a) is not None and (second := p.second_p_a) is not None
    ]


def bootstrap_ci(
    values: Sequence[float], num_resamples: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval for the mean of `values`, reproducible for a seed."""
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        raise ValueError("bootstrap_ci needs at least one value")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if np.all(data == data[0]):
        return float(data[0]), float(data[0])
    rng = np.random.default_rng(seed)
    indices = rng.integers(0, data.size, size=(num_resamples, data.size))
    resampled_means = data[indices].mean(axis=1)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(resampled_means, [tail, 1.0 - tail])
    return float(low), float(high)


def sigmoid(x: np.ndarray | float) -> np.ndarray | float:
    # The tanh form does not overflow for large |x|, unlike 1 / (1 + exp(-x)).
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def penalised_log_loss(weights: np.ndarray, features: np.ndarray, targets: np.ndarray) -> float:
    """Cross-entropy of soft targets plus the L2 penalty on the length weight."""
    logits = features @ weights
    # log(1 + e^x) computed stably; loss = sum(log(1 + e^x) - y * x).
    loss = np.sum(np.logaddexp(0.0, logits) - targets * logits)
    return float(loss + 0.5 * LENGTH_PENALTY * weights[1] ** 2)


def fit_length_logistic(z: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Damped Newton (IRLS) fit of targets ~ sigmoid(w0 + w1 * z); returns [w0, w1]."""
    features = np.column_stack([np.ones_like(z), z])
    penalty = np.diag([0.0, LENGTH_PENALTY])
    weights = np.zeros(2)
    loss = penalised_log_loss(weights, features, targets)
    for _ in range(NEWTON_MAX_ITERATIONS):
        probabilities = sigmoid(features @ weights)
        gradient = features.T @ (probabilities - targets) + penalty @ weights
        curvature = probabilities * (1.0 - probabilities)
        hessian = features.T @ (features * curvature[:, None]) + penalty
        step = np.linalg.lstsq(hessian, gradient, rcond=None)[0]
        # Halve the step until the loss does not rise: plain Newton can overshoot when the
        # outcomes are (nearly) separated by length.
        step_size = 1.0
        while step_size > 1e-8:
            candidate = weights - step_size * step
            candidate_loss = penalised_log_loss(candidate, features, targets)
            if candidate_loss <= loss:
                break
            step_size /= 2.0
        else:
            break
        weights, loss = candidate, candidate_loss
        if np.max(np.abs(step_size * step)) < NEWTON_TOLERANCE:
            break
    return weights


def length_controlled_win_rate(
    outcomes: Sequence[float], length_differences: Sequence[float]
) -> float | None:
    """Win rate of A predicted at equal length, from a logistic fit on the length difference.

    `outcomes` are A's scores in [0, 1] (ties as 0.5, used as soft targets) and
    `length_differences` are len_a - len_b. The difference is divided by its standard deviation
    but not centred, so that z = 0 still means "same length". Fewer than 3 points gives None;
    a constant length difference leaves nothing to control for, so the plain mean is returned.
    """
    targets = np.asarray(outcomes, dtype=float)
    differences = np.asarray(length_differences, dtype=float)
    if targets.shape != differences.shape:
        raise ValueError("outcomes and length_differences must have the same length")
    if targets.size < 3:
        return None
    if np.any((targets < 0.0) | (targets > 1.0)):
        raise ValueError("outcomes must lie in [0, 1]")
    spread = float(np.std(differences))
    if spread == 0.0 or np.all(targets == targets[0]):
        # With identical outcomes the intercept runs off to infinity; the mean is the limit.
        return float(np.mean(targets))
    w0, _ = fit_length_logistic(differences / spread, targets)
    return float(sigmoid(w0))


def mean_or_none(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if len(values) else None


def summarise_pairs(
    pairs: Sequence[JudgedPair],
    disagreement: DisagreementPolicy = "tie",
    num_resamples: int = 2000,
    seed: int = 0,
    score: JudgeScore = "hard",
) -> dict:
    """Win rate of A over B (ties as half) with its bootstrap CI and the judge's diagnostics.

    `score="soft"` counts each pair by `soft_pair_outcome` and keeps the hard judge's counts
    under "hard"; both flip rates are given whichever counts. A pair of identical texts is a
    tie under both, and stays out of the flip rates and the position bias. Mean lengths are
    over all pairs, scored or not: they describe the two systems' responses.
    """
    hard = [0.5 if p.identical else pair_outcome(p, disagreement) for p in pairs]
    soft = [0.5 if p.identical else soft_pair_outcome(p) for p in pairs]
    outcomes = hard if score == "hard" else soft
    scored = [(o, p) for o, p in zip(outcomes, pairs) if o is not None]
    scored_outcomes = [o for o, _ in scored]
    # a judge shown the same text twice has nothing to prefer: its flips there are no bias
    differing = [p for p in pairs if not p.identical]
    summary = {
        "score": score,
        **_outcome_counts(outcomes, num_resamples, seed),
        "num_identical": len(pairs) - len(differing),
        "position_flip_rate": position_flip_rate(differing),
        "soft_position_flip_rate": soft_position_flip_rate(differing),
        "position_bias": position_bias(differing),
        "length_controlled_win_rate": length_controlled_win_rate(
            scored_outcomes, [p.length_a - p.length_b for _, p in scored]
        ),
        "mean_length_a": mean_or_none([p.length_a for p in pairs]),
        "mean_length_b": mean_or_none([p.length_b for p in pairs]),
    }
    if score == "soft":
        summary["hard"] = _outcome_counts(hard, num_resamples, seed)
    return summary


def _outcome_counts(
    outcomes: Sequence[float | None], num_resamples: int, seed: int
) -> dict[str, int | float | list[float] | None]:
    """n, wins, losses, ties, unscored, win rate and its bootstrap CI of A's pair scores."""
    scored = [o for o in outcomes if o is not None]
    return {
        "n": len(scored),
        "wins": sum(o == 1.0 for o in scored),
        "losses": sum(o == 0.0 for o in scored),
        "ties": sum(o == 0.5 for o in scored),
        "unscored": len(outcomes) - len(scored),
        "win_rate": mean_or_none(scored),
        "ci95": list(bootstrap_ci(scored, num_resamples, seed)) if scored else None,
    }


# --- verifier agreement ------------------------------------------------------------------------


def f1_score(true_positives: int, false_positives: int, false_negatives: int) -> float | None:
    """F1 for one class; None when that class was neither predicted nor present."""
    denominator = 2 * true_positives + false_positives + false_negatives
    return 2 * true_positives / denominator if denominator else None


def cohen_kappa(observed: float, expected: float) -> float:
    if expected == 1.0:
        return 1.0 if observed == 1.0 else 0.0
    return (observed - expected) / (1.0 - expected)


def agreement(
    predicted: Sequence[bool | None], reference: Sequence[bool | None]
) -> dict[str, float | int | None]:
    """Agreement of yes/no verdicts with reference verdicts, over positions both scored.

    "unscored" counts the positions the reference scored but the prediction did not.
    """
    if len(predicted) != len(reference):
        raise ValueError(f"{len(predicted)} predicted verdicts but {len(reference)} reference")
    num_unscored = sum(p is None and r is not None for p, r in zip(predicted, reference))
    both = [(p, r) for p, r in zip(predicted, reference) if p is not None and r is not None]
    if not both:
        return {
            "n": 0,
            "accuracy": None,
            "balanced_accuracy": None,
            "kappa": None,
            "f1_yes": None,
            "f1_no": None,
            "macro_f1": None,
            "unscored": num_unscored,
        }
    return {"n": len(both), **confusion_metrics(both), "unscored": num_unscored}


def confusion_metrics(both: Sequence[tuple[bool, bool]]) -> dict[str, float | None]:
    """Accuracy, balanced accuracy, Cohen's kappa, F1 per class and their mean, the macro F1
    HealthBench's meta-evaluation reports (a class neither predicted nor present is left out
    of the mean), of (predicted, reference) pairs, at least one."""
    n = len(both)
    true_yes = sum(p and r for p, r in both)
    true_no = sum(not p and not r for p, r in both)
    false_yes = sum(p and not r for p, r in both)
    false_no = sum(not p and r for p, r in both)
    accuracy = (true_yes + true_no) / n
    recalls = []
    if true_yes + false_no:
        recalls.append(true_yes / (true_yes + false_no))
    if true_no + false_yes:
        recalls.append(true_no / (true_no + false_yes))
    predicted_yes, reference_yes = (true_yes + false_yes) / n, (true_yes + false_no) / n
    expected = predicted_yes * reference_yes + (1 - predicted_yes) * (1 - reference_yes)
    f1s = [f1_score(true_yes, false_yes, false_no), f1_score(true_no, false_no, false_yes)]
    defined = [f1 for f1 in f1s if f1 is not None]
    return {
        "accuracy": accuracy,
        "balanced_accuracy": sum(recalls) / len(recalls),
        "kappa": cohen_kappa(accuracy, expected),
        "f1_yes": f1s[0],
        "f1_no": f1s[1],
        "macro_f1": sum(defined) / len(defined),
    }


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n, tied values sharing the mean of the ranks they span."""
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    ranks = np.empty(values.size, dtype=float)
    start = 0
    while start < values.size:
        end = start
        while end + 1 < values.size and sorted_values[end + 1] == sorted_values[start]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2.0 + 1.0
        start = end + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman rank correlation; None with fewer than 3 points or a constant side."""
    if len(x) != len(y):
        raise ValueError(f"spearman needs equal lengths, got {len(x)} and {len(y)}")
    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if xs.size < 3 or np.all(xs == xs[0]) or np.all(ys == ys[0]):
        return None
    return float(np.corrcoef(average_ranks(xs), average_ranks(ys))[0, 1])


def scored_only(scores: Mapping[str, float | None]) -> dict[str, float]:
    """The candidates the reference could score: an unscored one has no order to agree with."""
    return {candidate: score for candidate, score in scores.items() if score is not None}


def tail_candidates(scores: Mapping[str, float], tail_quantile: float) -> list[str]:
    """The top max(2, ceil(q * n)) candidates by score, ties broken by candidate id."""
    # Rounding first keeps e.g. 0.3 * 10 = 3.0000000000000004 from becoming 4.
    num_kept = max(2, math.ceil(round(tail_quantile * len(scores), 9)))
    ranked = sorted(scores, key=lambda candidate: (-scores[candidate], candidate))
    return ranked[:num_kept]


def ordered_the_same(
    reference: tuple[float, float], predicted: tuple[float | None, float | None]
) -> bool:
    """True when the prediction strictly orders the pair as the reference does."""
    if predicted[0] is None or predicted[1] is None or predicted[0] == predicted[1]:
        return False
    return (predicted[0] > predicted[1]) == (reference[0] > reference[1])


def pairwise_accuracy(
    reference_scores: Mapping[str, Mapping[str, float | None]],
    predicted_scores: Mapping[str, Mapping[str, float | None]],
    tail_quantile: float | None = None,
) -> dict[str, int | float | None]:
    """Share of within-prompt pairs the prediction orders like the reference.

    Pairs the reference ties or cannot score are skipped; a predicted tie or an unscored (None
    or missing) candidate counts as wrong. With `tail_quantile` only pairs among each prompt's
    top candidates by reference score are used.
    """
    if tail_quantile is not None and not 0.0 < tail_quantile <= 1.0:
        raise ValueError(f"tail_quantile must be in (0, 1], got {tail_quantile}")
    num_pairs = num_correct = 0
    for prompt_id, with_unscored in reference_scores.items():
        reference = scored_only(with_unscored)
        predicted = predicted_scores.get(prompt_id, {})
        candidates = sorted(reference)
        if tail_quantile is not None:
            candidates = sorted(tail_candidates(reference, tail_quantile))
        for first, second in combinations(candidates, 2):
            if reference[first] == reference[second]:
                continue
            num_pairs += 1
            num_correct += ordered_the_same(
                (reference[first], reference[second]),
                (predicted.get(first), predicted.get(second)),
            )
    return {"n_pairs": num_pairs, "accuracy": num_correct / num_pairs if num_pairs else None}


def within_prompt_spearman(
    reference_scores: Mapping[str, Mapping[str, float | None]],
    predicted_scores: Mapping[str, Mapping[str, float | None]],
) -> float | None:
    """Mean over prompts of the Spearman correlation on that prompt's scored candidates."""
    correlations = []
    for prompt_id, with_unscored in reference_scores.items():
        reference = scored_only(with_unscored)
        predicted = predicted_scores.get(prompt_id, {})
        scored = [c for c in sorted(reference) if predicted.get(c) is not None]
        correlation = spearman([reference[c] for c in scored], [predicted[c] for c in scored])
        if correlation is not None:
            correlations.append(correlation)
    return mean_or_none(correlations)


def off_topic_accuracy(
    on_topic: Mapping[str, Mapping[str, float | None]],
    off_topic: Mapping[str, Mapping[str, float | None]],
) -> dict[str, Any]:
    """Share of within-prompt (on-topic, off-topic) pairs where the on-topic reward is higher;
    a tie counts half. Pairs with an unscored side are left out and counted as "unscored"."""
    outcomes: list[float] = []
    num_unscored = 0
    for prompt_id, on_scores in on_topic.items():
        for on, off in product(on_scores.values(), off_topic.get(prompt_id, {}).values()):
            if on is None or off is None:
                num_unscored += 1
            else:
                outcomes.append(1.0 if on > off else 0.5 if on == off else 0.0)
    return {
        "n_pairs": len(outcomes),
        "accuracy": mean_or_none(outcomes),
        # pairs share responses, so this interval over pairs is a lower bound on the spread
        "ci95": list(bootstrap_ci(outcomes)) if outcomes else None,
        "ties": outcomes.count(0.5),
        "unscored": num_unscored,
    }


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100) with linear interpolation; None for no values."""
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile q must be in [0, 100], got {q}")
    if len(values) == 0:
        return None
    return float(np.percentile(np.asarray(values, dtype=float), q))
