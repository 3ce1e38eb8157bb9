"""A small document model written out as Markdown (pictures beside it) and as one
self-contained HTML file (pictures embedded), so the two never say different things."""

from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.6em 0 1.2em;font-size:.9em}th,td{border:1px solid #ccc;padding:.25em .6em;
text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
.warn{background:#fff4e0;border-left:4px solid #e69500;padding:.5em 1em}img{max-width:100%}
code{background:#f3f3f3;padding:0 .2em}figcaption{font-size:.85em;color:#555}"""


def fmt(value: Any, digits: int = 3) -> str:
    """A table cell: floats to `digits` decimals, missing values as '-'."""
    if value is None or value is pd.NA:
        return "-"
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


@dataclass
class Document:
    """Blocks in order: headings, paragraphs, warnings, tables and images."""

    title: str
    blocks: list[tuple[str, Any]] = field(default_factory=list)

    def heading(self, text: str) -> None:
        self.blocks.append(("h2", text))

    def text(self, text: str) -> None:
        self.blocks.append(("p", text))

    def warn(self, text: str) -> None:
        self.blocks.append(("warn", text))

    def table(self, frame: pd.DataFrame, index: bool = False) -> None:
        if index:
            frame = frame.copy()
            frame.columns.name = None
            frame = frame.reset_index()
        cells = frame.map(fmt) if not frame.empty else frame
        self.blocks.append(("table", cells))

    def image(self, path: Path, caption: str) -> None:
        self.blocks.append(("img", (path, caption)))

    def markdown(self, relative_to: Path) -> str:
        """Markdown, images linked relative to `relative_to` (the folder of the .md file)."""
        out = [f"# {self.title}", ""]
        for kind, value in self.blocks:
            if kind == "h2":
                out += [f"## {value}", ""]
            elif kind == "p":
                out += [value, ""]
            elif kind == "warn":
                out += [f"> **{value}**", ""]
            elif kind == "table":
                out += [_md_table(value), ""]
            else:
                path, caption = value
                out += [f"![{caption}]({path.relative_to(relative_to).as_posix()})", "", f"*{caption}*", ""]
        return "\n".join(out)

    def html(self) -> str:
        """One HTML page with every picture embedded as a data URI."""
        out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(self.title)}</title>",
               f"<style>{_CSS}</style></head><body><h1>{html.escape(self.title)}</h1>"]
        for kind, value in self.blocks:
            if kind == "h2":
                out.append(f"<h2>{html.escape(value)}</h2>")
            elif kind == "p":
                out.append(f"<p>{_inline(value)}</p>")
            elif kind == "warn":
                out.append(f"<p class='warn'>{_inline(value)}</p>")
            elif kind == "table":
                out.append(value.to_html(index=False, escape=True, border=0))
            else:
                path, caption = value
                data = base64.b64encode(path.read_bytes()).decode()
                out.append(f"<figure><img alt='{html.escape(caption)}' src='data:image/png;base64,{data}'>"
                           f"<figcaption>{html.escape(caption)}</figcaption></figure>")
        out.append("</body></html>")
        return "\n".join(out)


def _inline(text: str) -> str:
    """Escapes text and renders `code` and **bold** spans."""
    parts = html.escape(text).split("`")
    out = "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))
    bold = out.split("**")
    return "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(bold)) if len(bold) % 2 else out


def _md_table(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "(no rows)"
    header = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |")
    return "\n".join(lines)
