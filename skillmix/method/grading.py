"""Reading points out of a grader's reply (SPEC 5.1, 5.2). These functions never raise.

On well-formed replies they return exactly what the reference extracts; where the reference
crashes or silently drops rows, they return what they could read and say so in ``status``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from skillmix.method.prompts import GradingStyle

ParseStatus = Literal["ok", "wrong_count", "empty"]
TABLE_INTRO = "Here's the grading table:"
_NOT_VALUE_CHARS = re.compile(r"[^0-9./]")
_NUMERATOR = re.compile(r"^(\d+)/")
_TRAILING_NON_DIGITS = re.compile(r"\D+$")
_LEADING_NUMBER = re.compile(r"\d[\d.]*")


@dataclass(frozen=True)
class ParsedGrade:
    """Points in rubric order, the grader's own total if it gave one, and how parsing went."""

    points: tuple[float, ...]
    total: float | None
    status: ParseStatus
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def _status(points: list[float], k: int | None, dropped: list[str]) -> tuple[ParseStatus, str]:
    notes = [f"unreadable row {d!r}" for d in dropped[:3]]
    if not points:
        return "empty", "; ".join(["no rubric points found", *notes])
    if k is not None and len(points) != k + 3:
        return "wrong_count", "; ".join([f"{len(points)} points, expected {k + 3}", *notes])
    return "ok", "; ".join(notes)


def parse_table_output(text: str, k: int | None = None) -> ParsedGrade:
    """Parse a table-style reply: ``| criterion | points |`` rows plus a total row."""
    body = text.split(TABLE_INTRO)[-1].strip().split("Explanation:")[0].strip()
    rows: dict[str, float] = {}
    total: float | None = None
    dropped: list[str] = []
    for line in body.split("\n"):
        if "|" not in line or "--" in line or "criteria" in line.lower():
            continue
        cells = [c.strip() for c in line.split("|")]
        cells = [c for c in cells if c]
        if len(cells) < 2:
            dropped.append(line.strip()[:60])
            continue
        key, raw = cells[0].lower(), cells[1]
        value = _NOT_VALUE_CHARS.sub("", raw)
        numerator = _NUMERATOR.match(value)
        if numerator:
            value = numerator.group(1)
        if not value:
            continue
        try:
            number = float(value)
        except ValueError:
            dropped.append(line.strip()[:60])
            continue
        if "total" in key:
            total = number
        else:
            rows[key] = number
    points = list(rows.values())
    status, detail = _status(points, k, dropped)
    return ParsedGrade(points=tuple(points), total=total, status=status, detail=detail)


def _first_number(text: str) -> float | None:
    match = _LEADING_NUMBER.search(text)
    if not match:
        return None
    number = match.group(0).rstrip(".")
    try:
        return float(number)
    except ValueError:
        return None


def parse_points_output(text: str, k: int | None = None) -> ParsedGrade:
    """Parse a points-style reply: ``Point earned: 1`` lines and a final ``Grade: N``."""
    lowered = text.lower()
    points: list[float] = []
    for piece in lowered.split("earned:")[1:]:
        piece = piece.strip()
        first_line = piece.split("\n")[0]
        if not first_line:
            continue
        token = first_line.split(" ")[0].split("/")[0]
        token = _TRAILING_NON_DIGITS.sub("", token)
        try:
            points.append(float(token))
        except ValueError:
            points.append(0.0)
    total = _first_number(lowered.split("grade:")[-1]) if "grade:" in lowered else None
    status, detail = _status(points, k, [])
    return ParsedGrade(points=tuple(points), total=total, status=status, detail=detail)


def parse_grader_output(text: str, k: int | None, style: GradingStyle) -> ParsedGrade:
    """Dispatch on the rubric style of the grading prompt that produced ``text``."""
    if style == "points":
        return parse_points_output(text, k)
    return parse_table_output(text, k)
