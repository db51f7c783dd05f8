"""Checks on a finished run folder shared by the fault-injection and crash/resume tests.

Everything here reads the run the way a consumer must: only parts listed by a ``_SUCCESS``
manifest, each part checked against the manifest's record count and sha256.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skillmix.pipeline.context import RunContext
from skillmix.records import GenerationRecord, GradeRecord

GenKey = tuple[str, int, int, int]  # (student, k, generation_round, index)
GradeKey = tuple[str, int, int, int, int]  # (..., grading_round)


@dataclass
class RunRecords:
    generations: list[GenerationRecord] = field(default_factory=list)
    grades: list[GradeRecord] = field(default_factory=list)
    manifests: int = 0
    parts: int = 0


def read_manifested_records(run_dir: Path) -> RunRecords:
    """Every record of every part listed by every manifest; asserts manifest integrity."""
    out = RunRecords()
    for manifest_path in sorted(run_dir.rglob("_SUCCESS")):
        folder = manifest_path.parent
        top = folder.relative_to(run_dir).parts[0]
        assert top in ("generations", "grades"), manifest_path
        manifest = json.loads(manifest_path.read_text())
        out.manifests += 1
        total = 0
        for part in manifest["parts"]:
            data = (folder / part["key"]).read_bytes()
            assert hashlib.sha256(data).hexdigest() == part["sha256"], f"{folder}/{part['key']}"
            lines = [line for line in data.split(b"\n") if line.strip()]
            assert len(lines) == part["records"], f"{folder}/{part['key']}"
            total += len(lines)
            out.parts += 1
            for line in lines:
                if top == "generations":
                    out.generations.append(GenerationRecord.model_validate_json(line))
                else:
                    out.grades.append(GradeRecord.model_validate_json(line))
        assert total == manifest["records"], f"{manifest_path}: record count"
    return out


def gen_key(r: GenerationRecord) -> GenKey:
    return (r.student, r.k, r.generation_round, r.index)


def grade_key(r: GradeRecord) -> GradeKey:
    return (r.student, r.k, r.generation_round, r.index, r.grading_round)


def planned_generation_keys(ctx: RunContext) -> set[GenKey]:
    e = ctx.experiment
    return {
        (s.name, k, g, c.index)
        for s in e.students
        for k in e.ks
        for g in range(1, e.generation_rounds + 1)
        for c in ctx.combinations(k)
    }


def duplicates(keys: list[Any]) -> list[Any]:
    return sorted(k for k, n in Counter(keys).items() if n > 1)


def check_complete_and_unique(ctx: RunContext, records: RunRecords) -> None:
    """No duplicate keys; every planned generation present; every ok generation graded in
    every grading round (and nothing else graded)."""
    gen_keys = [gen_key(r) for r in records.generations]
    assert not duplicates(gen_keys), f"duplicate generations: {duplicates(gen_keys)[:5]}"
    planned = planned_generation_keys(ctx)
    assert set(gen_keys) == planned, (
        f"missing {sorted(planned - set(gen_keys))[:5]}, unplanned {sorted(set(gen_keys) - planned)[:5]}"
    )
    grade_keys = [grade_key(r) for r in records.grades]
    assert not duplicates(grade_keys), f"duplicate grades: {duplicates(grade_keys)[:5]}"
    rounds = ctx.experiment.grader.rounds
    planned_grades = {
        (*gen_key(r), gr)
        for r in records.generations
        if r.status == "ok"
        for gr in range(1, rounds + 1)
    }
    assert set(grade_keys) == planned_grades, (
        f"missing {sorted(planned_grades - set(grade_keys))[:5]}, "
        f"unplanned {sorted(set(grade_keys) - planned_grades)[:5]}"
    )
