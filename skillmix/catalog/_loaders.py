"""Readers for the reference catalog formats (SPEC section 2) and the built-in catalog.

Parsing is separated from reading: ``parse_skills_csv`` and ``parse_topics`` take text and a
source name for error messages; the ``load_*`` functions only fetch the text.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from skillmix.catalog._model import Catalog, Skill
from skillmix.errors import SkillmixError
from skillmix.limits import CATALOG_BYTES, read_at_most

INACTIVE_STATUSES = frozenset({"remove", "in review", "maybe"})
# Every `status` a row may have (compared case-insensitively, spaces around ignored); an empty
# cell is active. Anything else is a typo that would silently decide whether a skill is used.
ACTIVE_STATUSES = frozenset({"", "keep"})
KNOWN_STATUSES = ACTIVE_STATUSES | INACTIVE_STATUSES
REQUIRED_COLUMNS = ("skill", "definition", "example")
BUILTIN_NAME = "builtin"


def parse_skills_csv(text: str, source: str = "<skills>") -> list[Skill]:
    """Active skills in CSV order; names verbatim. Raises SkillmixError naming file and line."""
    csv.field_size_limit(2**31 - 1)
    # strict: a quote that is never closed ends in an error, not in rows swallowed by one cell
    reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
    header = reader.fieldnames or []
    if not header:
        raise SkillmixError(f"{source}:1: empty skills file", hint="expected a CSV header")
    for column in REQUIRED_COLUMNS:
        if column not in header:
            raise SkillmixError(
                f"{source}:1: missing column {column!r}",
                hint="the header must include category,skill,definition,example,comments,status,added by",
            )
    skills: list[Skill] = []
    first_line: dict[str, int] = {}
    line = 1
    try:
        for row in reader:
            start = line + 1
            line = reader.line_num
            _check_swallowed_rows(row, header, start, source)
            raw_status = row.get("status") or ""
            status = raw_status.strip().lower()
            if status not in KNOWN_STATUSES:
                raise SkillmixError(
                    f"{source}:{start}: unknown status {raw_status!r}",
                    hint="use keep (or leave it empty) for an active skill, or one of "
                    "remove, in review, maybe to leave it out",
                )
            if status in INACTIVE_STATUSES:
                continue
            name = row.get("skill")
            if name is None or not name.strip():
                raise SkillmixError(
                    f"{source}:{start}: empty skill name", hint="fill the `skill` cell"
                )
            if name != name.strip():
                raise SkillmixError(
                    f"{source}:{start}: skill name {name!r} has leading or trailing spaces",
                    hint="remove them (names are keys, compared verbatim)",
                )
            _first_time(
                first_line, name, f"{source}:{start}", start, "skill name",
                "skill names are keys and must be unique among active rows",
            )  # fmt: skip
            skills.append(
                Skill(
                    name=name,
                    definition=row.get("definition") or "",
                    example=row.get("example") or "",
                    category=(row.get("category") or "").strip(),
                )
            )
    except csv.Error as exc:
        if "expected after" in str(exc) or "unexpected end of data" in str(exc):
            raise SkillmixError(
                f"{source}:{line + 1}: a quoted cell of this row is not closed where the row "
                "ends (the rows after it would be read into that cell)",
                hint='close the quote (a " inside a quoted cell is written "")',
            ) from None
        raise SkillmixError(f"{source}:{line + 1}: malformed CSV: {exc}") from None
    if not skills:
        raise SkillmixError(
            f"{source}: no active skills",
            hint="rows with status remove/in review/maybe are skipped",
        )
    return skills


def _check_swallowed_rows(
    row: dict[str | Any, Any], header: Sequence[str], start: int, source: str
) -> None:
    """A cell whose quote is never closed runs on into the next lines, and the rows there vanish
    into it. Catch it: a multi-line cell holding a line that parses as a whole row of its own."""
    line = start
    for column in header:
        value = row.get(column)
        if not isinstance(value, str):
            continue
        inner = value.split("\n")
        for offset, text in enumerate(inner[1:], start=1):
            fields = next(csv.reader([text]), [])
            if len(fields) >= len(header):
                raise SkillmixError(
                    f"{source}:{start}: the {column!r} cell opens a quote that is not closed "
                    f"where the row ends: line {line + offset} became part of it",
                    hint='close the quote (a " inside a quoted cell is written "")',
                )
        line += len(inner) - 1


MAX_TOPIC_CHARS = 1_000  # a topic is a phrase; a longer line is a file given by mistake
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # tab is text; line ends split lines


def parse_topics(text: str, source: str = "<topics>") -> list[str]:
    """Topics in file order; empty lines ignored, text otherwise verbatim (minus line ends).
    A control character or a topic over MAX_TOPIC_CHARS is an error naming the line."""
    topics: list[str] = []
    first_line: dict[str, int] = {}
    for number, line in enumerate(text.split("\n"), start=1):
        topic = line.rstrip("\r")
        if not topic.strip():
            continue
        if _CONTROL.search(topic):
            raise SkillmixError(
                f"{source}:{number}: a control character in topic {topic[:60]!r}",
                hint="a topic is plain text on one line",
            )
        if len(topic) > MAX_TOPIC_CHARS:
            raise SkillmixError(
                f"{source}:{number}: topic longer than {MAX_TOPIC_CHARS:,} characters",
                hint="one topic per line, a short phrase each",
            )
        _first_time(
            first_line, topic, f"{source}:{number}", number, "topic",
            "each topic may appear once; delete the repeated line",
        )  # fmt: skip
        topics.append(topic)
    if not topics:
        raise SkillmixError(f"{source}: no topics", hint="write one topic per line")
    return topics


def read_text_file(path: str | Path) -> str:
    """Read a UTF-8 text file (a BOM is tolerated); errors name the file and the fix."""
    p = Path(path)
    try:
        data = read_at_most(p, CATALOG_BYTES, "a catalog or prompt file")
    except FileNotFoundError:
        raise SkillmixError(f"{p}: file not found") from None
    except IsADirectoryError:
        raise SkillmixError(f"{p}: is a directory, expected a file") from None
    except OSError as exc:
        raise SkillmixError(f"{p}: cannot read: {exc.strerror}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SkillmixError(
            f"{p}: not valid UTF-8 at byte {exc.start}", hint="re-save the file as UTF-8"
        ) from None


def load_skills_csv(path: str | Path) -> list[Skill]:
    return parse_skills_csv(read_text_file(path), str(path))


def load_topics(path: str | Path) -> list[str]:
    return parse_topics(read_text_file(path), str(path))


def builtin_catalog() -> Catalog:
    """The catalog written for this project (package data, reference CSV/TXT formats)."""
    data = resources.files("skillmix.catalog") / "data"
    skills = parse_skills_csv(
        (data / "skills.csv").read_text(encoding="utf-8"), "builtin:skills.csv"
    )
    topics = parse_topics((data / "topics.txt").read_text(encoding="utf-8"), "builtin:topics.txt")
    return Catalog(skills=tuple(skills), topics=tuple(topics), source=BUILTIN_NAME)


def load_catalog(skills: str | Path | None = None, topics: str | Path | None = None) -> Catalog:
    """The built-in catalog, or one read from reference-format files (either may be given alone:
    the other part then comes from the built-in catalog)."""
    if skills is None and topics is None:
        return builtin_catalog()
    base = builtin_catalog() if (skills is None or topics is None) else None
    skill_list = tuple(load_skills_csv(skills)) if skills is not None else base.skills  # type: ignore[union-attr]
    topic_list = tuple(load_topics(topics)) if topics is not None else base.topics  # type: ignore[union-attr]
    source = f"skills={skills or BUILTIN_NAME} topics={topics or BUILTIN_NAME}"
    return Catalog(skills=skill_list, topics=topic_list, source=source)


def _first_time(
    seen: dict[str, int], key: str, where: str, line: int, what: str, hint: str
) -> None:
    """Note ``key`` as first seen on ``line``; a key seen before is an error naming both lines."""
    if key in seen:
        raise SkillmixError(
            f"{where}: duplicate {what} {key!r} (first on line {seen[key]})", hint=hint
        )
    seen[key] = line
