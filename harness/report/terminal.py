"""The terminal view: the run at a glance and one rich table per stage, and the tables the
single commands print when they end."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table as RichTable
from rich.text import Text

from harness.report.format import fmt_metric
from harness.report.render import document_meta, document_title
from harness.report.sections import SIGNAL_TITLE, glance_items
from harness.report.tables import (
    Table,
    _absent,
    clinicians_table,
    endpoints_table,
    grading_table,
    other_score,
    pairwise_table,
    probe_score,
    probe_table,
    refine_table,
    stages_table,
    theory_table,
    train_table,
    unmeasured_probes_text,
    unscored_table,
    verifier_agreement_table,
    verifier_compact_table,
    verifier_speed_table,
)
from harness.summary_schema import CompareMetrics, Grading, Summary, VerifierRow


def print_summary(summary: Summary, console: Console) -> None:
    """The run at a glance in the terminal: one rich table per stage that has results."""
    console.print(Text(document_title(summary), style="bold"))
    for key, value in document_meta(summary):
        console.print(Text.assemble((f"{key}: ", "dim"), value))
    print_signal(summary, console)
    for label, text in glance_items(summary):
        console.print(Text.assemble(("• ", "dim"), (f"{label}: ", "bold"), text))
    views = (
        ("Stages", stages_table, (), "stage records"),
        ("Grading", grading_table, ("verify",), "graded responses"),
        ("Pairwise judge", pairwise_table, ("judge",), "pairwise results"),
        ("Verifier comparison", verifier_compact_table, ("compare",), "verifier results"),
        ("Refinement", refine_table, ("refine",), "refinement iterations"),
        ("Training", train_table, ("train",), "training results"),
        ("Theory: win rate by KL", theory_table, ("theory",), "theory results"),
        ("Unscored", unscored_table, (), "unscored counts"),
    )
    for title, build, stages, what in views:
        table = build(summary)
        if table is None:
            note = _absent(summary, stages, what).text
            console.print(Text(f"{title}: {note}", style="dim italic"))
            continue
        console.print(rich_table(title, table))
        if build is verifier_compact_table:
            score = probe_score(summary)
            for scored in (score, other_score(score)):  # the profile's score first
                print_probes(summary.verifiers, scored, console)
    endpoints = endpoints_table(summary)
    if endpoints is not None:  # only a run whose roles used endpoint pools
        console.print(rich_table("Endpoints", endpoints))


def print_signal(summary: Summary, console: Console) -> None:
    """ "Does this run measure anything?": a line per check, and why and what to change for
    each that carries no signal."""
    rows = summary.signal or []
    if not rows:
        return
    console.print(Text(SIGNAL_TITLE, style="bold"))
    mark = {True: ("ok  ", "green"), False: ("NO  ", "bold red"), None: ("--  ", "dim")}
    for row in rows:
        name = row.signal + (f": {row.subject}" if row.subject else "")
        console.print(Text.assemble(mark[row.ok], (f"{name}: ", "bold"), row.shown))
        if row.ok is False:
            console.print(Text(f"      {row.why}; change: {row.fix}", style="dim"))


def print_probes(verifiers: list[VerifierRow] | None, score: str, console: Console) -> None:
    """The verifier by probe table under `score` (✗: a failed probe), or why it has no
    figure; nothing where the verifiers were not probed."""
    table = probe_table(verifiers, score)
    if table is not None:
        title = f"Reward-hacking probes: share fooled, {score} scores (✗ failed)"
        console.print(folded_table(title, transposed(table)))
        return
    why = unmeasured_probes_text(verifiers, score)
    if why:
        console.print(Text(f"Reward-hacking probes: {why}", style="dim italic"))


def transposed(table: Table) -> Table:
    """One row per column of `table` and one column per row: a wide table of few rows (the
    verifiers by probe) fits a terminal as probes by verifiers."""
    headers = ["", *(row[0] for row in table.rows)]
    rows = [[header, *(row[j] for row in table.rows)] for j, header in enumerate(table.headers)]
    return Table(headers, rows[1:], "l" + "r" * len(table.rows))


def folded_table(title: str, table: Table) -> RichTable:
    """A table whose long headers and cells fold onto more lines rather than being cut."""
    out = RichTable(title=title, title_justify="left", title_style="bold")
    for header, align in zip(table.headers, table.align):
        out.add_column(Text(header), justify="right" if align == "r" else "left", overflow="fold")
    for row in table.rows:
        out.add_row(*(Text(cell) for cell in row))
    return out


LABEL_WIDTH = 40


def rich_table(title: str, table: Table) -> RichTable:
    """Cells go in as Text, so brackets in labels are never read as rich markup."""
    out = RichTable(title=title, title_justify="left", title_style="bold")
    for i, (header, align) in enumerate(zip(table.headers, table.align)):
        if i == 0:  # labels: only a long one (a HealthBench cluster tag) folds
            longest = max([len(header), *(len(row[0]) for row in table.rows)])
            fold = longest > LABEL_WIDTH
            out.add_column(Text(header), no_wrap=not fold, max_width=LABEL_WIDTH if fold else None,
                           overflow="fold" if fold else "ellipsis")  # fmt: skip
        else:
            out.add_column(Text(header), justify="right" if align == "r" else "left")
    for row in table.rows:
        out.add_row(*(Text(cell) for cell in row))
    return out


# ------------------------------------------------- what the single commands print as they end


def stage_results_table(results: list) -> RichTable:
    """The stages one command ran or reused, with their counts."""
    table = RichTable("stage", "status", "counts", "seconds", title="rubric pipeline")
    for result in results:
        counts = ", ".join(f"{k} {v}" for k, v in result.counts.items() if k != "seconds")
        status = "reused" if result.reused else "ran"
        table.add_row(result.stage, status, counts, f"{result.seconds:.1f}")
    return table


def import_table(kind: str, counts: dict[str, int]) -> RichTable:
    """What `harness import` brought in, by kind of record."""
    table = RichTable("records", "count", title=f"imported: {kind}", title_justify="left")
    for name, count in counts.items():
        table.add_row(name.replace("_", " "), str(count))
    return table


def refine_iterations_table(stats: list) -> RichTable:
    """One row per Refinement-through-Differentiation iteration (`IterationStats`)."""
    table = RichTable("iteration", "prompts", "refined", "failed", "tied before",
                      "separated after", "criteria (mean)", "unscored",
                      title="refinement-through-differentiation")  # fmt: skip
    for s in stats:
        table.add_row(*map(str, (s.iteration, s.num_prompts, s.num_refined, s.num_failed,
                                 s.tied_before, s.separated_after, s.num_criteria_mean,
                                 s.num_unscored_verdicts)))  # fmt: skip
    return table


def generate_table(result: Any, role_name: str) -> RichTable:
    """Requests, tokens and speed of `harness generate` (a `GenerateResult`)."""
    table = RichTable("requests", "failed", "in tok", "out tok", "s", "req/s", "out tok/s",
                      "cached", title=f"generate: {role_name}")  # fmt: skip
    seconds = max(result.seconds, 1e-9)
    table.add_row(
        str(result.num_requests),
        str(result.num_failed),
        str(result.prompt_tokens),
        str(result.completion_tokens),
        f"{result.seconds:.1f}",
        f"{result.num_requests / seconds:.1f}",
        f"{result.completion_tokens / seconds:.0f}",
        str(result.cache_hits),
    )
    return table


def training_table(result: Any) -> RichTable:
    """Steps, rewards, weights and the step split of `harness train` (a `TrainResult`)."""
    split = result.step_split
    table = RichTable("", "", title="LoRA GRPO", show_header=False)
    for name, value in (
        ("steps", str(result.steps)),
        ("reward, first step", fmt_metric(result.reward_first)),
        ("reward, last step", fmt_metric(result.reward_last)),
        ("adapter weights changed", str(result.adapter_weights_changed)),
        ("base weights unchanged", str(result.base_weights_unchanged)),
        ("seconds per step", f"{split['step_s']:.2f}"),
        ("  generation / reward / update", f"{split['generation_s']:.2f} / "
         f"{split['reward_s']:.2f} / {split['update_s']:.2f}"),
        ("verifier share of a step", f"{split['verifier_share']:.0%}"),
        ("peak memory (MB)", f"{result.peak_memory_mb:.0f}"),
    ):  # fmt: skip
        table.add_row(name, value)
    return table


def print_verifier_comparison(metrics: CompareMetrics, console: Console) -> None:
    """compare/metrics.json: agreement with the reference, cost, and the off-topic probe."""
    summary = Summary(
        verifiers=metrics.verifiers, reference=metrics.reference, clinicians=metrics.clinicians
    )
    for title, build in (
        ("verifier agreement", verifier_agreement_table),
        ("clinicians' labels", clinicians_table),
        ("verifier cost", verifier_speed_table),
    ):
        table = build(summary)
        if table is not None:
            console.print(rich_table(title, table))
    console.print(f"reference: {metrics.reference.label} ({metrics.reference.kind})")
    if metrics.clinicians is not None:
        console.print(
            "with clinicians' labels: the reference is their majority label (an even split is "
            "left out); macro F1 = mean of F1 yes and F1 no; the ceiling is clinician against "
            "clinician, every ordered pair of two labels on an item, pooled"
        )
    if metrics.off_topic_per_prompt:
        console.print(
            f"off-topic acc: own response preferred over another prompt's under the same rubric "
            f"({metrics.off_topic_per_prompt} per prompt; 0.5 = random)"
        )
    score = metrics.score or "hard"
    for scored in (score, other_score(score)):
        print_probes(metrics.verifiers, scored, console)
    if metrics.recommendation:
        console.print(Text.assemble(("verifier by hackability: ", "bold"), metrics.recommendation))


def print_grading(grading: Grading, console: Console) -> None:
    """grading.json: each model's score, overall and by tag, as `harness verify` ends."""
    table = grading_table(Summary(grading=grading))
    if table is not None:
        console.print(rich_table("grading (HealthBench-style, 95% bootstrap interval)", table))


def tiny_models_table(rows: list[dict]) -> RichTable:
    table = RichTable("model", "parameters", "path", title="tiny models")
    for row in rows:
        table.add_row(row["name"], f"{row['num_params']:,}", row["path"])
    return table


def models_table(rows: list[tuple[str, str, float | None, str, str, str]]) -> RichTable:
    """(name, roles, parameters in billions or None for a tiny model, license, source,
    where it is here) per known model."""
    table = RichTable("model", "roles", "params", "license", "source", "local", title="models")
    for name, roles, billions, license_name, source, local in rows:
        table.add_row(name, roles, _params(billions), license_name, source, local)
    return table


def _params(billions: float | None) -> str:
    if billions is None:
        return "tiny"
    return f"{billions * 1000:.4g}M" if billions < 1 else f"{billions:g}B"


def imports_table(results: list) -> RichTable:
    """Model folders imported from GGUF files (`ImportResult`s)."""
    table = RichTable("model", "architecture", "GGUF type", "parameters", "path", "",
                      title="imported")  # fmt: skip
    for r in results:
        table.add_row(r.name, r.architecture, r.file_type, f"{r.num_params:,}", str(r.path),
                      "up to date" if r.reused else "imported")  # fmt: skip
    return table
