"""Theorem 1 and Fig. 2 in closed form: the numbers PAPER.md section 5 pins, and cross-checks."""

import json
import math

import numpy as np
import pytest

from harness.theory import (
    KL_GRID,
    PATTERNS,
    Pattern,
    best_of_n,
    beta_of_kl,
    envelope,
    envelope_curves,
    kl_of_beta,
    kl_table,
    mirror_ascent_curve,
    monte_carlo_kl,
    monte_carlo_win_rate,
    peak,
    plot_theory,
    theory_summary,
    win_rate,
    worst_wrong,
)

REFERENCE_COLUMNS = (
    "Correct",
    "Top 10% wrong",
    "Top 25% wrong",
    "Top 50% wrong",
    "Worst 50% wrong",
    "Worst 90% wrong",
)
REFERENCE_TABLE = {
    0.5: (0.774, 0.771, 0.746, 0.631, 0.756, 0.472),
    1: (0.865, 0.858, 0.804, 0.617, 0.858, 0.563),
    2: (0.950, 0.923, 0.798, 0.550, 0.950, 0.843),
    4: (0.993, 0.907, 0.757, 0.507, 0.993, 0.993),
}
REFERENCE_CELLS = [
    (kl, name, value)
    for kl, values in REFERENCE_TABLE.items()
    for name, value in zip(REFERENCE_COLUMNS, values, strict=True)
]


def _paper_kl(beta: float) -> float:
    """Theorem 1's KL exactly as printed, unstable for small beta but fine for moderate beta."""
    a = 1 / beta
    return (
        ((a - 1) * math.exp(a) + 1) / (math.exp(a) - 1) - math.log(beta) - math.log(math.exp(a) - 1)
    )


@pytest.mark.parametrize(("kl", "name", "expected"), REFERENCE_CELLS)
def test_reference_table(kl, name, expected):
    assert win_rate(beta_of_kl(kl), PATTERNS[name]) == pytest.approx(expected, abs=0.002)


def test_kl_table_rows_match_win_rate():
    rows = kl_table(kls=(0.5, 2), n=20_000)
    assert [row["kl"] for row in rows] == [0.5, 2]
    for row in rows:
        assert kl_of_beta(row["beta"]) == pytest.approx(row["kl"], abs=1e-9)
        for name, pattern in PATTERNS.items():
            assert row[name] == pytest.approx(win_rate(row["beta"], pattern), abs=1e-12)
        assert 0 <= row["monte_carlo_max_abs_error"] < 0.01


@pytest.mark.parametrize("beta", [1e-4, 0.01, 0.1, 0.3, 1.0, 10.0, 1e3])
def test_reversed_is_one_minus_correct(beta):
    correct = win_rate(beta, PATTERNS["Correct"])
    assert win_rate(beta, PATTERNS["Reversed"]) == pytest.approx(1 - correct, abs=1e-12)


def test_beta_point_one():
    assert kl_of_beta(0.1) == pytest.approx(1.3031, abs=5e-5)
    assert win_rate(0.1, PATTERNS["Correct"]) == pytest.approx(0.9000, abs=5e-5)


def test_paper_beta_point_zero_one():
    assert kl_of_beta(0.01) == pytest.approx(3.605, abs=5e-4)


@pytest.mark.parametrize("beta", [0.05, 0.2, 1.0, 5.0, 20.0])
def test_stable_kl_matches_printed_formula(beta):
    assert kl_of_beta(beta) == pytest.approx(_paper_kl(beta), rel=1e-9, abs=1e-12)


def test_kl_extremes_are_stable():
    # small beta: KL -> log(1/beta) - 1; large beta: KL -> 1/(24 beta^2)
    assert kl_of_beta(1e-4) == pytest.approx(math.log(1e4) - 1, abs=1e-9)
    assert kl_of_beta(1e3) == pytest.approx(1e-6 / 24, rel=1e-6)
    assert kl_of_beta(math.inf) == 0.0


