"""The report: files, a self-contained page, every section, formatted numbers, absent stages."""

from __future__ import annotations

import base64
import copy
import html
import json
import re
from pathlib import Path

import pytest
from rich.console import Console

from harness.report import pick_verifier, print_summary, write_report
from harness.summary_schema import (
    Checkpoint,
    HardPairwise,
    Machine,
    MonteCarlo,
    Overoptimization,
    PairwiseSummary,
    Peak,
    Reference,
    RefineRow,
    RunFacts,
    StageRow,
    StepSplit,
    Summary,
    Theory,
    TrainSummary,
    Unscored,
    VerifierRow,
    load_summary,
)

SECTIONS = [
    "Does this run measure anything?",
    "At a glance",
    "Stages",
    "Grading",
    "Pairwise judge",
    "Verifier comparison",
    "Refinement",
    "Training",
    "Over-optimisation",
    "Theory",
    "Unscored",
]
STAGE_PLOTS = {
    "theory_fig2a": "plots/theory_fig2a.png",
    "theory_fig2b": "plots/theory_fig2b.png",
    "theory_training": "plots/theory_training.png",
    "train_reward": "train/reward.png",
}


def draw_png(path: Path, title: str) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4, 3))
    ax = fig.subplots()
    ax.plot([0, 1, 2, 3], [0.2, 0.5, 0.6, 0.55], "o-")
    ax.set_title(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=60)


OFF_TOPIC = {"qwen3-0.6b": 0.81, "qwen3-1.7b": 0.93, "qwen3-8b": 0.97}


def verifier(label: str, params: int, reference: bool, scale: float) -> VerifierRow:
    metrics = {
        "accuracy": 0.86,
        "balanced_accuracy": 0.84,
        "kappa": 0.68,
        "f1_yes": 0.88,
        "f1_no": 0.80,
        "spearman": 0.79,
        "pairwise_accuracy": 0.81,
        "tail_pairwise_accuracy": 0.74,
        "rtd_pair_agreement": 0.77,
    }
    return VerifierRow(
        label=label,
        model=f"Qwen/{label}",
        params=params,
        reference=reference,
        **{k: 1.0 if reference else round(v * scale, 4) for k, v in metrics.items()},
        unscored_rate=0.004 if not reference else 0.0,
        criteria_per_s=2400.0 / (params / 1e8),
        tokens_per_s=52000.0 / (params / 1e8),
        latency_p50_s=0.03 * params / 1e8,
        latency_p95_s=0.07 * params / 1e8,
        peak_memory_mb=2.1 * params / 1e6,
        num_verdicts=12345,
        num_pairs=1800,
        num_tail_pairs=420,
        # the probe needs no reference: the reference has its own value, not 1 by definition
        off_topic_accuracy=OFF_TOPIC.get(label),
        off_topic_pairs=1600,
        off_topic_ties=12,
        off_topic_unscored=3,
    )


def kl_row(kl: float, beta: float, values: list[float], error: float) -> dict:
    names = ["Top 10% wrong", "Top 25% wrong", "Top 50% wrong", "Worst 50% wrong"]
    names += ["Worst 90% wrong"]
    return {
        "kl": kl,
        "beta": beta,
        "Correct": values[0],
        "Reversed": round(1 - values[0], 3),
        **dict(zip(names, values[1:])),
        "monte_carlo_max_abs_error": error,
    }


def stage(name: str, status: str, seconds: float | None, counts: dict | None) -> StageRow:
    return StageRow(stage=name, status=status, seconds=seconds, counts=counts)


