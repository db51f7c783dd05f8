"""Import a reference-format result tree (SPEC 7) into a skillmix run folder.

The tree is discovered, not configured: k, seeds, rounds, students, graders and prompt
versions come from folder names. Problems with the data (a missing round, a short file, a
row that does not line up with its generation) are collected as :class:`ImportIssue` and
reported; they never abort the import.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from skillmix import __version__
from skillmix.artifacts import ReferenceImportRun
from skillmix.errors import SkillmixError
from skillmix.limits import REFERENCE_CSV_BYTES, read_at_most
from skillmix.method.grading import parse_grader_output
from skillmix.method.prompts import GradingStyle
from skillmix.method.reference_numbers import check_round_limit
from skillmix.method.text import extract_answer
from skillmix.records import GenerationRecord, GradeRecord, Turn, answer_id
from skillmix.store.runs import RunStore, generation_prefix, grade_prefix, utc_now

RUN_DIR = re.compile(r"^k(?P<k>\d+)_s(?P<seed>-?\d+)_v(?P<version>.+)_r(?P<g>\d+)$")
GRADED_DIR = re.compile(r"^by_(?P<grader>.+?)_on_text_(?P<column>\d+)_(?P<r>\d+)_(?P<version>.+)$")
ROLE_PAIRS = (("user", "assistant"), ("[INST]", "[/INST]"))
SKILLS_SEPARATOR = re.compile(r",[ \t]*\r?\n")
POINTS_STYLE_VERSIONS = frozenset({"llama", "14"})


@dataclass(frozen=True)
class ImportIssue:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass
class ImportSummary:
    root: str
    seed: int
    ks: list[int] = field(default_factory=list)
    students: list[str] = field(default_factory=list)
    graders: list[str] = field(default_factory=list)
    generation_rounds: list[int] = field(default_factory=list)
    grading_rounds: list[int] = field(default_factory=list)
    generation_prompt_versions: list[str] = field(default_factory=list)
    grading_prompt_versions: list[str] = field(default_factory=list)
    generations: int = 0
    grades: int = 0
    issues: list[ImportIssue] = field(default_factory=list)

    def to_run(self) -> ReferenceImportRun:
        """The imported folder's run.json."""
        return ReferenceImportRun.model_validate(
            {
                **asdict(self),
                "issues": [str(i) for i in self.issues],
                "created_at": utc_now(),
                "skillmix_version": __version__,
            }
        )


def read_reference_csv(path: Path, data: bytes | None = None) -> list[dict[str, str]]:
    """Rows of a reference CSV (``data``: its bytes, when already read), decoded tolerantly
    (UTF-8, else cp1252)."""
    data = read_at_most(path, REFERENCE_CSV_BYTES, "a reference CSV") if data is None else data
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("cp1252", errors="replace")
    csv.field_size_limit(2**31 - 1)
    return list(csv.DictReader(io.StringIO(text, newline="")))


def split_skills(cell: str) -> list[str]:
    """The ``skills`` cell joins names with ``", \\n"`` (graded files add a space)."""
    return [s for s in SKILLS_SEPARATOR.split(cell) if s]


def _turn_roles(row: dict[str, str]) -> tuple[str, str] | None:
    for user, assistant in ROLE_PAIRS:
        if f"{user}_0" in row and f"{assistant}_0" in row:
            return user, assistant
    return None


def _float(cell: str | None) -> float | None:
    try:
        return float(cell) if cell not in (None, "") else None
    except ValueError:
        return None


def _points(cell: str | None) -> list[float]:
    if not cell:
        return []
    out = []
    for piece in cell.split(","):
        value = _float(piece.strip())
        out.append(value if value is not None else 0.0)
    return out


@dataclass(frozen=True)
class _RunDir:
    path: Path
    k: int
    seed: int
    version: str
    g: int


def discover(root: Path) -> list[_RunDir]:
    if not root.is_dir():
        raise SkillmixError(f"{root}: not a directory", hint="pass the reference experiment root")
    found = []
    for child in sorted(root.iterdir()):
        match = RUN_DIR.match(child.name)
        if child.is_dir() and match:
            found.append(
                _RunDir(
                    child, int(match["k"]), int(match["seed"]), match["version"], int(match["g"])
                )
            )
    if not found:
        raise SkillmixError(
            f"{root}: no reference run folders found",
            hint="expected folders named k{k}_s{seed}_v{version}_r{round}",
        )
    return found