def test_win_rate_extremes_are_stable():
    # Correct: E[u] = 1/(1 - e^{-a}) - 1/a, about 1 - beta for small beta, 0.5 + a/12 for large
    assert win_rate(1e-4, PATTERNS["Correct"]) == pytest.approx(1 - 1e-4, abs=1e-12)
    assert win_rate(1e3, PATTERNS["Correct"]) == pytest.approx(0.5 + 1e-3 / 12, abs=1e-11)
    assert win_rate(1e-4, PATTERNS["Top 25% wrong"]) == pytest.approx(0.75 + 1e-4, abs=1e-12)
    for pattern in PATTERNS.values():
        assert win_rate(math.inf, pattern) == pytest.approx(0.5, abs=1e-12)


@pytest.mark.parametrize("kl", KL_GRID)
def test_beta_of_kl_inverts_kl_of_beta(kl):
    assert kl_of_beta(beta_of_kl(kl)) == pytest.approx(kl, abs=1e-9)


@pytest.mark.parametrize("beta", [1e-4, 0.01, 0.1, 1.0, 10.0, 1e3])
def test_kl_of_beta_inverts_beta_of_kl(beta):
    assert beta_of_kl(kl_of_beta(beta)) == pytest.approx(beta, rel=1e-6)


def test_beta_of_kl_rejects_out_of_range():
    with pytest.raises(ValueError):
        beta_of_kl(0.0)
    with pytest.raises(ValueError):
        beta_of_kl(100.0)


def test_top_25_wrong_peak():
    result = peak(PATTERNS["Top 25% wrong"])
    assert result["win_rate"] == pytest.approx(0.813, abs=0.001)
    assert result["kl"] == pytest.approx(1.37, abs=0.05)


def test_correct_has_no_interior_peak():
    assert peak(PATTERNS["Correct"], kls=(0.5, 1, 2))["kl"] == 2


def test_best_of_16():
    kl, correct = best_of_n(16, PATTERNS["Correct"])
    _, top_25_wrong = best_of_n(16, PATTERNS["Top 25% wrong"])
    assert kl == pytest.approx(1.835, abs=5e-4)
    assert correct == pytest.approx(0.941, abs=5e-4)
    assert top_25_wrong == pytest.approx(0.805, abs=5e-4)


def test_best_of_one_is_the_base_policy():
    for pattern in PATTERNS.values():
        assert best_of_n(1, pattern) == pytest.approx((0.0, 0.5), abs=1e-12)


def test_mirror_ascent_top_25_wrong():
    curve = mirror_ascent_curve(PATTERNS["Top 25% wrong"], eta=0.5, steps=(10, 20, 80, 1000))
    assert [step for step, _, _ in curve] == [10, 20, 80, 1000]
    wins = [win for _, _, win in curve]
    assert wins == pytest.approx([0.770, 0.813, 0.775, 0.752], abs=5e-4)
    assert curve[1][1] == pytest.approx(kl_of_beta(0.1), abs=1e-12)


def test_mirror_ascent_matches_tabular_updates():
    """Run logits += eta * proxy on a fine grid of gold quantiles; uses f, not f^{-1}."""
    gold = (np.arange(200_000) + 0.5) / 200_000
    pattern, eta = PATTERNS["Top 25% wrong"], 0.5
    proxy = pattern.forward(gold)
    logits = np.zeros_like(gold)
    expected = {}
    for step in range(1, 81):
        logits += eta * proxy
        if step in (10, 20, 80):
            weights = np.exp(logits - logits.max())
            expected[step] = float(weights @ gold / weights.sum())
    for step, _, win in mirror_ascent_curve(pattern, eta=eta, steps=(10, 20, 80)):
        assert win == pytest.approx(expected[step], abs=1e-6)


@pytest.mark.parametrize("kl", KL_GRID)
def test_closed_form_matches_monte_carlo(kl):
    beta = beta_of_kl(kl)
    for name, pattern in PATTERNS.items():
        estimate, standard_error = monte_carlo_win_rate(beta, pattern, n=200_000, seed=0)
        error = abs(win_rate(beta, pattern) - estimate)
        assert standard_error > 0, name
        assert error <= 4 * standard_error, name
        assert error <= 0.005, name


@pytest.mark.parametrize("kl", [0.25, 1, 2, 4])
def test_monte_carlo_kl(kl):
    assert monte_carlo_kl(beta_of_kl(kl), n=200_000, seed=0) == pytest.approx(kl, abs=0.02)


