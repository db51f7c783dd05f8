"""A tiny HTML builder that escapes by default, plus the page shell shared by the run report
and the comparison report.

Text passed to :func:`el` is escaped unless it is :class:`Safe` (already built markup), so
model names, topics and answers can never inject markup. Pages are self-contained: inline CSS,
images as ``data:`` URIs, no scripts, and a Content-Security-Policy that forbids fetching
anything, so a page opened from disk or an artifact store makes no network request.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

VOID = frozenset({"meta", "img", "br", "hr", "link", "wbr", "col", "input", "source"})
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"

CSS = """
:root { --fg:#1b1f24; --muted:#57606a; --line:#d0d7de; --bg:#ffffff; --soft:#f6f8fa;
        --accent:#0072B2; --good:#009E73; --bad:#D55E00; }
* { box-sizing: border-box; }
body { margin:0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue",
       Arial, sans-serif; color:var(--fg); background:var(--bg); }
header { padding: 22px 32px 14px; border-bottom: 1px solid var(--line); background: var(--soft); }
header h1 { margin:0 0 4px; font-size: 24px; }
header .sub { color: var(--muted); font-size: 14px; }
nav { padding: 8px 32px; border-bottom: 1px solid var(--line); font-size: 14px; }
nav a { margin-right: 14px; color: var(--accent); text-decoration: none; }
main { padding: 8px 32px 40px; max-width: 1500px; }
section { margin-top: 26px; }
h2 { font-size: 20px; border-bottom: 1px solid var(--line); padding-bottom: 4px; }
h3 { font-size: 16px; margin: 18px 0 6px; }
p.note, .note { color: var(--muted); font-size: 13px; }
table { border-collapse: collapse; margin: 6px 0 12px; font-size: 14px; }
th, td { border: 1px solid var(--line); padding: 4px 9px; vertical-align: top; }
th { background: var(--soft); text-align: left; font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td .ci { display:block; color: var(--muted); font-size: 12px; }
td .se { color: var(--muted); font-size: 12px; }
tr.first td { background: #eef6fb; }
.grid { display:flex; flex-wrap: wrap; gap: 18px 40px; align-items: flex-start; }
.kv th { width: 1%; white-space: nowrap; }
code, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 13px; }
figure { margin: 8px 0 18px; }
.plots { display: grid; grid-template-columns: repeat(auto-fill, minmax(560px, 1fr)); gap: 4px 28px; }
.plots figure img { width: 100%; height: auto; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); }
figcaption { color: var(--muted); font-size: 13px; }
.banner { margin: 14px 0 0; padding: 8px 12px; border-left: 4px solid var(--bad);
          background: #fff4ec; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(420px, 1fr)); gap: 14px; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: 10px 12px; background: #fff; }
.card h4 { margin: 0 0 4px; font-size: 14px; }
.badge { display:inline-block; padding: 0 7px; border-radius: 10px; font-size: 12px;
         font-weight: 600; color: #fff; background: var(--muted); margin-right: 6px; }
.badge.best { background: var(--good); } .badge.worst { background: var(--bad); }
.badge.explicit_name { background: #CC79A7; }
blockquote { margin: 6px 0; padding: 6px 10px; border-left: 3px solid var(--accent);
             background: var(--soft); white-space: pre-wrap; word-wrap: break-word; }
pre { white-space: pre-wrap; word-wrap: break-word; background: var(--soft); padding: 8px;
      font-size: 12px; max-height: 320px; overflow: auto; }
td.hit { color: var(--bad); font-weight: 600; }
.diff td { background: #fff4ec; }
details > summary { cursor: pointer; color: var(--accent); }
footer { padding: 14px 32px; color: var(--muted); font-size: 12px; border-top: 1px solid var(--line); }
"""


class Safe(str):
    """Markup that is already escaped (built by this module)."""


Child = str | Safe | int | float | None | Iterable["Child"]


def esc(text: object) -> Safe:
    """Escape any value for HTML text or attribute context."""
    return Safe(html.escape("" if text is None else str(text), quote=True))


def render(child: Child) -> Safe:
    if child is None:
        return Safe("")
    if isinstance(child, Safe):
        return child
    if isinstance(child, str | int | float):
        return esc(child)
    return Safe("".join(render(c) for c in child))


def el(tag: str, *children: Child, **attrs: object) -> Safe:
    """``<tag attrs>children</tag>``. Attribute names: a trailing ``_`` is dropped (``class_``)
    and ``_`` becomes ``-`` (``data_value``); None or False values are left out."""
    parts = [tag]
    for name, value in attrs.items():
        if value is None or value is False:
            continue
        key = name.rstrip("_").replace("_", "-")
        parts.append(key if value is True else f'{key}="{esc(value)}"')
    opening = "<" + " ".join(parts) + ">"
    if tag in VOID:
        return Safe(opening)
    return Safe(opening + render(list(children)) + f"</{tag}>")


def number(x: float | None) -> str:
    """The exact value for a ``data-value`` attribute: JSON (so None is ``null``)."""
    return json.dumps(x)


def fmt(x: float | None, digits: int = 2) -> str:
    """Rounded for reading (never "-0.00"; never "nan": a value that cannot be computed is
    "n/a")."""
    if x is None or x != x or x in (float("inf"), float("-inf")):
        return "n/a"
    text = f"{x:.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def fmt_stderr(x: float | None, n: int | None) -> str:
    """A standard error for reading; without one, why: "n/a (n<2)" for a single combination."""
    text = fmt(x, 3)
    if text == "n/a" and n is not None and n < 2:
        return "n/a (n<2)"
    return text


def pct(x: float | None) -> str:
    return "n/a" if x is None else fmt(100 * x, 1) + "%"


@dataclass(frozen=True)
class Image:
    """A PNG to embed: its bytes and its pixel size."""

    name: str
    title: str
    png: bytes
    width: int
    height: int
    caption: str = ""


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk."""
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        raise ValueError("not a PNG")
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def figure(image: Image) -> Safe:
    src = "data:image/png;base64," + base64.b64encode(image.png).decode("ascii")
    return el(
        "figure",
        el(
            "img",
            src=src,
            alt=image.title,
            width=image.width,
            height=image.height,
            data_name=image.name,
        ),
        el("figcaption", image.caption) if image.caption else None,
        id=f"fig-{image.name}",
    )


def table(
    header: Iterable[Child],
    rows: Iterable[Iterable[Child]],
    *,
    numeric: Iterable[int] = (),
    **attrs: object,
) -> Safe:
    """A table; cells that are already ``<td>``/``<th>`` markup pass through unchanged."""
    right = set(numeric)

    def cell(i: int, value: Child, tag: str) -> Safe:
        if isinstance(value, Safe) and value.startswith(("<td", "<th")):
            return value
        return el(tag, value, class_="num" if i in right else None)

    head = el("tr", *[cell(i, h, "th") for i, h in enumerate(header)])
    body = [el("tr", *[cell(i, v, "td") for i, v in enumerate(row)]) for row in rows]
    return el("table", el("thead", head), el("tbody", *body), **attrs)


def kv_table(items: Mapping[str, Child]) -> Safe:
    return el(
        "table",
        el("tbody", *[el("tr", el("th", k), el("td", v)) for k, v in items.items()]),
        class_="kv",
    )


def page(
    title: str, subtitle: Child, nav: Iterable[tuple[str, str]], body: Child, footer: Child
) -> str:
    head = el(
        "head",
        Safe('<meta charset="utf-8">'),
        el("meta", name="viewport", content="width=device-width, initial-scale=1"),
        el("meta", http_equiv="Content-Security-Policy", content=CSP),
        el("meta", name="generator", content="skillmix"),
        el("title", title),
        el("style", Safe(CSS)),
    )
    links = el("nav", *[el("a", label, href=f"#{anchor}") for anchor, label in nav])
    content = el(
        "body",
        el("header", el("h1", title), el("div", subtitle, class_="sub")),
        links,
        el("main", body),
        el("footer", footer),
    )
    return "<!DOCTYPE html>\n" + el("html", head, content, lang="en") + "\n"
