"""Plots drawn from the summary with matplotlib (imported inside the functions, without
pyplot, so importing the report stays cheap): verifier agreement and throughput, how often
each verifier is fooled by each reward-hacking probe, over-optimisation by checkpoint, and the
pairwise wins, ties and losses."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

from harness.jsonl import write_bytes_atomic
from harness.report.format import _real, fmt_ci, fmt_number, fmt_params, fmt_pct, fmt_text
from harness.report.tables import (
    AGREEMENT_METRICS,
    PROBE_METRICS,
    _label,
    fooled_value,
    probe_figure,
    probe_names,
    probe_rows,
    probe_score,
    tag_group,
)
from harness.summary_schema import Checkpoint, ModelGrade, ProbeFigures, Summary, VerifierRow

CHANCE = 0.5  # a probe's value for a verifier that guesses
REPORT_MODE = 0o644  # the report is meant to be shared: readable by all, unlike run records

DPI = 110
WIDTH_IN = 7.0


def make_plots(run_dir: Path, summary: Summary) -> dict[str, str]:
    """Draw the plots the summary has data for into RUN_DIR/plots; {name: relative path}."""
    from matplotlib.figure import Figure as PlotFigure  # no pyplot: no global state, Agg canvas

    makers = {
        "verifier_metrics_vs_size": _plot_metrics_vs_size,
        "verifier_accuracy_vs_throughput": _plot_accuracy_vs_throughput,
        "overoptimization": _plot_overoptimization,
        "pairwise": _plot_pairwise,
        "grading_axes": _plot_grading_axes,
        "probe_heat_map": _plot_probe_heat_map,
    }
    made: dict[str, str] = {}
    for name, maker in makers.items():
        fig = maker(summary, PlotFigure)
        if fig is None:
            continue
        path = Path(run_dir) / "plots" / f"{name}.png"
        png = io.BytesIO()
        fig.savefig(png, format="png", dpi=DPI, bbox_inches="tight")
        write_bytes_atomic(path, png.getvalue(), mode=REPORT_MODE)
        made[name] = path.relative_to(run_dir).as_posix()
    return made


def _size_axis(verifiers: list[VerifierRow]) -> tuple[list[float], str, bool]:
    """Parameter counts (log axis) when every verifier has one, else the listed order."""
    params = [v.params for v in verifiers]
    if all(p is not None and p > 0 for p in params):
        return [float(p or 0) for p in params], "parameters (count, log scale)", True
    return [float(i) for i in range(len(verifiers))], "verifier (listed order)", False


def _plot_metrics_vs_size(summary: Summary, figure_type: type) -> Any:
    verifiers = summary.verifiers or []
    metrics = [
        (k, t)
        for k, t in (*AGREEMENT_METRICS, *PROBE_METRICS)
        if any(_real(getattr(v, k)) is not None for v in verifiers)
    ]
    if not metrics:
        return None
    xs, xlabel, log = _size_axis(verifiers)
    ncols = 3
    nrows = math.ceil((len(metrics) + 1) / ncols)
    fig = figure_type(figsize=(WIDTH_IN, 2.3 * nrows + 0.6))
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, (key, title) in zip(axes, metrics):
        _metric_panel(ax, verifiers, xs, key, title, log)
    for ax in axes[len(metrics) :]:
        ax.set_axis_off()
    probed = any(k in dict(PROBE_METRICS) for k, _ in metrics)
    _size_legend(axes[0], axes[len(metrics)], probed)
    ref_label = summary.reference.label if summary.reference else None
    title = f"Verifier agreement with the reference ({fmt_text(ref_label)})"
    fig.suptitle(title + (" and off-topic preference" if probed else "") + " by size")
    fig.supxlabel(xlabel, fontsize=9)
    ylabel = "agreement or accuracy (unitless)" if probed else "agreement (unitless)"
    fig.supylabel(ylabel, fontsize=9)
    fig.tight_layout()
    return fig


def _size_legend(ax: Any, legend_ax: Any, probed: bool) -> None:
    handles = [
        ax.plot([], [], "o-", color="C0", label="verifier")[0],
        ax.plot([], [], "o", mfc="none", color="C3", label="reference (1 by definition)")[0],
    ]
    if probed:
        handles.append(ax.plot([], [], "--", color="grey", label="random (0.5)")[0])
    legend_ax.legend(handles=handles, loc="center", frameon=False, fontsize=8)


def _metric_panel(
    ax: Any, verifiers: list[VerifierRow], xs: list[float], key: str, title: str, log: bool
) -> None:
    """One metric against size. A probe has no reference: every verifier, the reference
    included, is a point on the line, and a dashed line marks chance."""
    probe = key in dict(PROBE_METRICS)
    points = [(x, _real(getattr(v, key)), v) for x, v in zip(xs, verifiers)]
    points = sorted(((x, y, v) for x, y, v in points if y is not None), key=lambda p: p[:2])
    line = [(x, y) for x, y, v in points if probe or not v.reference]
    if line:
        ax.plot(*zip(*line), "o-", color="C0", markersize=4)
    if probe:
        _chance_line(ax)
    for x, y, v in points:
        if v.reference and not probe:
            ax.plot([x], [y], "o", mfc="none", color="C3", markersize=6)
        ax.annotate(
            fmt_text(v.label), (x, y), xytext=(3, 3), textcoords="offset points", fontsize=6
        )
    ax.set_title(title, fontsize=9)
    ax.margins(y=0.15)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    _format_size_axis(ax, verifiers, xs, log)


def _chance_line(ax: Any) -> None:
    ax.axhline(CHANCE, color="grey", linestyle="--", linewidth=1)
    # x in axes fraction, y in data: the label sits at the left end of the line
    transform = ax.get_yaxis_transform()
    ax.text(0.02, CHANCE, "random", transform=transform, fontsize=6, color="grey", va="bottom")


def _format_size_axis(ax: Any, verifiers: list[VerifierRow], xs: list[float], log: bool) -> None:
    from matplotlib.ticker import FuncFormatter

    if log:
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: fmt_params(v, "")))
        ax.margins(x=0.25)
    else:
        ax.set_xticks(xs, [fmt_text(v.label) for v in verifiers], rotation=30, ha="right")
        ax.margins(x=0.15)


def _plot_accuracy_vs_throughput(summary: Summary, figure_type: type) -> Any:
    points = [
        (_real(v.criteria_per_s), _real(v.balanced_accuracy), v) for v in summary.verifiers or []
    ]
    points = [(x, y, v) for x, y, v in points if x is not None and y is not None and x > 0]
    if not points:
        return None
    fig = figure_type(figsize=(WIDTH_IN, 4.2))
    ax = fig.subplots()
    for x, y, v in points:
        reference = v.reference
        ax.plot(
            [x],
            [y],
            "o",
            color="C3" if reference else "C0",
            mfc="none" if reference else None,
            markersize=7,
        )
        label = fmt_text(v.label) + (" (reference)" if reference else "")
        ax.annotate(label, (x, y), xytext=(4, 4), textcoords="offset points", fontsize=8)
    xs = [x for x, _, _ in points]
    ax.margins(x=0.2, y=0.15)
    if max(xs) / min(xs) > 20:
        ax.set_xscale("log")
    else:
        ax.set_xlim(left=0)
    ax.set_xlabel("throughput (criteria verified per second)")
    ax.set_ylabel("balanced accuracy vs reference")
    ax.set_title("Verifier accuracy against throughput")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def _plot_overoptimization(summary: Summary, figure_type: type) -> Any:
    from matplotlib.ticker import MaxNLocator

    o = summary.overoptimization
    points = o.checkpoints if o else []
    if o is None or not any(
        _real(c.reward) is not None or _real(c.win_rate) is not None for c in points
    ):
        return None
    steps = [c.step for c in points]
    reward = [_nan(c.reward) for c in points]
    fig = figure_type(figsize=(WIDTH_IN, 4.2))
    ax = fig.subplots()
    ax.plot(steps, reward, "o-", color="C0", label="rubric reward (left)")
    ax.set_xlabel("training step")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("mean rubric reward (0–1)", color="C0")
    right = _win_rate_axis(ax, points)
    flagged = [c for c in points if c.step in set(o.flagged_steps)]
    _mark_flagged(ax, right, flagged)
    handles = ax.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    ax.legend(
        handles=handles,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.14),
        ncol=4,
        frameon=False,
        fontsize=8,
    )
    ax.set_title("Over-optimisation: rubric reward and win rate by checkpoint")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def _win_rate_axis(ax: Any, points: list[Checkpoint]) -> Any:
    """The win rate against the base model by checkpoint, with its 95% CI, on a right axis."""
    steps = [c.step for c in points]
    win = [100 * _nan(c.win_rate) for c in points]
    ci = [c.ci95 or (None, None) for c in points]
    right = ax.twinx()
    right.plot(steps, win, "s-", color="C1", label="win rate vs base (right)")
    lo, hi = ([100 * _nan(b[i]) for b in ci] for i in (0, 1))
    right.fill_between(steps, lo, hi, color="C1", alpha=0.2, label="95% CI")
    # Error bars too: a checkpoint between two unscored ones has no band to sit in.
    bars = [[w - x for w, x in zip(win, lo)], [x - w for w, x in zip(win, hi)]]
    right.errorbar(steps, win, yerr=bars, fmt="none", ecolor="C1", alpha=0.6, capsize=3)
    right.set_ylabel("win rate vs base (%)", color="C1")
    return right


def _mark_flagged(ax: Any, right: Any, flagged: list[Checkpoint]) -> None:
    """Circle the checkpoints where the reward rose while the win rate fell."""
    for i, c in enumerate(flagged):
        ax.axvline(c.step, color="red", linestyle=":", alpha=0.6)
        right.plot(
            [c.step],
            [100 * _nan(c.win_rate)],
            "o",
            color="red",
            markersize=10,
            mfc="none",
            mew=2,
            label="reward up, win rate down" if i == 0 else None,
        )


def _nan(value: Any) -> float:
    x = _real(value)
    return math.nan if x is None else x


def _plot_pairwise(summary: Summary, figure_type: type) -> Any:
    p = summary.pairwise
    if p is None:
        return None
    counts = [
        (k, _real(n) or 0.0) for k, n in (("wins", p.wins), ("ties", p.ties), ("losses", p.losses))
    ]
    if sum(c for _, c in counts) <= 0:
        return None
    fig = figure_type(figsize=(WIDTH_IN, 2.4))
    ax = fig.subplots()
    left = 0.0
    for (name, count), color in zip(counts, ("#2da44e", "#8c959f", "#cf222e")):
        ax.barh([0], [count], left=left, color=color, label=f"{name} ({fmt_number(count)})")
        if count:
            ax.text(
                left + count / 2,
                0,
                fmt_number(count),
                ha="center",
                va="center",
                color="white",
                fontsize=9,
                fontweight="bold",
            )
        left += count
    ax.set_yticks([])
    ax.set_xlim(0, left)
    ax.set_xlabel(f"pairs judged (count); unscored pairs left out: {fmt_number(p.unscored)}")
    ax.set_title(
        f"{fmt_text(p.a)} vs {fmt_text(p.b)}: win rate {fmt_pct(p.win_rate)} "
        f"(95% CI {fmt_ci(p.ci95)}), n = {fmt_number(p.n)}",
        fontsize=10,
    )
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.55), ncol=3, frameon=False, fontsize=8)
    fig.tight_layout()
    return fig


NOT_MEASURED_GREY = "#d0d7de"


def _plot_probe_heat_map(summary: Summary, figure_type: type) -> Any:
    """Verifiers by probe under the profile's score: green where a verifier is honest, red
    where it is fooled, the figure printed in each cell (bold and outlined where the probe
    fails); a probe not measured is grey and hatched."""
    score = probe_score(summary)
    rows = probe_rows(summary.verifiers, score)
    names = probe_names(rows)
    grid = [[probe_figure(probes, n) for n in names] for _, probes in rows]
    if not any(fooled_value(f) is not None for row in grid for f in row):
        return None
    fig = figure_type(figsize=(WIDTH_IN, 1.6 + 0.45 * len(rows)))
    ax = fig.subplots()
    values = [[_nan(fooled_value(f)) for f in row] for row in grid]
    image = ax.imshow(values, cmap=_fooled_colours(), vmin=0.0, vmax=1.0, aspect="auto")
    for i, row in enumerate(grid):
        for j, figure in enumerate(row):
            _heat_map_cell(ax, i, j, figure)
    ax.set_xticks(range(len(names)), [n.replace("_", "-") for n in names], rotation=30,
                  ha="right", fontsize=8)  # fmt: skip
    ax.set_yticks(range(len(rows)), [_label(v) for v, _ in rows], fontsize=8)
    colourbar = fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02)
    colourbar.set_label("fooled (0 = honest, 1 = fully fooled)", fontsize=8)
    ax.set_title(
        f"Reward-hacking probes under {score} scores (outlined: failed; grey: not measured)",
        fontsize=10,
    )
    fig.tight_layout()
    return fig


def _fooled_colours() -> Any:
    """Green (honest) to red (fooled); a missing value (NaN) is grey."""
    from matplotlib import colormaps

    return colormaps["RdYlGn_r"].with_extremes(bad=NOT_MEASURED_GREY)


def _heat_map_cell(ax: Any, row: int, column: int, figure: ProbeFigures | None) -> None:
    """One cell's text: its figure, or "n/a" over a hatched grey square."""
    from matplotlib.patches import Rectangle

    value = fooled_value(figure)
    if value is None:
        ax.add_patch(Rectangle((column - 0.5, row - 0.5), 1, 1, fill=False, hatch="///",
                               edgecolor="#8c959f", linewidth=0))  # fmt: skip
        ax.text(column, row, "n/a", ha="center", va="center", fontsize=7, color="#59636e")
        return
    failed = figure is not None and figure.passed is False
    if failed:
        ax.add_patch(Rectangle((column - 0.45, row - 0.45), 0.9, 0.9, fill=False,
                               edgecolor="black", linewidth=1.5))  # fmt: skip
    colour = "white" if value < 0.15 or value > 0.85 else "black"
    ax.text(column, row, f"{value:.2f}", ha="center", va="center", fontsize=7, color=colour,
            fontweight="bold" if failed else "normal")  # fmt: skip