def full_summary(run_dir: Path) -> Summary:
    """A run with every stage on: 3 verifiers, 2 refinement rounds, training, judge, theory."""
    for name, rel in STAGE_PLOTS.items():
        draw_png(run_dir / rel, name)
    return Summary(
        schema_version=1,
        run=RunFacts(
            name="health-demo",
            dir=str(run_dir),
            profile="gpu-small",
            created="2026-03-14T09:26:53+00:00",
            harness_version="0.1.0",
            machine=Machine(cpu="AMD EPYC 9654", cores=16, memory_gb=128.0, gpu="H100"),
        ),
        stages=[
            stage("rollouts", "ran", 812.44, {"candidates": 3200}),
            stage("propose", "reused", 0.0, {"rubrics": 200}),
            stage("refine", "ran", 1493.2, {"refined": 388}),
            stage("verify", "ran", 301.5, {"verdicts": 41230}),
            stage("compare", "ran", 95.0, {"verifiers": 3}),
            stage("train", "ran", 5402.9, {"steps": 200}),
            stage("judge", "ran", 640.1, {"pairs": 200}),
            stage("theory", "ran", 3.2, {"rows": 4}),
        ],
        unscored=Unscored(
            rollouts=0,
            propose=1,
            refine=3,
            verify=17,
            compare={"qwen3-0.6b": 12, "qwen3-1.7b": 4, "qwen3-8b": 0},
            train=9,
            judge=2,
        ),
        refine=[
            RefineRow(
                iteration=i,
                num_prompts=200 - 2 * i,
                num_refined=196 - 3 * i,
                num_failed=1 + i,
                tied_before=64 - 9 * i,
                separated_after=51 - 8 * i,
                num_criteria_mean=11.4 + 1.7 * i,
                num_unscored_verdicts=i,
            )
            for i in (1, 2)
        ],
        verifiers=[
            verifier("qwen3-0.6b", 600_000_000, False, 0.9),
            verifier("qwen3-1.7b", 1_700_000_000, False, 1.0),
            verifier("qwen3-8b", 8_000_000_000, True, 1.0),
        ],
        reference=Reference(kind="verifier", label="qwen3-8b"),
        pairwise=PairwiseSummary(
            a="policy-step-200",
            b="base",
            judge="qwen3-8b",
            win_rate=0.625,
            ci95=[0.551, 0.695],
            n=200,
            wins=110,
            losses=60,
            ties=30,
            unscored=2,
            position_flip_rate=0.145,
            length_controlled_win_rate=0.588,
            mean_length_a=1843.2,
            mean_length_b=1402.7,
        ),
        train=TrainSummary(
            steps=200,
            reward_first=0.412,
            reward_last=0.587,
            peak_memory_mb=61234.0,
            adapter_weights_changed=True,
            base_weights_unchanged=True,
            step_split=StepSplit(
                step_s=27.0, generation_s=14.1, reward_s=9.4, update_s=3.5, verifier_share=0.348
            ),
        ),
        overoptimization=Overoptimization(
            checkpoints=[
                Checkpoint(step=0, reward=0.412, win_rate=0.5, ci95=[0.43, 0.57]),
                Checkpoint(step=50, reward=0.49, win_rate=0.58, ci95=[0.51, 0.65]),
                Checkpoint(step=100, reward=0.55, win_rate=0.66, ci95=[0.59, 0.73]),
                Checkpoint(step=150, reward=0.57, win_rate=None, ci95=None),
                Checkpoint(step=200, reward=0.587, win_rate=0.625, ci95=[0.551, 0.695]),
            ],
            flagged=True,
            flagged_steps=[200],
            note="Checkpoint 150 has no win rate: its judge calls were unscored.",
        ),
        theory=Theory(
            kl_table=[
                kl_row(0.5, 0.2428, [0.774, 0.771, 0.746, 0.631, 0.756, 0.472], 0.0007),
                kl_row(1.0, 0.1361, [0.865, 0.858, 0.804, 0.617, 0.858, 0.563], 0.0006),
                kl_row(2.0, 0.0498, [0.950, 0.923, 0.798, 0.550, 0.950, 0.843], 0.0004),
                kl_row(4.0, 0.0067, [0.993, 0.907, 0.757, 0.507, 0.993, 0.993], 0.0002),
            ],
            monte_carlo=MonteCarlo(n=200000, max_abs_error=0.0007),
            peaks={"Top 25% wrong": Peak(kl=1.37, win_rate=0.813)},
        ),
        plots=dict(STAGE_PLOTS),
    )


def minimal_summary() -> Summary:
    """Rollouts and rubrics only: the later stages were switched off or never ran."""
    return Summary(
        run=RunFacts(name="tiny", dir=None, profile=None, created=None, machine=None),
        stages=[
            stage("rollouts", "ran", 1.25, {"candidates": 8}),
            stage("propose", "ran", None, None),
            stage("train", "off", None, {}),
            stage("judge", "off", None, {}),
            stage("overoptimization", "off", 0.0, {}),
            stage("theory", "not run", 0.0, {}),
            stage("compare", "skipped", 0.0, {}),
        ],
        unscored=Unscored(rollouts=0, propose=None),
        refine=None,
        verifiers=None,
        reference=None,
        pairwise=None,
        train=None,
        overoptimization=None,
        theory=None,
        plots=None,
    )


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, dict[str, Path]]:
    """One report for the tests that only read it (drawing its plots takes seconds)."""
    run_dir = tmp_path_factory.mktemp("full") / "run"
    summary = full_summary(run_dir)
    return run_dir, summary, write_report(run_dir, summary)


