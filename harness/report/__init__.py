"""Report: the run's summary as Markdown, a self-contained HTML page, plots and a terminal view.

Input: the run's `Summary` (harness.summary_schema; RUN_DIR/summary.json) and the PNG plots the
stages already wrote, listed in summary.plots with paths relative to the run folder. Output, in
RUN_DIR: plots/*.png (the plots made from the summary), summary.json (with those plots added),
report.md and report.html (every plot embedded as a data URI, CSS inline, nothing fetched, so it
renders offline).

Both documents are rendered from one list of sections, so they always say the same things in
the same order. A section whose stage was switched off says "stage off", one with no results
says "not run"; a value that could not be scored reads "unscored", never 0 and never "None".

Modules: summary (summary.json from the run folder's files), format (values as text), tables
(content model and tables), sections (the content in reading order), render (Markdown, HTML),
plots (matplotlib), terminal (rich).

    harness report runs/demo
"""

from __future__ import annotations

import json
from pathlib import Path

from harness.jsonl import write_bytes_atomic
from harness.report.format import (
    NA,
    UNSCORED,
    fmt_bool,
    fmt_ci,
    fmt_counts,
    fmt_error,
    fmt_latency,
    fmt_memory,
    fmt_metric,
    fmt_number,
    fmt_params,
    fmt_pct,
    fmt_rate,
    fmt_seconds,
    fmt_text,
)
from harness.report.plots import DPI, REPORT_MODE, WIDTH_IN, make_plots
from harness.report.render import (
    CSS,
    MIME,
    document_meta,
    document_title,
    render_html,
    render_markdown,
)
from harness.report.sections import TAIL_TOLERANCE, build_sections, glance_items, pick_verifier
from harness.report.tables import (
    AGREEMENT_METRICS,
    PROBE_METRICS,
    THEORY_PATTERNS,
    Block,
    Figure,
    Items,
    Note,
    Section,
    Table,
    gate_text,
    overoptimization_table,
    pairwise_table,
    probe_table,
    refine_table,
    stages_table,
    theory_table,
    train_table,
    unscored_table,
    verifier_agreement_table,
    verifier_compact_table,
    verifier_speed_table,
)
from harness.report.terminal import print_probes, print_summary, rich_table
from harness.runstate import RunPaths
from harness.summary_schema import Summary

__all__ = [
    "AGREEMENT_METRICS",
    "CSS",
    "DPI",
    "MIME",
    "NA",
    "PROBE_METRICS",
    "TAIL_TOLERANCE",
    "THEORY_PATTERNS",
    "UNSCORED",
    "WIDTH_IN",
    "Block",
    "Figure",
    "Items",
    "Note",
    "Section",
    "Table",
    "build_sections",
    "document_meta",
    "document_title",
    "fmt_bool",
    "fmt_ci",
    "fmt_counts",
    "fmt_error",
    "fmt_latency",
    "fmt_memory",
    "fmt_metric",
    "fmt_number",
    "fmt_params",
    "fmt_pct",
    "fmt_rate",
    "fmt_seconds",
    "fmt_text",
    "gate_text",
    "glance_items",
    "make_plots",
    "overoptimization_table",
    "pairwise_table",
    "pick_verifier",
    "print_probes",
    "print_summary",
    "probe_table",
    "refine_table",
    "render_html",
    "render_markdown",
    "rich_table",
    "stages_table",
    "theory_table",
    "train_table",
    "unscored_table",
    "verifier_agreement_table",
    "verifier_compact_table",
    "verifier_speed_table",
    "write_report",
]


def write_report(run_dir: Path, summary: Summary) -> dict[str, Path]:
    """Make the plots, then write summary.json, report.md and report.html, each atomically."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    plots = {**(summary.plots or {}), **make_plots(run_dir, summary)}
    summary = summary.model_copy(update={"plots": plots})
    run_paths = RunPaths(run_dir)
    paths = {
        "summary": run_paths.summary_path,
        "markdown": run_paths.report_markdown_path,
        "html": run_paths.report_html_path,
    }
    record = summary.as_record()
    text = json.dumps(record, indent=2, sort_keys=True, ensure_ascii=False, default=str) + "\n"
    sections = build_sections(summary)
    write_bytes_atomic(paths["summary"], text.encode("utf-8"), mode=REPORT_MODE)
    write_bytes_atomic(
        paths["markdown"], render_markdown(summary, sections).encode("utf-8"), mode=REPORT_MODE
    )
    write_bytes_atomic(
        paths["html"], render_html(run_dir, summary, sections).encode("utf-8"), mode=REPORT_MODE
    )
    return paths
