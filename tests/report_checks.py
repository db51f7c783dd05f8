"""Checks on report pages shared by the report unit and integration tests: well-formed HTML,
self-contained (no network), decodable images of the announced size, and the exact numbers
that leaderboard cells carry."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
from dataclasses import dataclass, field
from html import unescape
from html.parser import HTMLParser
from typing import Any

VOID = {"meta", "img", "br", "hr", "link", "wbr", "col", "input", "source"}


@dataclass
class PageImage:
    name: str
    width: int
    height: int
    png: bytes
    scale: int = 1  # PNG pixels per CSS pixel


@dataclass
class Page:
    errors: list[str] = field(default_factory=list)
    images: list[PageImage] = field(default_factory=list)
    cells: list[dict[str, str]] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    scripts: list[tuple[dict[str, str], str]] = field(default_factory=list)  # (attrs, text)

    def metric_cells(self) -> list[dict[str, str]]:
        return [c for c in self.cells if "data-k" in c]


class _Parser(HTMLParser):
    def __init__(self, page: Page) -> None:
        super().__init__(convert_charrefs=True)
        self.page = page
        self.stack: list[str] = []
        self.script: dict[str, str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.page.tags.append(tag)
        if tag == "script":
            self.script = a
            self.page.scripts.append((a, ""))
        if tag not in VOID:
            self.stack.append(tag)
        for key in ("src", "href", "action", "srcset"):
            if key in a:
                self.page.urls.append(a[key])
        if tag == "img":
            src = a.get("src", "")
            prefix = "data:image/png;base64,"
            if not src.startswith(prefix):
                self.page.errors.append(f"image not embedded: {src[:40]}")
                return
            self.page.images.append(
                PageImage(
                    a.get("data-name", ""),
                    int(a["width"]),
                    int(a["height"]),
                    base64.b64decode(src[len(prefix) :], validate=True),
                    int(a.get("data-scale", "1")),
                )
            )
        if tag == "td" and "data-metric" in a:
            self.page.cells.append(a)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self.stack.pop()

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.page.errors.append(f"unbalanced </{tag}> (open: {self.stack[-3:]})")
            return
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        if self.stack and self.stack[-1] == "script" and self.script is not None:
            attrs, text = self.page.scripts[-1]
            self.page.scripts[-1] = (attrs, text + data)
            return
        self.page.text.append(data)

    def close(self) -> None:
        super().close()
        if self.stack:
            self.page.errors.append(f"unclosed tags: {self.stack}")


def parse_page(html: str, *, links: bool = False) -> Page:
    """Parse and check structure; assert the page is well formed and self-contained."""
    page = Page()
    parser = _Parser(page)
    parser.feed(html)
    parser.close()
    assert html.startswith("<!DOCTYPE html>")
    assert not page.errors, page.errors[:5]
    assert "link" not in page.tags and "iframe" not in page.tags
    check_scripts(html, page)
    for url in page.urls:
        allowed = ("#", "data:", "file://") if links else ("#", "data:")
        assert url.startswith(allowed), f"external reference: {url[:60]}"
    assert "@import" not in html and "url(" not in html
    assert "Content-Security-Policy" in html
    return page


def check_scripts(html: str, page: Page) -> None:
    """The only scripts: the page's own (allowed by its hash in the CSP, nothing else may
    run) and inert base64 data blocks; none loads anything."""
    from skillmix.report.markup import page_script

    digest = base64.b64encode(hashlib.sha256(page_script().encode()).digest()).decode()
    found = re.search(r'http-equiv="Content-Security-Policy" content="([^"]*)"', html)
    assert found
    policy = unescape(found.group(1))
    assert f"script-src 'sha256-{digest}'" in policy
    assert "unsafe-inline" not in policy.split("script-src", 1)[1]
    assert len(re.findall(r"<script", html, re.IGNORECASE)) == len(page.scripts)
    for attrs, text in page.scripts:
        assert "src" not in attrs, attrs
        if attrs.get("type") == "application/octet-stream":
            assert re.fullmatch(r"[A-Za-z0-9+/=]*", text), "a data block that is not base64"
        else:
            assert text == page_script(), "an inline script that is not the page's own"


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def check_images(page: Page, *, decode: bool = True) -> dict[str, tuple[int, int]]:
    """Every image decodes to a PNG of its announced size (times its scale: plots are drawn
    at twice their CSS size); returns the CSS sizes by name."""
    import matplotlib.image

    sizes = {}
    for image in page.images:
        width, height = png_size(image.png)
        assert (width, height) == (image.width * image.scale, image.height * image.scale), (
            image.name
        )
        if decode:
            pixels = matplotlib.image.imread(io.BytesIO(image.png), format="png")
            assert pixels.shape[:2] == (height, width), image.name
        sizes[image.name] = (image.width, image.height)
    return sizes


def leaderboard_numbers(
    page: Page, run: int | None = None
) -> dict[tuple[str, str, int, str], dict[str, Any]]:
    """(student, grader, k, metric) -> exact numbers from the cells' data attributes (of the
    given run's rows, in a comparison page)."""
    out = {}
    for cell in page.metric_cells():
        if run is not None and cell.get("data-run") != str(run):
            continue
        key = (cell["data-student"], cell["data-grader"], int(cell["data-k"]), cell["data-metric"])
        assert key not in out, f"duplicate leaderboard cell {key}"
        ci = [json.loads(cell["data-ci-low"]), json.loads(cell["data-ci-high"])]
        out[key] = {
            "mean": json.loads(cell["data-value"]),
            "stderr": json.loads(cell["data-stderr"]),
            "ci95": None if ci == [None, None] else ci,
            "exact": cell.get("data-exact"),
            "n": int(cell["data-n"]),
        }
    return out


def aggregate_numbers(doc: dict[str, Any]) -> dict[tuple[str, str, int, str], dict[str, Any]]:
    """The same keys from `skillmix aggregate --format json`."""
    out = {}
    for row in doc["rows"]:
        for metric in ("full_marks", "all_skills", "skill_fraction"):
            out[(row["student"], row["grader"], row["k"], metric)] = {**row[metric], "n": row["n"]}
    return out


def markdown_table_rows_ok(markdown: str) -> None:
    """Every row of every Markdown table has as many unescaped cell separators as its
    header (so no text from a run broke a table)."""
    expected: int | None = None
    for line in markdown.splitlines():
        if not line.startswith("|"):
            expected = None
            continue
        separators = len(re.findall(r"(?<!\\)\|", line.replace("\\\\", "")))
        if expected is None:
            expected = separators
        assert separators == expected, line