def _plot_grading_axes(summary: Summary, figure_type: type) -> Any:
    """The overall score and the score on each axis:... tag, one bar per model, with the 95%
    bootstrap interval as whiskers."""
    from matplotlib.patches import Patch

    models = summary.grading.models if summary.grading else []
    if not any(_real(m.score) is not None for m in models):
        return None
    axes = sorted({t.tag for m in models for t in m.tags if tag_group(t.tag) == "axis"})
    rows = ["overall", *axes]
    height = 0.8 / len(models)
    fig = figure_type(figsize=(WIDTH_IN, 0.9 + 0.3 * len(rows) * len(models) + 0.4))
    ax = fig.subplots()
    handles = []
    for j, model in enumerate(models):
        label = fmt_text(model.model) + (" (reference)" if model.reference else "")
        handles.append(Patch(color=f"C{j}", label=label))
        for i, row in enumerate(rows):
            y = i + (j - (len(models) - 1) / 2) * height
            _grade_bar(ax, y, height, f"C{j}", *_grade_of(model, row))
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    ax.invert_yaxis()  # overall on top
    ax.set_xlim(0, 1.12)  # room for the value after a whisker that ends at 1
    ax.set_xticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    ax.set_xlabel("score (0–1): points met over positive points, mean clipped to [0, 1]")
    ax.set_title("Grading by axis per model (whiskers: 95% bootstrap interval)", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.18),
              ncol=min(3, len(models)), frameon=False, fontsize=8)  # fmt: skip
    fig.tight_layout()
    return fig