def select_runs(root: Path, seed: int | None) -> tuple[list[_RunDir], int, list[str]]:
    """The run folders to import, checked before anything is written."""
    runs = discover(root)
    seeds = sorted({d.seed for d in runs})
    if seed is None:
        if len(seeds) > 1:
            raise SkillmixError(
                f"{root}: holds seeds {', '.join(map(str, seeds))}",
                hint="choose one with --seed (one run folder per seed)",
            )
        seed = seeds[0]
    runs = [d for d in runs if d.seed == seed]
    if not runs:
        raise SkillmixError(
            f"{root}: no run folders for seed {seed}", hint=f"seeds present: {seeds}"
        )
    versions = sorted({d.version for d in runs})
    if len(versions) > 1:
        raise SkillmixError(
            f"{root}: seed {seed} has several generation prompt versions ({', '.join(versions)})",
            hint="import a tree holding one generation prompt version",
        )
    return runs, seed, versions


def _generation_records(
    rows: list[dict[str, str]], run: _RunDir, student: str, summary: ImportSummary, where: str
) -> list[GenerationRecord]:
    records = []
    for i, row in enumerate(rows):
        roles = _turn_roles(row)
        if roles is None:
            summary.issues.append(ImportIssue(where, f"row {i + 2}: no user_0/assistant_0 columns"))
            continue
        user, assistant = roles
        turns = []
        t = 0
        while f"{user}_{t}" in row and row.get(f"{assistant}_{t}") is not None:
            turns.append(Turn(user=row[f"{user}_{t}"], assistant=row[f"{assistant}_{t}"]))
            t += 1
        last = t - 1
        answer = row.get(f"text_{last}")
        if answer is None:
            answer = extract_answer(turns[-1].assistant) if turns else ""
        records.append(
            GenerationRecord(
                student=student,
                model=student,
                k=run.k,
                generation_round=run.g,
                index=i,
                topic=row.get("topic", ""),
                skills=split_skills(row.get("skills", "")),
                prompt_version=run.version,
                system_prompt=row.get("system prompt") or None,
                turns=turns,
                answer=answer,
            )
        )
    return records


def _grade_records(
    rows: list[dict[str, str]],
    generations: list[GenerationRecord],
    gen_rows: list[dict[str, str]],
    *,
    grader: str,
    r: int,
    version: str,
    column: int,
    summary: ImportSummary,
    where: str,
) -> list[GradeRecord]:
    out = []
    by_index = {g.index: (g, gen_rows[g.index]) for g in generations}
    for i, row in enumerate(rows):
        if i not in by_index:
            summary.issues.append(
                ImportIssue(where, f"row {i + 2}: no generation row {i} to grade")
            )
            continue
        gen, gen_row = by_index[i]
        if row.get("topic", gen.topic) != gen.topic:
            summary.issues.append(
                ImportIssue(
                    where, f"row {i + 2}: topic {row.get('topic')!r} does not match generation row"
                )
            )
            continue
        answer = gen_row.get(f"text_{column}")
        if answer is None:
            summary.issues.append(
                ImportIssue(where, f"row {i + 2}: generation has no text_{column}")
            )
            continue
        prompt = row.get("user_0") or row.get("[INST]_0") or ""
        raw = row.get("assistant_0")
        if raw is None:
            raw = row.get("[/INST]_0")
        style: GradingStyle = (
            "points"
            if version in POINTS_STYLE_VERSIONS or "point earned" in prompt.lower()
            else "table"
        )
        points = _points(row.get("points_0"))
        status = "ok" if len(points) == gen.k + 3 else ("empty" if not points else "wrong_count")
        detail = "" if status == "ok" else parse_grader_output(raw or "", gen.k, style).detail
        out.append(
            GradeRecord(
                **answer_id(gen),
                grader=grader,
                grading_round=r,
                answer=answer,
                prompt_version=version,
                style=style,
                prompt=prompt,
                raw=raw,
                points=points,
                total=_float(row.get("score_0")),
                parse_status=status,
                parse_detail=detail,
                status="ok" if status == "ok" else "unparsed",
            )
        )
    return out


@dataclass
class ReferenceImport:
    """What a reference tree holds, read and checked: the summary and each unit's records."""

    summary: ImportSummary
    units: list[tuple[str, list[Any]]] = field(default_factory=list)


def write_reference(run: RunStore, imported: ReferenceImport) -> ImportSummary:
    """Write what :func:`read_reference` found: every unit, then run.json."""
    for prefix, records in imported.units:
        _write_unit(run, prefix, records)
    run.write_run(imported.summary.to_run(), overwrite=True)
    return imported.summary


