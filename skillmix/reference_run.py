"""The run context of a reference import (``skillmix import-reference``): what ``report`` and
``aggregate`` need of a run that no experiment file describes. The catalog and prompts are
found next to the import or built in; the rest comes from the tree's folder names."""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

from skillmix.artifacts import ReferenceImportRun
from skillmix.catalog import Catalog, Skill, load_catalog
from skillmix.errors import SkillmixError
from skillmix.loading import parse_experiment
from skillmix.method.prompts import PromptKind, PromptTemplate, make_template
from skillmix.pipeline.context import RunContext
from skillmix.promptset import load_prompt_version
from skillmix.store.runs import RunStore, utc_now

IMPORT_BACKEND = "openai"  # a placeholder: a reference tree does not say how it was served


def _experiment_name(run_uri: str) -> str:
    """A valid experiment name from the run folder's name."""
    base = run_uri.rstrip("/").rsplit("/", 1)[-1]
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", base).strip("._-")[:54].strip("._-")
    return name or "reference-import"


def _nearby_catalog(info: ReferenceImportRun, skills: set[str], topics: set[str]) -> Catalog:
    """The catalog beside the tree (the reference release keeps skills.csv and topics.txt next
    to its experiment folder) when it names every imported skill and topic: it gives the
    categories. Otherwise one made of the names alone (no definitions, no categories)."""

    parent = Path(info.root).parent
    for folder in (Path(info.root), parent):
        files = folder / "skills.csv", folder / "topics.txt"
        if all(f.is_file() for f in files):
            try:
                catalog = load_catalog(*files)
            except SkillmixError:
                continue
            if skills <= set(catalog.skill_names) and topics <= set(catalog.topics):
                return catalog
    return Catalog(
        skills=tuple(Skill(name, "", "", "") for name in sorted(skills)),
        topics=tuple(sorted(topics)),
        source=f"names in {info.root}",
    )


def _prompt(info: ReferenceImportRun, kind: PromptKind, versions: list[str]) -> PromptTemplate:
    """The prompt version beside the tree (``prompts/{generation,grade}/{version}.json``) when
    it is there, else a template that only names the version."""

    version = versions[0] if versions else "unknown"
    for folder in (Path(info.root) / "prompts", Path(info.root).parent / "prompts"):
        if folder.is_dir():
            try:
                return load_prompt_version(kind, version, folder)
            except SkillmixError:
                continue
    note = f"(reference import: the {kind} prompt {version!r} is not stored in the tree)"
    return make_template(version, kind, [note], info.root)


def reference_context(info: ReferenceImportRun, run: RunStore, run_uri: str) -> RunContext:
    """A run context for a reference import, so that the report builder reads it as any run:
    students and grader from the import (backend unknown: shown as the model name), k, rounds
    and M from the records, metrics in reference mode, catalog and prompts from beside the
    tree where the reference release keeps them. Several graders: a SkillmixError."""

    if len(info.graders) != 1:
        raise SkillmixError(
            f"{run_uri}: a report needs one grader; this import holds "
            f"{', '.join(info.graders) or 'none'}",
            hint="import again with --grader NAME (one run folder per grader)",
        )
    generations = run.generation_records()
    grades = run.grade_records()
    per_unit: dict[tuple[str, int, int], int] = defaultdict(int)
    for g in generations:
        per_unit[(g.student, g.k, g.generation_round)] += 1
    styles: list[str] = sorted({r.style for r in grades})
    grader = info.graders[0]
    experiment = parse_experiment(
        {
            "name": _experiment_name(run_uri),
            "seed": info.seed,
            "ks": info.ks,
            "combinations": max(per_unit.values(), default=1),
            "generation_rounds": max(info.generation_rounds, default=1),
            "students": [{"name": s, "backend": IMPORT_BACKEND, "model": s} for s in info.students],
            "grader": {
                "name": grader,
                "backend": IMPORT_BACKEND,
                "model": grader,
                "rounds": max(info.grading_rounds, default=1),
                "style": styles[0] if len(styles) == 1 else "auto",
            },
            "metrics": {"mode": "reference"},
        },
        f"{run_uri}/run.json",
    )
    catalog = _nearby_catalog(
        info,
        {s for r in generations for s in r.skills} | {s for r in grades for s in r.skills},
        {r.topic for r in generations} | {r.topic for r in grades},
    )
    return RunContext(
        experiment=experiment,
        catalog=catalog,
        generation_prompt=_prompt(info, "generation", info.generation_prompt_versions),
        grading_prompt=_prompt(info, "grading", info.grading_prompt_versions),
        run_id=_experiment_name(run_uri),
        created_at=info.created_at or utc_now(),
    )
