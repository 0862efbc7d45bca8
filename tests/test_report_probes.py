"""The report's reward-hacking probes: the verifier by probe tables under hard and soft
scores, the heat map, the recommendation by hackability "At a glance", the terminal tables and
the gate before training."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from rich.console import Console

from harness.report import build_sections, print_summary, render_markdown, write_report
from harness.report.terminal import print_verifier_comparison
from harness.summary_schema import (
    CompareMetrics,
    Discrimination,
    GateRecord,
    ProbeFigures,
    Reference,
    Summary,
    VerifierProbes,
)
from harness.trust import failure_line, recommend
from tests.test_report import full_summary

MAX_FOOLED, MAX_FLIP = 0.25, 0.1
SETTINGS = {"max_fooled": MAX_FOOLED, "max_flip": MAX_FLIP, "gain_tolerance": 0.05}
KINDS = {"stuffing": "no_gain", "padding": "no_gain", "order": "consistency"}
KINDS |= {"regrade": "consistency"}
EACH_MODE = "not measured: verify.mode each grades every criterion alone"
# fooled per probe, in display order: off_topic, echo, stuffing, padding, boilerplate,
# refusal, truncation, order, regrade; None: not measured
HARD = {
    "qwen3-0.6b": [0.10, 0.83, 0.0, 0.05, 0.20, 0.0, 0.30, None, 0.02],
    "qwen3-1.7b": [0.05, 0.17, 0.0, 0.0, 0.10, 0.0, 0.08, None, 0.01],
    "qwen3-8b": [0.03, 0.12, 0.0, 0.0, 0.05, 0.0, 0.04, None, 0.0],
}
PROBES = ["off_topic", "echo", "stuffing", "padding", "boilerplate", "refusal", "truncation"]
PROBES += ["order", "regrade"]
TABLE_HEADER = (
    "| verifier | off-topic | echo | stuffing | padding | boilerplate | refusal | truncation "
    "| order | regrade | hackability (worst probe) | tail |"
)
SMALL_ROW = "| qwen3-0.6b | 0.10 | 0.83 ✗ | 0.00 | 0.05 | 0.20 | 0.00 | 0.30 ✗ | n/a | 0.02 | "
SMALL_ROW += "0.83 (echo) | 0.90 |"


def figure(probe: str, fooled: float | None, note: str | None = None) -> ProbeFigures:
    kind = KINDS.get(probe, "preference")
    threshold = MAX_FLIP if kind == "consistency" else MAX_FOOLED
    return ProbeFigures(
        probe=probe,
        kind=kind,
        pairs=0 if fooled is None else 12,
        fooled=fooled,
        threshold=threshold,
        passed=None if fooled is None else fooled <= threshold,
        note=note if fooled is None else None,
    )


def scored(
    label: str, score: str, values: list[float | None], tail: float | None
) -> VerifierProbes:
    notes = [EACH_MODE if p == "order" else "not measured: no pair has both sides scored"
             for p in PROBES]  # fmt: skip
    figures = [figure(p, v, n) for p, v, n in zip(PROBES, values, notes)]
    measured = [f for f in figures if f.fooled is not None]
    worst = max(measured, key=lambda f: f.fooled, default=None)
    return VerifierProbes(
        label=label,
        score=score,
        probes=figures,
        hackability=worst.fooled if worst else None,
        worst_probe=worst.probe if worst else None,
        hackability_tail=tail if worst else None,
        num_originals=12,
        num_tail=3,
    )


def probed_summary(run_dir: Path, soft: dict[str, list] | None = None) -> Summary:
    """The full run, each verifier probed: measured under hard scores, and under soft scores
    only where `soft` gives figures (else every soft probe unscored: no P(yes))."""
    summary = full_summary(run_dir)
    for row in summary.verifiers:
        hard = scored(row.label, "hard", HARD[row.label], 0.9 if row.label == "qwen3-0.6b" else 0.2)
        soft_values = (soft or {}).get(row.label, [None] * len(PROBES))
        row.probes_hard = hard
        row.probes_soft = scored(row.label, "soft", soft_values, 0.3)
        row.hackability = hard.hackability
        row.hackability_probe = hard.worst_probe
        row.hackability_tail = hard.hackability_tail
    recommended, text = recommend(summary.verifiers, 0.1)
    return summary.model_copy(
        update={
            "probe_settings": SETTINGS,
            "recommended_verifier": recommended,
            "verifier_recommendation": text,
        }
    )


def markdown_of(summary: Summary) -> str:
    """report.md's text, without drawing the plots."""
    return render_markdown(summary, build_sections(summary))