def test_patterns_are_the_paper_maps():
    assert list(PATTERNS) == [
        "Correct",
        "Reversed",
        "Top 10% wrong",
        "Top 25% wrong",
        "Top 50% wrong",
        "Worst 50% wrong",
        "Worst 90% wrong",
    ]
    u = np.array([0.1, 0.4, 0.8, 0.95])
    np.testing.assert_allclose(PATTERNS["Correct"].inverse(u), u)
    np.testing.assert_allclose(PATTERNS["Reversed"].inverse(u), 1 - u)
    np.testing.assert_allclose(PATTERNS["Top 25% wrong"].inverse(u), [0.1, 0.4, 0.95, 0.8])
    np.testing.assert_allclose(PATTERNS["Worst 50% wrong"].inverse(u), [0.4, 0.1, 0.8, 0.95])


@pytest.mark.parametrize("name", list(PATTERNS))
def test_patterns_preserve_the_uniform_measure(name):
    u = (np.arange(10_000) + 0.5) / 10_000
    image = np.sort(PATTERNS[name].inverse(u))
    np.testing.assert_allclose(image, u, atol=1e-12)
    np.testing.assert_allclose(PATTERNS[name].forward(PATTERNS[name].inverse(u)), u, atol=1e-12)


def test_pattern_rejects_overlapping_blocks():
    with pytest.raises(ValueError):
        Pattern(((0.0, 0.5), (0.4, 0.9)))


def test_envelope():
    beta = beta_of_kl(1.0)
    assert envelope(1.0, beta) == pytest.approx(win_rate(beta, PATTERNS["Correct"]), abs=1e-12)
    assert envelope(0.5, beta) == pytest.approx(
        win_rate(beta, PATTERNS["Worst 50% wrong"]), abs=1e-12
    )
    assert envelope(0.1, beta) == pytest.approx(
        win_rate(beta, PATTERNS["Worst 90% wrong"]), abs=1e-12
    )
    shares = (0.1, 0.25, 0.5, 0.75, 0.9)
    wins = [envelope(c, beta) for c in shares]
    assert wins == sorted(wins)
    with pytest.raises(ValueError):
        envelope(0.0, beta)


def test_envelope_curves():
    curves = envelope_curves(cs=(0.25, 0.9), kls=(0.5, 2))
    assert list(curves) == [0.25, 0.9]
    assert curves[0.25][1] == (2, pytest.approx(win_rate(beta_of_kl(2), worst_wrong(0.75))))


def test_theory_summary():
    summary = theory_summary()
    json.dumps(summary)
    assert [row["kl"] for row in summary["kl_table"]] == list(KL_GRID)
    assert summary["monte_carlo"]["n"] == 200_000
    assert 0 < summary["monte_carlo"]["max_abs_error"] < 0.005
    assert summary["peaks"]["Top 25% wrong"]["win_rate"] == pytest.approx(0.813, abs=0.001)
    assert summary["best_of_16"]["Correct"]["win_rate"] == pytest.approx(16 / 17)
    assert summary["beta_0.1"]["kl"] == pytest.approx(1.3031, abs=5e-5)
    assert summary["beta_0.1"]["correct"] == pytest.approx(0.9000, abs=5e-5)
    assert summary["paper_beta_0.01_kl"] == pytest.approx(3.605, abs=5e-4)


def test_plot_theory_writes_pngs(tmp_path):
    paths = plot_theory(tmp_path / "figures")
    assert set(paths) == {"fig2a", "fig2b", "training"}
    for path in paths.values():
        assert path.parent == tmp_path / "figures"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert path.stat().st_size > 10_000


def test_monte_carlo_standard_error_matches_spread_across_seeds():
    beta, pattern = beta_of_kl(1.0), PATTERNS["Top 25% wrong"]
    runs = [monte_carlo_win_rate(beta, pattern, n=20_000, seed=seed) for seed in range(40)]
    spread = np.std([estimate for estimate, _ in runs], ddof=1)
    reported = np.mean([standard_error for _, standard_error in runs])
    assert reported == pytest.approx(spread, rel=0.35)
