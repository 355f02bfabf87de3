"""A report as a list of blocks, rendered once as Markdown and once as a self-contained HTML page."""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Heading:
    level: int
    text: str


@dataclass
class Para:
    text: str  # **bold** and `code` are the only markup


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    align: list[str] = field(default_factory=list)  # "l" | "r" per column; default: first l, rest r
    css: str = ""

    def aligns(self) -> list[str]:
        return self.align or ["l"] + ["r"] * (len(self.header) - 1)


@dataclass
class Image:
    path: Path  # absolute; Markdown links it relative to the report, HTML embeds it
    alt: str


Block = Heading | Para | Bullets | Table | Image


def to_markdown(blocks: list[Block], root: Path) -> str:
    out = []
    for b in blocks:
        if isinstance(b, Heading):
            out += ["#" * b.level + " " + b.text, ""]
        elif isinstance(b, Para):
            out += [b.text, ""]
        elif isinstance(b, Bullets):
            out += [f"- {item}" for item in b.items] + [""]
        elif isinstance(b, Table):
            out.append("| " + " | ".join(b.header) + " |")
            out.append("|" + "|".join("---:" if a == "r" else "---" for a in b.aligns()) + "|")
            out += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in b.rows]
            out.append("")
        elif isinstance(b, Image):
            out += [f"![{b.alt}]({b.path.relative_to(root).as_posix()})", ""]
    return "\n".join(out)


def _inline(text: str) -> str:
    s = html.escape(text, quote=False)
    s = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", s)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", s)


STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{border-bottom:2px solid #444}h2{border-bottom:1px solid #bbb;margin-top:2em}h3{margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0 1em;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .6em}th{background:#f0f0f0}td.r,th.r{text-align:right}
tr:nth-child(even) td{background:#fafafa}
td.less{background:#d8f0d8!important}td.more{background:#f6d6d6!important}
img{max-width:100%;border:1px solid #ddd;margin:.5em 0}code{background:#f3f3f3;padding:0 .2em}
"""


def to_html(blocks: list[Block], title: str) -> str:
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>"]
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"<h{b.level}>{_inline(b.text)}</h{b.level}>")
        elif isinstance(b, Para):
            out.append(f"<p>{_inline(b.text)}</p>")
        elif isinstance(b, Bullets):
            out.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in b.items) + "</ul>")
        elif isinstance(b, Table):
            al = b.aligns()
            head = "".join(f'<th class="{a}">{_inline(h)}</th>' for h, a in zip(b.header, al))
            body = []
            for row in b.rows:
                cells = []
                for cell, a in zip(row, al):
                    cls = a + _verdict_class(cell)
                    cells.append(f'<td class="{cls}">{_inline(cell)}</td>')
                body.append("<tr>" + "".join(cells) + "</tr>")
            out.append(f'<table class="{b.css}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>')
        elif isinstance(b, Image):
            data = base64.b64encode(b.path.read_bytes()).decode()
            out.append(f'<figure><img alt="{html.escape(b.alt)}" src="data:image/png;base64,{data}"></figure>')
    out.append("</body></html>")
    return "\n".join(out)


def _verdict_class(cell: str) -> str:
    """Significant differences are coloured in HTML (the verdict words come from headline.py)."""
    if cell.startswith("softpick less"):
        return " less"
    if cell.startswith("softpick more"):
        return " more"
    return ""
