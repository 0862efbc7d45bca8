"""Theory: the paper's Theorem 1 and Figure 2 in closed form, checked against Monte Carlo.

Setting (Chasing the Tail, section 3 and appendix A): under the base policy pi0 the gold reward
r* is Uniform(0, 1); the proxy reward is r = f(r*) with f measure-preserving, so r is uniform
too. The KL-regularised optimum is pi ∝ pi0 exp(r / beta), and the win rate against pi0 equals
the expected gold reward under pi. With a = 1/beta:

- KL(beta) = E_pi[a r] - log(beta (e^a - 1)), the same for every f;
- W(beta; f) = ∫_0^1 f^{-1}(u) e^{a u} du / (beta (e^a - 1)).

A pattern f here reverses some blocks of [0, 1] and leaves the rest alone, so f^{-1} is
piecewise linear and W is a sum of exact integrals of u e^{au} and e^{au}, written with the
factor e^a taken out so that they stay finite for beta down to 1e-4.

Inputs: a pattern and beta (or a KL budget, a best-of-n size, a mirror-ascent step).
Outputs: win rates, the reference table of PAPER.md section 5, a JSON summary, three figures.
Run: `python -m harness.theory runs/theory` (prints the summary, writes the figures there).
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType

import numpy as np

KL_GRID = (0.25, 0.5, 1, 2, 3, 4, 6, 8)
PEAK_GRID = tuple(round(0.01 * i, 2) for i in range(1, 801))
MIRROR_STEPS = (1, 2, 3, 5, 7, 10, 14, 20, 30, 40, 60, 80, 120, 200, 300, 500, 700, 1000)
ENVELOPE_SHARES = (0.1, 0.25, 0.5, 0.75, 0.9)
MC_SAMPLES = 200_000
LOG_BETA_RANGE = (math.log(1e-8), math.log(1e6))  # KL from about 17.4 down to 4e-14


@dataclass(frozen=True)
class Piece:
    """f^{-1}(u) = slope * u + intercept for u in [lo, hi]."""

    lo: float
    hi: float
    slope: float
    intercept: float


@dataclass(frozen=True)
class Pattern:
    """A measure-preserving f that reverses each block (lo, hi) and is the identity elsewhere.

    Reversing a block is an involution, so f^{-1} = f; the blocks must be disjoint and sorted.
    """

    reversed_blocks: tuple[tuple[float, float], ...] = ()

    def __post_init__(self) -> None:
        edges = [x for block in self.reversed_blocks for x in block]
        if edges != sorted(edges) or (edges and (edges[0] < 0 or edges[-1] > 1)):
            raise ValueError(f"reversed blocks must be sorted, disjoint, in [0, 1]: {edges}")

    def pieces(self) -> tuple[Piece, ...]:
        """The linear pieces of f^{-1}, covering [0, 1] in order (empty pieces left out)."""
        pieces, start = [], 0.0
        for lo, hi in self.reversed_blocks:
            pieces.append(Piece(start, lo, 1.0, 0.0))
            pieces.append(Piece(lo, hi, -1.0, lo + hi))
            start = hi
        pieces.append(Piece(start, 1.0, 1.0, 0.0))
        return tuple(piece for piece in pieces if piece.hi > piece.lo)

    def inverse(self, u: np.ndarray) -> np.ndarray:
        """f^{-1}(u): the gold-reward quantile of proxy-reward quantile u."""
        u = np.asarray(u, dtype=float)
        gold = u.copy()
        for lo, hi in self.reversed_blocks:
            inside = (u >= lo) & (u <= hi)
            gold[inside] = lo + hi - u[inside]
        return gold

    def forward(self, u: np.ndarray) -> np.ndarray:
        """f(u): the proxy-reward quantile of gold quantile u (f is an involution)."""
        return self.inverse(u)


def top_wrong(share: float) -> Pattern:
    """The best `share` of responses ranked backwards: f(u) = 2 - share - u above 1 - share."""
    return Pattern(((1.0 - share, 1.0),))


def worst_wrong(share: float) -> Pattern:
    """The worst `share` of responses ranked backwards: f(u) = share - u below share."""
    return Pattern(((0.0, share),))


PATTERNS = MappingProxyType(
    {
        "Correct": Pattern(),
        "Reversed": Pattern(((0.0, 1.0),)),
        "Top 10% wrong": top_wrong(0.1),
        "Top 25% wrong": top_wrong(0.25),
        "Top 50% wrong": top_wrong(0.5),
        "Worst 50% wrong": worst_wrong(0.5),
        "Worst 90% wrong": worst_wrong(0.9),
    }
)


def kl_of_beta(beta: float) -> float:
    """KL(pi_beta || pi0), the stable form of Theorem 1 rearranged.

    E_pi[a u] - a = a / (e^a - 1) - 1 and log(beta (e^a - 1)) - a = log(beta (1 - e^{-a})):
    nothing overflows for small beta, and the error stays near 1e-16 absolute for large beta
    (relative 1e-9 at beta = 1e3, where KL is about 1/(24 beta^2); useless beyond beta ~ 1e6).
    """
    if beta <= 0:
        raise ValueError(f"beta must be positive, got {beta}")
    if math.isinf(beta):
        return 0.0
    a = 1.0 / beta
    one_minus_exp = -math.expm1(-a)
    return a * math.exp(-a) / one_minus_exp - 1.0 - math.log(beta * one_minus_exp)


@lru_cache(maxsize=4096)
def beta_of_kl(kl: float) -> float:
    """The beta whose optimum spends `kl` nats; bisection on log beta (KL falls as beta grows)."""
    lo, hi = LOG_BETA_RANGE
    smallest, largest = kl_of_beta(math.exp(hi)), kl_of_beta(math.exp(lo))
    if not (kl > 0 and smallest < kl < largest):
        raise ValueError(f"kl must lie in ({smallest:.3g}, {largest:.3g}), got {kl}")
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if kl_of_beta(math.exp(mid)) > kl:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-13:
            break
    return math.exp(0.5 * (lo + hi))


def _tilted_moments(piece: Piece, beta: float) -> tuple[float, float]:
    """(∫ e^{au} du, ∫ u e^{au} du) over the piece, both divided by beta (e^a - 1).

    Every exponent is u - 1 <= 0 after taking e^a out, so small beta cannot overflow.
    """
    a = 1.0 / beta
    norm = -math.expm1(-a)
    at_hi = math.exp(a * (piece.hi - 1.0))
    at_lo = math.exp(a * (piece.lo - 1.0))
    mass = at_hi * -math.expm1(-a * (piece.hi - piece.lo)) / norm
    first = (at_hi * piece.hi - at_lo * piece.lo) / norm - beta * mass
    return mass, first


def win_rate(beta: float, pattern: Pattern) -> float:
    """W(beta; f): the expected gold reward of pi ∝ pi0 exp(f(r*) / beta), exactly."""
    if beta <= 0:
        raise ValueError(f"beta must be positive, got {beta}")
    if math.isinf(beta):
        return sum(_uniform_mean(piece) for piece in pattern.pieces())
    total = 0.0
    for piece in pattern.pieces():
        mass, first = _tilted_moments(piece, beta)
        total += piece.slope * first + piece.intercept * mass
    return total


def _uniform_mean(piece: Piece) -> float:
    """∫ f^{-1}(u) du over the piece: the beta -> infinity limit (0.5 in total)."""
    width = piece.hi - piece.lo
    return piece.slope * width * (piece.hi + piece.lo) / 2 + piece.intercept * width


def _tilted_sample(beta: float, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Uniform proxy quantiles and their normalised weights exp(u / beta) (max taken out)."""
    u = np.random.default_rng(seed).random(n)
    log_weights = u / beta
    weights = np.exp(log_weights - log_weights.max())
    return u, weights / weights.sum()


