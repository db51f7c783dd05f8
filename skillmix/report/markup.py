"""A tiny HTML builder that escapes by default, plus the page shell shared by the run report
and the comparison report.

Text passed to :func:`el` is escaped unless it is :class:`Safe` (already built markup), so
model names, topics and answers can never inject markup. Pages are self-contained: inline CSS,
images as ``data:`` URIs, one inline script (``page_script.js``: sortable tables and the answer
browser; the page reads fine without it) allowed by its hash, and a Content-Security-Policy
that forbids fetching anything, so a page opened from disk or an artifact store makes no
network request. Colours of text on coloured backgrounds are listed in :data:`CONTRAST_PAIRS`
(a test keeps each at WCAG AA, 4.5:1).
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources

VOID = frozenset({"meta", "img", "br", "hr", "link", "wbr", "col", "input", "source"})


WIDE_FIGURE = 880  # CSS pixels: a figure this wide (small multiples) takes a whole row


@cache
def page_script() -> str:
    """The page's one inline script (sortable tables, the answer browser)."""
    return resources.files("skillmix.report").joinpath("page_script.js").read_text("utf-8")


def csp() -> str:
    """Nothing may be fetched; the inline script runs because its hash is listed."""
    digest = base64.b64encode(hashlib.sha256(page_script().encode()).digest()).decode()
    return (
        "default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
        f"script-src 'sha256-{digest}'"
    )


COLORS = {
    "fg": "#1b1f24",
    "muted": "#57606a",
    "line": "#d0d7de",
    "bg": "#ffffff",
    "soft": "#f6f8fa",
    "accent": "#0067a3",
    "good": "#007a5a",
    "bad": "#b34700",
    "pink": "#9c3f78",
    "first": "#eef6fb",
    "warm": "#fff4ec",
}
# (text, background) colour names that the page combines: each must reach 4.5:1.
CONTRAST_PAIRS = (
    ("fg", "bg"),
    ("fg", "soft"),
    ("fg", "first"),
    ("fg", "warm"),
    ("muted", "bg"),
    ("muted", "soft"),
    ("muted", "first"),
    ("muted", "warm"),
    ("accent", "bg"),
    ("accent", "soft"),
    ("bg", "good"),
    ("bg", "bad"),
    ("bg", "pink"),
    ("bg", "muted"),
    ("bad", "bg"),
    ("bad", "soft"),
    ("good", "bg"),
)