def text_of(paths: dict[str, Path], key: str) -> str:
    return paths[key].read_text(encoding="utf-8")


def test_writes_every_file_and_the_summary_plots(full) -> None:
    run_dir, _, paths = full
    assert set(paths) == {"summary", "markdown", "html"}
    assert all(p.is_file() and p.parent == run_dir for p in paths.values())
    for name in ("verifier_metrics_vs_size", "verifier_accuracy_vs_throughput"):
        assert (run_dir / "plots" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (run_dir / "plots" / "overoptimization.png").is_file()
    assert (run_dir / "plots" / "pairwise.png").is_file()
    assert not list(run_dir.rglob("*.tmp"))


def test_summary_json_round_trips_with_the_new_plots(full) -> None:
    run_dir, summary, paths = full
    original = copy.deepcopy(summary)
    saved = json.loads(text_of(paths, "summary"))
    assert saved["plots"]["pairwise"] == "plots/pairwise.png"
    assert saved["plots"]["train_reward"] == "train/reward.png"
    assert saved["schema_version"] == 1
    assert saved == {**summary.as_record(), "plots": saved["plots"]}
    assert summary == original  # the caller's dict is left alone
    assert text_of(paths, "summary").startswith('{\n  "overoptimization"')  # sorted, pretty
    again = write_report(run_dir, load_summary(paths["summary"]))
    assert json.loads(again["summary"].read_text(encoding="utf-8")) == saved


def test_html_is_self_contained(full) -> None:
    run_dir, _, paths = full
    page = text_of(paths, "html")
    saved = json.loads(text_of(paths, "summary"))
    assert 'src="plots/' not in page
    assert "http://" not in page and "https://" not in page
    assert "<link" not in page and "<script" not in page and "@import" not in page
    assert page.count("data:image/png;base64,") == len(saved["plots"]) == 8
    for rel in saved["plots"].values():
        assert base64.b64encode((run_dir / rel).read_bytes()).decode() in page


def test_every_section_in_order_in_both_documents(full) -> None:
    _, _, paths = full
    markdown, page = text_of(paths, "markdown"), text_of(paths, "html")
    md_headings = re.findall(r"^## (.+)$", markdown, flags=re.MULTILINE)
    html_headings = re.findall(r"<h2 id=\"[^\"]+\">([^<]+)<a", page)
    assert md_headings == SECTIONS
    assert html_headings == SECTIONS
    assert markdown.startswith("# Run report: health-demo")
    for anchor in ("at-a-glance", "pairwise-judge", "over-optimisation", "unscored"):
        assert f'href="#{anchor}"' in page and f'id="{anchor}"' in page


def test_numbers_are_formatted_for_a_reader(full) -> None:
    _, _, paths = full
    for text in (text_of(paths, "markdown"), text_of(paths, "html")):
        assert "62.5%" in text and "55.1–69.5%" in text and "n = 200" in text
        assert "58.8%" in text  # length-controlled win rate
        assert "0.412 → 0.587 over 200 steps" in text
        assert "12,345" in text and "41,230" in text and "61,234 MB" in text
        assert "5,402.9" in text  # seconds: one decimal, thousands separators
        assert "0.774" in text and "0.813" in text and "0.2428" not in text
        assert "1.7B" in text and "600M" in text
        assert "qwen3-8b (reference)" in text
        assert "reward up, win rate down" in text
        assert "never counted as" in text
        assert "None" not in text and "nan" not in text.lower().split()


def test_at_a_glance_picks_the_smallest_verifier_near_the_best(full, tmp_path: Path) -> None:
    _, summary, paths = full
    smallest, best = pick_verifier(summary)
    assert smallest is best and best.label == "qwen3-1.7b"  # 0.6b is 0.074 behind
    assert (
        "qwen3-1.7b (1.7B params), tail pairwise accuracy 0.740; measured against the "
        "reference verifier qwen3-8b" in text_of(paths, "markdown")
    )
    close = copy.deepcopy(summary)
    close.verifiers[0].tail_pairwise_accuracy = 0.70
    markdown = text_of(write_report(tmp_path, close), "markdown")
    assert (
        "qwen3-0.6b (600M params), tail pairwise accuracy 0.700, within 0.05 of the best "
        "(qwen3-1.7b, 0.740)" in markdown
    )


@pytest.mark.parametrize(
    ("tails", "expected"),
    [
        ([0.70, 0.74, 1.0], "qwen3-0.6b"),  # within 0.05 of the best: smallest wins
        ([0.60, 0.74, 1.0], "qwen3-1.7b"),  # too far behind
        ([None, 0.74, 1.0], "qwen3-1.7b"),  # unscored: left out
    ],
)
def test_pick_verifier_ignores_the_reference(tails: list, expected: str, tmp_path: Path) -> None:
    summary = full_summary(tmp_path)
    for v, tail in zip(summary.verifiers, tails):
        v.tail_pairwise_accuracy = tail
    assert pick_verifier(summary)[0].label == expected


def test_at_a_glance_without_tail_pairs_gives_the_off_topic_probe(tmp_path: Path) -> None:
    summary = full_summary(tmp_path)
    for v in summary.verifiers:
        v.tail_pairwise_accuracy = None
        v.num_tail_pairs = 0
    markdown = text_of(write_report(tmp_path, summary), "markdown")
    glance = markdown.split("## At a glance")[1].split("##")[0]
    assert "no high-reward tail pairs in this run" in glance
    assert "off-topic preference accuracy qwen3-0.6b " in glance
    assert "Not run" not in glance.split("**Verifier**")[1].split("\n")[0]


def test_text_from_the_summary_is_escaped(tmp_path: Path) -> None:
    summary = full_summary(tmp_path)
    summary.verifiers[1].label = "<script>alert('x')</script>"
    summary.pairwise.a = "policy <b>bold</b> & co"
    paths = write_report(tmp_path, summary)
    page, markdown = text_of(paths, "html"), text_of(paths, "markdown")
    assert "<script" not in page and "<b>" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "policy &lt;b&gt;bold&lt;/b&gt; &amp; co" in page
    assert "<script" not in markdown and "&lt;script&gt;" in markdown


def test_minimal_summary_says_what_did_not_run(tmp_path: Path) -> None:
    paths = write_report(tmp_path, minimal_summary())
    saved = json.loads(text_of(paths, "summary"))
    assert saved["plots"] == {}
    assert not (tmp_path / "plots").exists()
    for text in (text_of(paths, "markdown"), html.unescape(text_of(paths, "html"))):
        assert "None" not in text
        assert "Stage off: train was switched off" in text
        assert "Stage off: judge was switched off" in text
        assert "Stage off: overoptimization was switched off" in text
        assert "Skipped: compare had nothing to do, so no verifier results" in text
        assert "| theory | not run | n/a |" in text or "<td>not run</td>" in text
        assert "Not run: this run's summary has no refinement iterations" in text
        assert "Not run: this run's summary has no theory results" in text
        assert "data:image" not in text
    assert re.findall(r"^## (.+)$", text_of(paths, "markdown"), flags=re.MULTILINE) == SECTIONS


def test_unscored_values_read_unscored(tmp_path: Path) -> None:
    summary = full_summary(tmp_path)
    summary.pairwise.win_rate = None
    summary.pairwise.ci95 = None
    summary.pairwise.length_controlled_win_rate = float("nan")
    summary.train.reward_first = None
    summary.verifiers[0].kappa = None
    markdown = text_of(write_report(tmp_path, summary), "markdown")
    assert "policy-step-200 vs base: unscored (95% CI unscored, n = 200)" in markdown
    assert "unscored → 0.587" in markdown
    assert "| qwen3-0.6b | 600M | 0.774 | 0.756 | unscored |" in markdown
    assert "None" not in markdown and "nan%" not in markdown


def test_off_topic_accuracy_sits_beside_agreement(full, tmp_path: Path) -> None:
    _, _, paths = full
    markdown = text_of(paths, "markdown")
    assert "| RTD pair agr. | off-topic acc |" in markdown
    assert "| 0.770 | 0.930 |" in markdown  # qwen3-1.7b: RTD, then the probe
    assert "| 1.000 | 0.970 |" in markdown  # the reference's own probe value
    assert "| off-topic pairs | off-topic unscored |" in markdown and "| 1,600 | 3 |" in markdown
    assert "0.5 is random" in markdown and ">off-topic acc</th>" in text_of(paths, "html")
    summary = full_summary(tmp_path)
    before_probe = summary.verifiers[0].as_record()
    del before_probe["off_topic_accuracy"]  # a run from before the probe
    summary.verifiers[0] = VerifierRow.model_validate({**before_probe, "off_topic_unscored": 0})
    summary.verifiers[1].off_topic_accuracy = None  # every pair unscored
    markdown = text_of(write_report(tmp_path, summary), "markdown")
    assert "| 0.693 | n/a |" in markdown and "| 0.770 | unscored |" in markdown


def test_the_size_plot_shows_the_probe_against_chance(tmp_path: Path) -> None:
    from matplotlib.figure import Figure

    from harness.report.plots import _plot_metrics_vs_size

    fig = _plot_metrics_vs_size(full_summary(tmp_path), Figure)
    (panel,) = [ax for ax in fig.axes if ax.get_title() == "off-topic preference accuracy"]
    chance = [line for line in panel.get_lines() if line.get_linestyle() == "--"]
    assert [list(line.get_ydata()) for line in chance] == [[0.5, 0.5]]
    assert "random" in [t.get_text() for t in panel.texts]
    (series,) = [line for line in panel.get_lines() if line.get_linestyle() == "-"]
    assert list(series.get_ydata()) == [0.81, 0.93, 0.97]  # the reference is on the line
    legend = [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().texts]
    assert "random (0.5)" in legend


def test_missing_plot_file_is_reported_not_fatal(tmp_path: Path) -> None:
    summary = full_summary(tmp_path)
    (tmp_path / "train" / "reward.png").unlink()
    page = text_of(write_report(tmp_path, summary), "html")
    assert "Plot missing: train/reward.png" in page


def test_print_summary_shows_the_run(tmp_path: Path) -> None:
    console = Console(record=True, width=120)
    print_summary(full_summary(tmp_path), console)
    out = console.export_text()
    assert "62.5%" in out and "55.1–69.5%" in out
    assert "qwen3-8b (reference)" in out and "0.813" not in out  # peaks stay in the report
    assert "topic" in out and "0.970" in out  # the probe, the reference included
    for title in ("Stages", "Pairwise judge", "Verifier comparison", "Refinement", "Training"):
        assert title in out
    assert "Theory: win rate by KL" in out and "Unscored" in out


def test_print_summary_minimal_and_markup_safe() -> None:
    console = Console(record=True, width=120)
    summary = minimal_summary()
    summary.stages[0].stage = "[bold red]rollouts[/]"
    print_summary(summary, console)
    out = console.export_text()
    assert "None" not in out
    assert "[bold red]rollouts[/]" in out
    assert "Pairwise judge: Stage off" in out and "Refinement: Not run" in out


def test_a_soft_judge_shows_the_hard_counts_and_both_flip_rates(tmp_path: Path) -> None:
    summary = full_summary(tmp_path)
    hard = HardPairwise(n=200, wins=40, ties=150, losses=10, unscored=2, win_rate=0.575,
                        ci95=[0.55, 0.6])  # fmt: skip
    summary.pairwise = summary.pairwise.model_copy(
        update={"score": "soft", "soft_position_flip_rate": 0.25, "hard": hard}
    )
    markdown = text_of(write_report(tmp_path, summary), "markdown")
    for row in ("| scored by | soft: P(A) averaged over both orders |",
                "| hard verdicts: win rate of A (95% CI) | 57.5% (55.0–60.0%) |",
                "| hard verdicts: wins / ties / losses | 40 / 150 / 10 |",
                "| position flip rate, hard verdicts | 14.5% |",
                "| position flip rate, soft P(A) (lean taken out) | 25.0% |"):  # fmt: skip
        assert row in markdown
    assert "Scored soft:" in markdown
    console = Console(record=True, width=120)
    print_summary(summary, console)
    out = console.export_text()
    assert "position flip rate, soft P(A)" in out and "25.0%" in out


def test_a_hard_judge_keeps_its_one_flip_rate(full) -> None:
    _, _, paths = full
    markdown = text_of(paths, "markdown")
    assert "| position flip rate | 14.5% |" in markdown
    assert "soft P(A)" not in markdown and "Scored soft" not in markdown
