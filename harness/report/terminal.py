"""The terminal view: the run at a glance and one rich table per stage."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table as RichTable
from rich.text import Text

from harness.report.render import document_meta, document_title
from harness.report.sections import glance_items
from harness.report.tables import (
    Table,
    _absent,
    pairwise_table,
    refine_table,
    stages_table,
    theory_table,
    train_table,
    unscored_table,
    verifier_compact_table,
)


def print_summary(summary: dict, console: Console) -> None:
    """The run at a glance in the terminal: one rich table per stage that has results."""
    console.print(Text(document_title(summary), style="bold"))
    for key, value in document_meta(summary):
        console.print(Text.assemble((f"{key}: ", "dim"), value))
    for label, text in glance_items(summary):
        console.print(Text.assemble(("• ", "dim"), (f"{label}: ", "bold"), text))
    views = (
        ("Stages", stages_table, (), "stage records"),
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


def rich_table(title: str, table: Table) -> RichTable:
    """Cells go in as Text, so brackets in labels are never read as rich markup."""
    out = RichTable(title=title, title_justify="left", title_style="bold")
    for i, (header, align) in enumerate(zip(table.headers, table.align)):
        out.add_column(Text(header), justify="right" if align == "r" else "left", no_wrap=i == 0)
    for row in table.rows:
        out.add_row(*(Text(cell) for cell in row))
    return out