def monte_carlo_win_rate(
    beta: float, pattern: Pattern, n: int = MC_SAMPLES, seed: int = 0
) -> tuple[float, float]:
    """Self-normalised importance-sampling estimate of W and its delta-method standard error."""
    u, weights = _tilted_sample(beta, n, seed)
    gold = pattern.inverse(u)
    estimate = float(weights @ gold)
    standard_error = float(np.sqrt(np.sum(weights**2 * (gold - estimate) ** 2)))
    return estimate, standard_error


def monte_carlo_kl(beta: float, n: int = MC_SAMPLES, seed: int = 0) -> float:
    """Importance-sampling estimate of KL = E_pi[u / beta] - log E_pi0[exp(u / beta)]."""
    u = np.random.default_rng(seed).random(n)
    log_weights = u / beta
    top = log_weights.max()
    weights = np.exp(log_weights - top)
    log_normaliser = top + math.log(weights.mean())
    return float(weights @ log_weights / weights.sum() - log_normaliser)


def envelope(c: float, beta: float) -> float:
    """Fig. 2b: win rate when the top c share is ranked right and the rest worst-case."""
    if not 0 < c <= 1:
        raise ValueError(f"c must lie in (0, 1], got {c}")
    return win_rate(beta, worst_wrong(1.0 - c))