def _grade_bar(
    ax: Any, y: float, height: float, color: str, score: float | None, ci: tuple[float, float]
) -> None:
    """One model's bar on one row, its whisker and its value; "n/a" where it has no score."""
    if score is None:
        ax.text(0.005, y, "n/a", va="center", fontsize=6, color="grey")
        return
    low, high = ci
    ax.barh([y], [score], height=height, color=color)
    ax.errorbar([score], [y], xerr=[[score - low], [high - score]], fmt="none", ecolor="black",
                capsize=2, lw=0.8)  # fmt: skip
    ax.text(high + 0.01, y, f"{score:.2f}", va="center", fontsize=6)


def _grade_of(model: ModelGrade, row: str) -> tuple[float | None, tuple[float, float]]:
    """A model's score on a row ("overall" or a tag) and its interval (the score itself at
    both ends where the interval is missing)."""
    if row == "overall":
        score, ci = _real(model.score), model.ci95
    else:
        found = next((t for t in model.tags if t.tag == row), None)
        score, ci = (_real(found.score), found.ci95) if found else (None, None)
    bounds = [_real(b) for b in ci or []]
    if score is None or len(bounds) != 2 or None in bounds:
        return score, (score or 0.0, score or 0.0)
    return score, (bounds[0] or 0.0, bounds[1] or 0.0)