def read_reference(
    root: str | Path,
    *,
    students: Sequence[str] = (),
    grader: str | None = None,
    seed: int | None = None,
    generation_rounds: int | None = None,
    grading_rounds: int | None = None,
) -> ReferenceImport:
    """Read the tree at ``root`` (nothing written). A tree with nothing to import (no
    generation or grade record, e.g. every student filtered out or without records.csv) is
    a SkillmixError. ``generation_rounds``/``grading_rounds`` N: only rounds 1..N, as the
    reference's ``--num_generation_rounds``/``--num_grading_rounds`` (N beyond the rounds of
    the tree is a SkillmixError)."""
    root = Path(root)
    runs, seed, versions = select_runs(root, seed)
    check_round_limit("generation", generation_rounds, (d.g for d in runs), str(root))
    check_round_limit("grading", grading_rounds, _grading_rounds(runs, grader), str(root))
    if generation_rounds is not None:
        runs = [d for d in runs if d.g <= generation_rounds]
    summary = ImportSummary(
        root=str(root.resolve()), seed=seed, generation_prompt_versions=versions
    )
    tree = _TreeReader(root, summary, set(students), grader, grading_rounds)
    for d in runs:
        tree.rounds_by_k[d.k].add(d.g)
        for student_dir in sorted(p for p in d.path.iterdir() if p.is_dir()):
            tree.read_student(d, student_dir)
    tree.note_gaps()
    if summary.generations == 0 and summary.grades == 0:
        found = "; ".join(str(issue) for issue in summary.issues[:3]) or "no records"
        raise SkillmixError(
            f"{root}: nothing to import ({found})",
            hint="check the tree, --student and --grader (nothing was written)",
        )
    return ReferenceImport(summary, tree.units)


class _TreeReader:
    """The records of a reference tree, student folder by student folder, with what the
    summary says of them (issues, students, graders, rounds, versions)."""

    def __init__(
        self,
        root: Path,
        summary: ImportSummary,
        wanted: set[str],
        grader: str | None,
        grading_rounds: int | None,
    ) -> None:
        self.root, self.summary, self.wanted = root, summary, wanted
        self.grader, self.grading_rounds = grader, grading_rounds
        self.units: list[tuple[str, list[Any]]] = []
        self.seen_students: set[str] = set()
        self.graders: set[str] = set()
        self.found_rounds: set[int] = set()
        self.grading_versions: set[str] = set()
        self.rounds_by_k: dict[int, set[int]] = defaultdict(set)
        self.grade_rounds_by_unit: dict[tuple[str, str, int, int], set[int]] = defaultdict(set)
        self.grade_files: dict[tuple[str, str, int, int], dict[int, str]] = defaultdict(dict)

    def read_student(self, d: _RunDir, student_dir: Path) -> None:
        """One student's generations in run folder ``d``, then its grading folders."""
        student = student_dir.name
        if self.wanted and student not in self.wanted:
            return
        gen_csv = student_dir / "records.csv"
        where = str(gen_csv.relative_to(self.root))
        if not gen_csv.is_file():
            self.summary.issues.append(ImportIssue(where, "missing generation records"))
            return
        self.seen_students.add(student)
        gen_rows = read_reference_csv(gen_csv)
        generations = _generation_records(gen_rows, d, student, self.summary, where)
        self.units.append((generation_prefix(student, d.k, d.g), generations))
        self.summary.generations += len(generations)
        graded_dir = student_dir / "graded"
        for gdir in sorted(graded_dir.iterdir()) if graded_dir.is_dir() else []:
            match = GRADED_DIR.match(gdir.name)
            if not match or not gdir.is_dir():
                continue
            if self.grader and match["grader"] != self.grader:
                continue
            if self.grading_rounds is not None and int(match["r"]) > self.grading_rounds:
                continue
            self.read_grades(d, student, gdir / "records.csv", match, generations, gen_rows)

    def read_grades(
        self,
        d: _RunDir,
        student: str,
        grade_csv: Path,
        match: re.Match[str],
        generations: list[GenerationRecord],
        gen_rows: list[dict[str, str]],
    ) -> None:
        """One grading round's records of the student's generations."""
        gwhere = str(grade_csv.relative_to(self.root))
        if not grade_csv.is_file():
            self.summary.issues.append(ImportIssue(gwhere, "missing grade records"))
            return
        r = int(match["r"])
        unit = (match["grader"], student, d.k, d.g)
        data = read_at_most(grade_csv, REFERENCE_CSV_BYTES, "a reference CSV")
        self.grade_files[unit][r] = hashlib.sha256(data).hexdigest()
        rows = read_reference_csv(grade_csv, data)
        if len(rows) < len(generations):
            self.summary.issues.append(
                ImportIssue(
                    gwhere,
                    f"short file: {len(rows)} graded rows for {len(generations)} generations",
                )
            )
        grades = _grade_records(
            rows,
            generations,
            gen_rows,
            grader=match["grader"],
            r=r,
            version=match["version"],
            column=int(match["column"]),
            summary=self.summary,
            where=gwhere,
        )
        self.units.append((grade_prefix(match["grader"], student, d.k, d.g, r), grades))
        self.summary.grades += len(grades)
        self.graders.add(match["grader"])
        self.found_rounds.add(r)
        self.grading_versions.add(match["version"])
        self.grade_rounds_by_unit[unit].add(r)

    def note_gaps(self) -> None:
        """Missing rounds, copied grading rounds and students not found become issues; the
        summary lists what was found."""
        summary, root = self.summary, str(self.root)
        all_g = set().union(*self.rounds_by_k.values())
        for k, gs in sorted(self.rounds_by_k.items()):
            for g in sorted(all_g - gs):
                summary.issues.append(ImportIssue(root, f"k={k}: generation round {g} is missing"))
        for (grader_name, student, k, g), rs in sorted(self.grade_rounds_by_unit.items()):
            for r in sorted(self.found_rounds - rs):
                summary.issues.append(
                    ImportIssue(
                        root, f"{student} k={k} r{g}: grading round {r} by {grader_name} is missing"
                    )
                )
        identical = identical_grading_units(self.grade_files)
        if identical:
            summary.issues.append(
                ImportIssue(root, identical_rounds_message(identical, len(self.grade_files)))
            )
        if self.wanted - self.seen_students:
            missing = ", ".join(sorted(self.wanted - self.seen_students))
            summary.issues.append(ImportIssue(root, f"students not found: {missing}"))
        summary.ks = sorted(self.rounds_by_k)
        summary.students = sorted(self.seen_students)
        summary.graders = sorted(self.graders)
        summary.generation_rounds = sorted(all_g)
        summary.grading_rounds = sorted(self.found_rounds)
        summary.grading_prompt_versions = sorted(self.grading_versions)