def envelope_curves(
    cs: tuple[float, ...] = ENVELOPE_SHARES, kls: tuple[float, ...] = PEAK_GRID[::10]
) -> dict[float, list[tuple[float, float]]]:
    """{c: [(kl, envelope win rate), ...]} for the curves of Fig. 2b."""
    return {c: [(kl, envelope(c, beta_of_kl(kl))) for kl in kls] for c in cs}


def best_of_n(n: int, pattern: Pattern) -> tuple[float, float]:
    """(KL, win rate) of best-of-n by proxy: the winner's proxy quantile has density n v^{n-1}."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    kl = math.log(n) - (n - 1) / n
    win = 0.0
    for piece in pattern.pieces():
        first = n / (n + 1) * (piece.hi ** (n + 1) - piece.lo ** (n + 1))
        mass = piece.hi**n - piece.lo**n
        win += piece.slope * first + piece.intercept * mass
    return kl, win


def mirror_ascent_curve(
    pattern: Pattern, eta: float = 0.5, steps: tuple[int, ...] = MIRROR_STEPS
) -> list[tuple[int, float, float]]:
    """[(step, KL, win rate)] of tabular mirror ascent logits += eta * r, i.e. beta = 1/(eta t)."""
    curve = []
    for step in steps:
        beta = 1.0 / (eta * step)
        curve.append((step, kl_of_beta(beta), win_rate(beta, pattern)))
    return curve


def kl_table(
    kls: tuple[float, ...] = KL_GRID, n: int = MC_SAMPLES, seed: int = 0
) -> list[dict[str, float]]:
    """One row per KL: beta, every pattern's win rate, and the worst Monte Carlo discrepancy."""
    rows = []
    for kl in kls:
        beta = beta_of_kl(kl)
        row: dict[str, float] = {"kl": kl, "beta": beta}
        errors = []
        for name, pattern in PATTERNS.items():
            row[name] = win_rate(beta, pattern)
            estimate, _ = monte_carlo_win_rate(beta, pattern, n=n, seed=seed)
            errors.append(abs(row[name] - estimate))
        row["monte_carlo_max_abs_error"] = max(errors)
        rows.append(row)
    return rows


def peak(pattern: Pattern, kls: tuple[float, ...] = PEAK_GRID) -> dict[str, float]:
    """The highest win rate over a grid of KL budgets, and where it is reached."""
    wins = [win_rate(beta_of_kl(kl), pattern) for kl in kls]
    best = int(np.argmax(wins))
    return {"kl": float(kls[best]), "win_rate": float(wins[best])}


def theory_summary(seed: int = 0) -> dict:
    """Everything section 5 of PAPER.md pins, as one JSON-serialisable dict."""
    table = kl_table(seed=seed)
    best_of_16 = {}
    for name, pattern in PATTERNS.items():
        kl, win = best_of_n(16, pattern)
        best_of_16[name] = {"kl": kl, "win_rate": win}
    return {
        "kl_table": table,
        "monte_carlo": {
            "n": MC_SAMPLES,
            "seed": seed,
            "max_abs_error": max(row["monte_carlo_max_abs_error"] for row in table),
        },
        "peaks": {name: peak(pattern) for name, pattern in PATTERNS.items()},
        "best_of_16": best_of_16,
        "beta_0.1": {"kl": kl_of_beta(0.1), "correct": win_rate(0.1, PATTERNS["Correct"])},
        "paper_beta_0.01_kl": kl_of_beta(0.01),
    }