CSS = (
    ":root { "
    + " ".join(f"--{name}:{value};" for name, value in COLORS.items())
    + " }"
    + """
* { box-sizing: border-box; }
body { margin:0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue",
       Arial, sans-serif; color:var(--fg); background:var(--bg); overflow-wrap: anywhere; }
header { padding: 22px 32px 14px; border-bottom: 1px solid var(--line); background: var(--soft); }
header h1 { margin:0 0 4px; font-size: 24px; }
header .sub { color: var(--muted); font-size: 14px; }
nav { padding: 8px 32px; border-bottom: 1px solid var(--line); font-size: 14px; }
nav a { margin-right: 14px; color: var(--accent); text-decoration: none; display: inline-block; }
main { padding: 8px 32px 40px; max-width: 1500px; }
section { margin-top: 26px; }
h2 { font-size: 20px; border-bottom: 1px solid var(--line); padding-bottom: 4px; }
h3 { font-size: 16px; margin: 18px 0 6px; }
p.note, .note { color: var(--muted); font-size: 13px; }
td.pending { color: var(--muted); font-style: italic; }
table { border-collapse: collapse; margin: 6px 0 12px; font-size: 14px; display: block;
        max-width: 100%; overflow-x: auto; overflow-wrap: normal; }
caption { text-align: left; color: var(--muted); font-size: 13px; padding: 2px 0 4px;
          contain: inline-size; }  /* as wide as its table, never wider */
th, td { border: 1px solid var(--line); padding: 4px 9px; vertical-align: top; }
th { background: var(--soft); text-align: left; font-weight: 600; }
th.sortable { cursor: pointer; }
th[aria-sort="ascending"]::after { content: " \\25B2"; font-size: 10px; }
th[aria-sort="descending"]::after { content: " \\25BC"; font-size: 10px; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td .ci { display:block; color: var(--muted); font-size: 12px; }
td .se, td .n { color: var(--muted); font-size: 12px; }
tr.first td { background: var(--first); }
tr.group-start td { border-top: 3px solid var(--fg); }
table.resorted tr.group-start td { border-top: 1px solid var(--line); }
.tw { max-width: 100%; overflow-x: auto; }
.grid { display:flex; flex-wrap: wrap; gap: 18px 40px; align-items: flex-start; }
.grid > div { max-width: 100%; min-width: 0; }
.kv th { width: 1%; white-space: nowrap; }
code, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 13px; }
figure { margin: 8px 0 18px; max-width: 100%; }
.plots { display: grid; grid-template-columns: repeat(auto-fill, minmax(min(380px, 100%), 1fr));
         gap: 4px 28px; }
.plots figure img { width: 100%; height: auto; }
.plots figure.wide { grid-column: 1 / -1; max-width: 1100px; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); }
figcaption { color: var(--muted); font-size: 13px; }
.banner { margin: 14px 0 0; padding: 8px 12px; border-left: 4px solid var(--bad);
          background: var(--warm); color: var(--fg); }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(min(420px, 100%), 1fr));
         gap: 14px; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: 10px 12px; background: #fff;
        min-width: 0; }
.card h4 { margin: 0 0 4px; font-size: 14px; }
.badge { display:inline-block; padding: 0 7px; border-radius: 10px; font-size: 12px;
         font-weight: 600; color: #fff; background: var(--muted); margin-right: 6px; }
.badge.best { background: var(--good); } .badge.worst { background: var(--bad); }
.badge.explicit_name { background: var(--pink); }
.badge.same { margin: 0 0 0 6px; }
main a { color: var(--accent); }
blockquote { margin: 6px 0; padding: 6px 10px; border-left: 3px solid var(--accent);
             background: var(--soft); white-space: pre-wrap; word-wrap: break-word; }
pre { white-space: pre-wrap; word-wrap: break-word; background: var(--soft); padding: 8px;
      font-size: 12px; max-height: 320px; overflow: auto; }
td.hit, th.hit { color: var(--bad); font-weight: 600; }
.diff td { background: var(--warm); }
td.pos { color: var(--good); } td.neg { color: var(--bad); }
details > summary { cursor: pointer; color: var(--accent); }
.filters { display: flex; flex-wrap: wrap; gap: 6px 14px; align-items: end; margin: 8px 0; }
.filters label { display: flex; flex-direction: column; font-size: 13px; color: var(--muted); }
.filters input, .filters select { font: inherit; font-size: 14px; max-width: 100%; }
.filters label.inline { flex-direction: row; gap: 4px; align-items: center; }
#ab-table { font-size: 13px; }
button.ab-open { font: inherit; border: 1px solid var(--line); background: var(--bg);
                 border-radius: 4px; cursor: pointer; padding: 0 6px; }
tr.ab-detail > td { background: var(--bg); max-width: 90vw; }
.turn-label { font-size: 12px; font-weight: 600; color: var(--muted); margin-top: 6px; }
.turn.assistant pre { border-left: 3px solid var(--good); }
.turn.user pre { border-left: 3px solid var(--line); }
footer { padding: 14px 32px; color: var(--muted); font-size: 12px; border-top: 1px solid var(--line); }
details.examples { margin: 4px 0 10px; }
details.examples > summary { font-weight: 600; }
table.ranking td .ci { display: inline; margin-left: 6px; }
a.drill { color: inherit; text-decoration: underline dotted; }
@media (max-width: 600px) {
  header, nav, footer { padding-left: 12px; padding-right: 12px; }
  header { padding-top: 12px; padding-bottom: 8px; }
  header .sub { font-size: 12px; }
  nav { white-space: nowrap; overflow-x: auto; padding-top: 6px; padding-bottom: 6px; }
  section:first-child { margin-top: 8px; }
  main { padding: 4px 12px 28px; }
  header h1 { font-size: 19px; }
  caption { max-width: calc(100vw - 24px); }  /* readable without scrolling a wide table */
}
"""
)


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
    """A PNG to embed: its bytes, its pixel size and how many pixels it has per CSS pixel
    (2: drawn at twice the resolution, sharp on high-density screens)."""

    name: str
    title: str
    png: bytes
    width: int
    height: int
    caption: str = ""
    scale: int = 1

    @property
    def css_size(self) -> tuple[int, int]:
        return round(self.width / self.scale), round(self.height / self.scale)


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk."""
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        raise ValueError("not a PNG")
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def figure(image: Image) -> Safe:
    src = "data:image/png;base64," + base64.b64encode(image.png).decode("ascii")
    width, height = image.css_size
    return el(
        "figure",
        el(
            "img",
            src=src,
            alt=image.title,
            width=width,
            height=height,
            data_name=image.name,
            data_scale=image.scale,
        ),
        el("figcaption", image.caption) if image.caption else None,
        id=f"fig-{image.name}",
        class_="wide" if width >= WIDE_FIGURE else None,
    )


def table(
    header: Iterable[Child],
    rows: Iterable[Iterable[Child]],
    *,
    numeric: Iterable[int] = (),
    caption: Child = None,
    foot: Iterable[Iterable[Child]] = (),
    **attrs: object,
) -> Safe:
    """A table with column headers (``scope="col"``) and an optional caption; ``foot``: rows
    kept below the others (totals) when the table is sorted. Cells that are already
    ``<td>``/``<th>`` markup pass through unchanged."""
    right = set(numeric)

    def cell(i: int, value: Child, tag: str) -> Safe:
        if isinstance(value, Safe) and value.startswith(("<td", "<th")):
            return value
        return el(
            tag,
            value,
            class_="num" if i in right else None,
            scope="col" if tag == "th" else None,
        )

    head = el("tr", *[cell(i, h, "th") for i, h in enumerate(header)])
    body = [el("tr", *[cell(i, v, "td") for i, v in enumerate(row)]) for row in rows]
    tail = [el("tr", *[cell(i, v, "td") for i, v in enumerate(row)]) for row in foot]
    return el(
        "table",
        el("caption", caption) if caption is not None else None,
        el("thead", head),
        el("tbody", *body),
        el("tfoot", *tail) if tail else None,
        **attrs,
    )


def kv_table(items: Mapping[str, Child], caption: Child = None) -> Safe:
    return el(
        "table",
        el("caption", caption) if caption is not None else None,
        el(
            "tbody",
            *[el("tr", el("th", k, scope="row"), el("td", v)) for k, v in items.items()],
        ),
        class_="kv",
    )


def with_caption(table_html: Safe, caption: Child) -> Safe:
    """A table built elsewhere, with a caption inserted as its first child."""
    end = table_html.index(">") + 1
    return Safe(table_html[:end] + el("caption", caption) + table_html[end:])


def contrast(foreground: str, background: str) -> float:
    """WCAG 2 contrast ratio of two ``#rrggbb`` colours."""

    def luminance(color: str) -> float:
        channels = [int(color[i : i + 2], 16) / 255 for i in (1, 3, 5)]
        lin = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
        return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]

    high, low = sorted((luminance(foreground), luminance(background)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def page(
    title: str, subtitle: Child, nav: Iterable[tuple[str, str]], body: Child, footer: Child
) -> str:
    head = el(
        "head",
        Safe('<meta charset="utf-8">'),
        el("meta", name="viewport", content="width=device-width, initial-scale=1"),
        el("meta", http_equiv="Content-Security-Policy", content=csp()),
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
        el("script", Safe(page_script())),
    )
    return "<!DOCTYPE html>\n" + el("html", head, content, lang="en") + "\n"