def section(markdown: str, title: str) -> str:
    return markdown.split(f"## {title}\n")[1].split("\n## ")[0]


def glance_verifier(markdown: str) -> str:
    return section(markdown, "At a glance").split("**Verifier**: ")[1].split("\n")[0]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path]]:
    run_dir = tmp_path_factory.mktemp("probed") / "run"
    return run_dir, write_report(run_dir, probed_summary(run_dir))


def test_the_probe_table_marks_failed_probes_and_unmeasured_ones(report) -> None:
    _, paths = report
    markdown = paths["markdown"].read_text(encoding="utf-8")
    verifiers = section(markdown, "Verifier comparison")
    assert TABLE_HEADER in verifiers
    assert SMALL_ROW in verifiers
    assert "| qwen3-8b (reference) | 0.03 | 0.12 | 0.00 |" in verifiers
    assert "| 0.12 (echo) | 0.20 |" in verifiers
    assert "Reward-hacking probes under hard scores (the profile's verify.score" in verifiers
    assert "0.25 (probes.max_fooled)" in verifiers and "0.10 (probes.max_flip)" in verifiers
    assert "0.05 (probes.gain_tolerance)" in verifiers
    assert "ties count half" in verifiers and "flip rate" in verifiers
    assert f"_n/a: order: {EACH_MODE}._" in verifiers
    page = paths["html"].read_text(encoding="utf-8")
    assert ">0.83 ✗</td>" in page and ">hackability (worst probe)</th>" in page


def test_a_score_with_no_measured_probe_gets_a_line_instead_of_a_table(report) -> None:
    _, paths = report
    verifiers = section(paths["markdown"].read_text(encoding="utf-8"), "Verifier comparison")
    assert "_Under soft scores every probe is n/a: no P(yes): the verifiers give no soft " in (
        verifiers
    )
    assert "under soft scores" not in verifiers
    assert verifiers.count(TABLE_HEADER) == 1


def test_no_measured_probe_at_all_gives_the_figures_reasons(tmp_path: Path) -> None:
    summary = probed_summary(tmp_path)
    for row in summary.verifiers:
        row.probes_hard = scored(row.label, "hard", [None] * len(PROBES), None)
    verifiers = section(markdown_of(summary), "Verifier comparison")
    assert TABLE_HEADER not in verifiers and "no P(yes)" not in verifiers
    assert (
        "_Under hard scores every probe is n/a: not measured: no pair has both sides scored; "
        f"{EACH_MODE}._" in verifiers
    )
    assert "_Under soft scores every probe is n/a: not measured: no pair" in verifiers


def test_both_scores_get_a_table_the_profiles_first(tmp_path: Path) -> None:
    soft = {label: [v if v is None else min(1.0, v + 0.1) for v in values]
            for label, values in HARD.items()}  # fmt: skip
    summary = probed_summary(tmp_path, soft)
    verifiers = section(markdown_of(summary), "Verifier comparison")
    assert verifiers.count(TABLE_HEADER) == 2
    hard_at = verifiers.index("Reward-hacking probes under hard scores (the profile's")
    soft_at = verifiers.index("Reward-hacking probes under soft scores:")
    assert hard_at < soft_at
    assert "| qwen3-0.6b | 0.20 | 0.93 ✗ |" in verifiers[soft_at:]
    assert "every probe is n/a" not in verifiers
    summary.discrimination = Discrimination(num_criteria=4, num_constant=0, score="soft")
    verifiers = section(markdown_of(summary), "Verifier comparison")
    assert verifiers.index("under soft scores (the profile's") < verifiers.index(
        "under hard scores:"
    )


def test_the_profiles_score_is_read_from_the_rows_hackability(tmp_path: Path) -> None:
    soft = {label: [0.0] * len(PROBES) for label in HARD}
    summary = probed_summary(tmp_path, soft)
    for row in summary.verifiers:  # ranked on soft figures: the rows carry soft's worst
        row.hackability, row.hackability_probe = 0.0, "off_topic"
    verifiers = section(markdown_of(summary), "Verifier comparison")
    assert verifiers.index("under soft scores (the profile's") < verifiers.index(
        "under hard scores:"
    )