def _plot_fig2a(plt, path: Path) -> None:
    """Win rate against KL for every pattern, with Monte Carlo points on top."""
    kls = PEAK_GRID[::5]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for index, (name, pattern) in enumerate(PATTERNS.items()):
        color, style = f"C{index}", "--" if name.startswith("Worst") else "-"
        wins = [win_rate(beta_of_kl(kl), pattern) for kl in kls]
        ax.plot(kls, wins, style, color=color, label=name)
        estimates = [monte_carlo_win_rate(beta_of_kl(kl), pattern)[0] for kl in KL_GRID]
        ax.plot(KL_GRID, estimates, "o", color=color, markersize=4, markerfacecolor="none")
    ax.plot([], [], "o", color="gray", markerfacecolor="none", label="Monte Carlo")
    ax.axhline(0.5, color="gray", linewidth=0.6, linestyle=":")
    ax.set(xlim=(0, 8), ylim=(0, 1), xlabel="KL(π || π0) (nats)", ylabel="win rate vs π0")
    ax.set_title("Fig. 2a: win rate of the KL-regularised optimum under misspecification")
    ax.legend(fontsize=8, loc="lower right", bbox_to_anchor=(1, 0.08), ncol=2)
    _save(plt, fig, path)


def _plot_fig2b(plt, path: Path) -> None:
    """Envelope curves: top c ranked right, the rest worst-case."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for c, curve in envelope_curves(kls=PEAK_GRID[:500:5]).items():
        kls, wins = zip(*curve)
        ax.plot(kls, wins, label=f"top {c:.0%} correct")
    ax.axhline(0.5, color="gray", linewidth=0.6, linestyle=":")
    ax.set(xlim=(0, 5), ylim=(0.4, 1), xlabel="KL(π || π0) (nats)", ylabel="win rate vs π0")
    ax.set_title("Fig. 2b: only the top c share ranked correctly, the rest worst case")
    ax.legend(fontsize=8, loc="lower right")
    _save(plt, fig, path)


def _plot_training(plt, path: Path, eta: float = 0.5) -> None:
    """Mirror-ascent win rate by step: a tail error peaks, then declines."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    steps = tuple(range(1, 1001))
    for name in ("Correct", "Top 25% wrong"):
        curve = mirror_ascent_curve(PATTERNS[name], eta=eta, steps=steps)
        ax.plot(steps, [win for _, _, win in curve], label=name)
    best_step, kl, win = max(curve, key=lambda point: point[2])
    ax.plot(best_step, win, "k^", markersize=5)
    note = f"peak {win:.3f} at step {best_step} (KL {kl:.2f})"
    ax.annotate(note, (best_step, win), textcoords="offset points", xytext=(6, 6), fontsize=8)
    ax.set_xscale("log")
    ax.set(xlabel="mirror-ascent step t (β = 1/(η t))", ylabel="win rate vs π0", ylim=(0.5, 1))
    ax.set_title(f"Training analogue: tabular mirror ascent, η = {eta}")
    ax.legend(fontsize=8, loc="upper left")
    _save(plt, fig, path)


def _save(plt, fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_theory(folder: Path) -> dict[str, Path]:
    """Write Fig. 2a, Fig. 2b and the training analogue as PNGs into `folder`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {
        "fig2a": folder / "theory_fig2a.png",
        "fig2b": folder / "theory_fig2b.png",
        "training": folder / "theory_training.png",
    }
    _plot_fig2a(plt, paths["fig2a"])
    _plot_fig2b(plt, paths["fig2b"])
    _plot_training(plt, paths["training"])
    return paths


if __name__ == "__main__":
    print(json.dumps(theory_summary(), indent=2))
    if len(sys.argv) > 1:
        for figure, figure_path in plot_theory(Path(sys.argv[1])).items():
            print(f"{figure}: {figure_path}")