def _grading_rounds(runs: Sequence[_RunDir], grader: str | None) -> set[int]:
    """Every grading round folder of the tree (for checking ``--grading-rounds``)."""
    rounds = set()
    for d in runs:
        for gdir in d.path.glob("*/graded/by_*"):
            match = GRADED_DIR.match(gdir.name)
            if match and gdir.is_dir() and (not grader or match["grader"] == grader):
                rounds.add(int(match["r"]))
    return rounds


UnitKey = tuple[str, str, int, int]  # grader, student, k, generation round


def identical_grading_units(
    files: dict[UnitKey, dict[int, str]],
) -> list[tuple[UnitKey, list[int]]]:
    """Units whose grading round files (two or more) are byte-identical, with those rounds. The reference's ``grade.py --nruns R`` appends one record object R times, so all
    its R files hold the last sample only: R copies of one grading, not R gradings."""
    return [
        (unit, sorted(digests))
        for unit, digests in sorted(files.items())
        if len(digests) > 1 and len(set(digests.values())) == 1
    ]


def identical_rounds_message(units: Sequence[tuple[UnitKey, list[int]]], total: int) -> str:
    """One line for all units with byte-identical grading rounds."""
    (grader, student, k, g), rounds = units[0]
    return (
        f"{len(units)} of {total} grading units have byte-identical grading rounds (e.g. "
        f"{student} k={k} r{g} by {grader}: rounds {', '.join(map(str, rounds))} are the same file): the "
        "reference's grade.py --nruns R writes one grading R times, so such rounds are one "
        "grading; the numbers are the reference's, but agreement between these rounds means "
        "nothing"
    )


def _write_unit(run: RunStore, prefix: str, records: Sequence[Any]) -> None:
    writer = run.writer(prefix, part_size=max(1, len(records)), flush_seconds=1e9)
    for record in records:
        writer.add(record)
    writer.flush()
    run.write_manifest(prefix, writer.written)