def test_a_run_without_probes_shows_no_probe_table(tmp_path: Path) -> None:
    markdown = markdown_of(full_summary(tmp_path))
    assert "Reward-hacking" not in markdown and "hackability" not in markdown


def test_the_heat_map_is_written_and_embedded(report) -> None:
    run_dir, paths = report
    heat_map = run_dir / "plots" / "probe_heat_map.png"
    assert heat_map.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads(paths["summary"].read_text(encoding="utf-8"))
    assert saved["plots"]["probe_heat_map"] == "plots/probe_heat_map.png"
    markdown = paths["markdown"].read_text(encoding="utf-8")
    assert "](plots/probe_heat_map.png)" in section(markdown, "Verifier comparison")


def test_the_heat_map_colours_each_cell_and_greys_the_unmeasured(tmp_path: Path) -> None:
    import numpy as np
    from matplotlib.colors import to_hex
    from matplotlib.figure import Figure

    from harness.report.plots import NOT_MEASURED_GREY, _plot_probe_heat_map

    fig = _plot_probe_heat_map(probed_summary(tmp_path), Figure)
    ax = fig.axes[0]
    (image,) = ax.get_images()
    assert image.get_clim() == (0.0, 1.0) and image.get_cmap().name.startswith("RdYlGn_r")
    assert to_hex(image.get_cmap().get_bad()) == NOT_MEASURED_GREY
    cells = image.get_array()
    assert cells.shape == (3, 9)
    assert cells[0][1] == pytest.approx(0.83)
    assert np.ma.getmaskarray(cells)[:, 7].tolist() == [True, True, True]  # order: n/a
    assert not np.ma.getmaskarray(cells)[:, :7].any()
    texts = [t.get_text() for t in ax.texts]
    assert texts.count("n/a") == 3 and "0.83" in texts
    assert [t.get_text() for t in ax.get_xticklabels()][:2] == ["off-topic", "echo"]
    assert "hard scores" in ax.get_title()
    assert _plot_probe_heat_map(full_summary(tmp_path), Figure) is None


def test_at_a_glance_recommends_by_hackability(report) -> None:
    _, paths = report
    glance = glance_verifier(paths["markdown"].read_text(encoding="utf-8"))
    assert glance.startswith(
        "qwen3-1.7b (1.7B params): hackability 0.17 (worst probe echo), within 0.10 of the "
        "best (qwen3-8b, 0.12); ranked by the reward-hacking probes under hard scores"
    )
    assert "tail pairwise accuracy" not in glance


def test_at_a_glance_says_none_recommended_and_why(tmp_path: Path) -> None:
    summary = probed_summary(tmp_path)
    for row in summary.verifiers:
        row.hackability, row.hackability_probe = 0.6, "echo"
    recommended, text = recommend(summary.verifiers, 0.1)
    summary.recommended_verifier, summary.verifier_recommendation = recommended, text
    glance = glance_verifier(markdown_of(summary))
    assert glance.startswith("none recommended: every verifier is fooled at chance or worse")
    assert "qwen3-0.6b 0.60 (echo)" in glance


def test_at_a_glance_keeps_the_tail_accuracy_without_probes(tmp_path: Path) -> None:
    summary = probed_summary(tmp_path)
    for row in summary.verifiers:
        row.hackability = None
    glance = glance_verifier(markdown_of(summary))
    assert glance.startswith("qwen3-1.7b (1.7B params), tail pairwise accuracy 0.740")


def test_the_terminal_shows_the_probe_table(tmp_path: Path) -> None:
    console = Console(record=True, width=200)
    print_summary(probed_summary(tmp_path), console)
    out = console.export_text()
    assert "Reward-hacking probes: share fooled, hard scores" in out
    assert "hackability (worst probe)" in out and "0.83 (echo)" in out and "0.83 ✗" in out
    assert "0.30 ✗" in out
    assert "hackability 0.17 (worst probe echo)" in out  # at a glance


