"""Markdown and HTML: the sections rendered as report.md and as a self-contained report.html
(CSS inline, plots embedded as data URIs, nothing fetched)."""

from __future__ import annotations

import base64
import html
from datetime import datetime
from pathlib import Path

from harness.report.format import NA, _real, fmt_number, fmt_text
from harness.report.tables import Block, Figure, Items, Note, Section, Table
from harness.summary_schema import Machine, RunFacts, Summary

MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".svg": "image/svg+xml"}


def document_title(summary: Summary) -> str:
    run = summary.run or RunFacts()
    return f"Run report: {fmt_text(run.name, 'unnamed run')}"


def document_meta(summary: Summary) -> list[tuple[str, str]]:
    run = summary.run or RunFacts()
    machine = run.machine or Machine()
    parts = [fmt_text(machine.cpu, "unknown CPU")]
    if machine.cores is not None:
        parts.append(f"{fmt_number(machine.cores)} cores")
    if _real(machine.memory_gb) is not None:
        parts.append(f"{machine.memory_gb:,.0f} GB RAM")
    parts.append(f"GPU: {fmt_text(machine.gpu, 'none')}")
    return [
        ("Profile", fmt_text(run.profile)),
        ("Created", _fmt_date(run.created)),
        ("Machine", ", ".join(parts)),
        ("Run folder", fmt_text(run.dir)),
        ("Harness", fmt_text(run.harness_version)),
    ]


def _fmt_date(value: str | None) -> str:
    if not value:
        return NA
    try:
        return datetime.fromisoformat(value).strftime("%Y-%m-%d %H:%M %Z").strip()
    except ValueError:
        return value


def _md(text: str) -> str:
    return html.escape(text, quote=False).replace("|", "\\|").replace("\n", " ")


def render_markdown(summary: Summary, sections: list[Section]) -> str:
    lines = [f"# {_md(document_title(summary))}", ""]
    lines += [" · ".join(f"**{k}**: {_md(v)}" for k, v in document_meta(summary)), ""]
    lines += ["Contents: " + " · ".join(f"[{s.title}](#{s.anchor})" for s in sections), ""]
    for section in sections:
        lines += [f"## {section.title}", ""]
        for block in section.blocks:
            lines += [*_md_block(block), ""]
    return "\n".join(lines)


def _md_block(block: Block) -> list[str]:
    if isinstance(block, Table):
        rule = ["---:" if a == "r" else "---" for a in block.align]
        rows = [block.headers, rule, *block.rows]
        return ["| " + " | ".join(c if r is rule else _md(c) for c in r) + " |" for r in rows]
    if isinstance(block, Figure):
        return [f"![{_md(block.caption)}]({block.path})"]
    if isinstance(block, Note):
        return [f"_{_md(block.text)}_"]
    if isinstance(block, Items):
        return [f"- **{_md(label)}**: {_md(text)}" for label, text in block.items]
    return [_md(block)]


CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
  sans-serif; max-width: 1000px; margin: 2rem auto; padding: 0 1rem; color: #1f2328;
  line-height: 1.5; background: #fff; }
h1 { font-size: 1.75rem; margin-bottom: .25rem; }
h2 { margin-top: 2.5rem; padding-bottom: .3rem; border-bottom: 1px solid #d0d7de; }
h2 a.anchor { color: #8c959f; text-decoration: none; font-weight: normal; margin-left: .4rem;
  visibility: hidden; }
h2:hover a.anchor { visibility: visible; }
.meta { color: #59636e; margin: .2rem 0 1rem; }
.meta span { margin-right: 1.2rem; display: inline-block; }
nav.toc { background: #f6f8fa; border: 1px solid #d0d7de; border-radius: 6px;
  padding: .5rem 1rem; }
nav.toc ol { margin: .25rem 0; padding-left: 1.4rem; columns: 2; }
.table-wrap { overflow-x: auto; margin: 1rem 0; }
table { border-collapse: collapse; font-size: .88rem; }
th, td { padding: .3rem .5rem; border: 1px solid #d0d7de; vertical-align: top; }
th { background: #eef1f4; text-align: left; }
tbody tr:nth-child(even) { background: #f6f8fa; }
.num { text-align: right; font-variant-numeric: tabular-nums; }
td.num, td:first-child { white-space: nowrap; }
figure { margin: 1.5rem 0; text-align: center; }
figure img { max-width: 100%; height: auto; }
figcaption { color: #59636e; font-size: .9rem; }
p.off { color: #59636e; font-style: italic; }
"""


def render_html(run_dir: Path, summary: Summary, sections: list[Section]) -> str:
    e = html.escape
    title = e(document_title(summary))
    meta = "".join(
        f"<span><strong>{e(k)}</strong>: {e(v)}</span>" for k, v in document_meta(summary)
    )
    toc = "".join(f'<li><a href="#{s.anchor}">{e(s.title)}</a></li>' for s in sections)
    body = [f"<h1>{title}</h1>", f'<p class="meta">{meta}</p>']
    body.append(f'<nav class="toc"><strong>Contents</strong><ol>{toc}</ol></nav>')
    for s in sections:
        link = f'<a class="anchor" href="#{s.anchor}" aria-label="link to section">#</a>'
        body.append(f'<h2 id="{s.anchor}">{e(s.title)}{link}</h2>')
        body += [_html_block(run_dir, block) for block in s.blocks]
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{title}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )


def _html_block(run_dir: Path, block: Block) -> str:
    e = html.escape
    if isinstance(block, Table):
        cls = [' class="num"' if a == "r" else "" for a in block.align]
        head = "".join(f"<th{c}>{e(h)}</th>" for c, h in zip(cls, block.headers))
        rows = "".join(
            "<tr>" + "".join(f"<td{c}>{e(v)}</td>" for c, v in zip(cls, row)) + "</tr>"
            for row in block.rows
        )
        table = f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"
        return f'<div class="table-wrap">{table}</div>'
    if isinstance(block, Figure):
        return _html_figure(run_dir, block)
    if isinstance(block, Note):
        return f'<p class="off">{e(block.text)}</p>'
    if isinstance(block, Items):
        items = "".join(f"<li><strong>{e(k)}</strong>: {e(v)}</li>" for k, v in block.items)
        return f"<ul>{items}</ul>"
    return f"<p>{e(block)}</p>"


def _html_figure(run_dir: Path, figure: Figure) -> str:
    """The plot inlined as a data URI, so the page needs nothing beside itself."""
    path = run_dir / figure.path
    mime = MIME.get(path.suffix.lower())
    if mime is None or not path.is_file():
        return f'<p class="off">Plot missing: {html.escape(figure.path)}</p>'
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    caption = html.escape(figure.caption)
    return (
        f'<figure><img alt="{caption}" src="data:{mime};base64,{data}">'
        f"<figcaption>{caption}</figcaption></figure>"
    )