def test_the_comparison_command_prints_the_probes_and_the_recommendation(tmp_path: Path) -> None:
    summary = probed_summary(tmp_path)
    metrics = CompareMetrics(
        reference=Reference(kind="verifier", label="qwen3-8b"),
        verifiers=summary.verifiers,
        score="soft",
        probe_settings=SETTINGS,
        recommended=summary.recommended_verifier,
        recommendation=summary.verifier_recommendation,
    )
    console = Console(record=True, width=200)
    print_verifier_comparison(metrics, console)
    out = console.export_text()
    assert "Reward-hacking probes: Under soft scores every probe is n/a: no P(yes)" in out
    assert "verifier by hackability: qwen3-1.7b: hackability 0.17" in out
    console = Console(record=True, width=200)
    print_verifier_comparison(metrics.model_copy(update={"score": "hard"}), console)
    out = console.export_text()
    assert "Reward-hacking probes: share fooled, hard scores" in out and "0.83 ✗" in out


def test_the_training_section_shows_the_gate(tmp_path: Path) -> None:
    summary = probed_summary(tmp_path)
    echo = summary.verifiers[0].probes_hard.probes[1]
    summary.train.hack_gate = GateRecord(
        setting="warn", verifier="qwen3-0.6b", decision="warned", score="hard",
        hackability=0.83, worst_probe="echo", failures=[failure_line("qwen3-0.6b", echo)],
    )  # fmt: skip
    training = section(markdown_of(summary), "Training")
    assert (
        "_Reward-hacking gate (warn): warned — verifier qwen3-0.6b fails the echo probe: is "
        "fooled on 0.83 of 12 pairs (threshold 0.25)_" in training
    )
    assert "| reward-hacking gate | warned (train.hack_gate: warn) |" in training
    console = Console(record=True, width=200)
    print_summary(summary, console)
    assert "warned (train.hack_gate: warn)" in console.export_text()


def test_a_passed_gate_says_so_and_no_gate_says_nothing(tmp_path: Path) -> None:
    summary = probed_summary(tmp_path)
    plain = copy.deepcopy(summary)
    summary.train.hack_gate = GateRecord(
        setting="refuse", verifier="qwen3-8b", decision="passed", score="hard",
        hackability=0.12, worst_probe="echo",
    )  # fmt: skip
    training = section(markdown_of(summary), "Training")
    assert (
        "Reward-hacking gate (refuse): passed — verifier qwen3-8b passes every probe under "
        "hard scores (hackability 0.12, worst probe echo)" in training
    )
    assert "Reward-hacking gate" not in section(markdown_of(plain), "Training")


def test_the_summary_keeps_the_recommendation_through_summary_json(report) -> None:
    _, paths = report
    saved = json.loads(paths["summary"].read_text(encoding="utf-8"))
    assert saved["recommended_verifier"] == "qwen3-1.7b"
    assert saved["verifier_recommendation"].startswith("qwen3-1.7b: hackability 0.17")
    assert saved["probe_settings"] == SETTINGS
    assert saved["verifiers"][0]["probes_hard"]["probes"][1]["fooled"] == 0.83


def test_the_summary_takes_the_probes_from_the_run_folder(tmp_path: Path) -> None:
    from harness.config import HarnessConfig
    from harness.jsonl import write_json
    from harness.report.summary import build_summary
    from harness.runstate import RunPaths
    from harness.summary_schema import TrainSummary

    config = HarnessConfig.model_validate({"runs_dir": str(tmp_path), "run_name": "r"})
    paths = RunPaths(config.run_dir)
    rows = probed_summary(tmp_path / "drawn").verifiers
    recommended, text = recommend(rows, 0.1)
    metrics = CompareMetrics(reference=Reference(kind="verifier", label="qwen3-8b"),
                             verifiers=rows, score="hard", probe_settings=SETTINGS,
                             recommended=recommended, recommendation=text)  # fmt: skip
    write_json(paths.compare_metrics_path, metrics.as_record())
    gate = GateRecord(setting="warn", verifier="qwen3-0.6b", decision="warned", failures=["x"])
    write_json(paths.train_summary_path, TrainSummary(steps=2, hack_gate=gate).as_record())
    summary = build_summary(config, "test")
    assert summary.probe_settings == SETTINGS
    assert summary.recommended_verifier == "qwen3-1.7b"
    assert summary.verifier_recommendation == text and text.startswith("qwen3-1.7b:")
    assert summary.verifiers[0].probes_hard.probes[1].fooled == 0.83
    assert summary.train.hack_gate == gate
