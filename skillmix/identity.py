"""A run's result identity: the one owner of which settings determine a run's numbers.

The run id hashes `ResultIdentity.fields()`, and `skillmix compare` shows and compares the
same fields (`comparable_settings`), all but the students, who are what a comparison ranks.
So a setting that changes the run id cannot be ignored by compare: each of its leaves either
belongs to a compared setting (`SETTINGS`) or is named in `NOT_COMPARED` with the reason, and
a leaf that matches neither is shown under "other settings" and fails a unit test.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from skillmix.config import Experiment

# setting key -> how compare labels it (table row order)
SETTING_LABELS: dict[str, str] = {
    "catalog": "catalog hash",
    "generation_prompt": "generation prompt (version, hash)",
    "grading_prompt": "grading prompt (version, hash)",
    "grader": "grader model and settings",
    "grading_rounds": "grading rounds (R)",
    "generation_rounds": "generation rounds (G)",
    "combinations": "M (combinations per k)",
    "ks": "k values",
    "sampling": "sampling",
    "seed": "seed",
    "tasks": "reasoning tasks (name, n, files, revision)",
    "metrics": "metric options",  # not in the run id: aggregation options, set per report
    "other": "other settings",
}

# leaf path of the identity (dots) -> its setting; the first matching prefix decides
SETTINGS: tuple[tuple[str, str], ...] = (
    ("catalog", "catalog"),
    ("prompts.generation", "generation_prompt"),
    ("prompts.grading", "grading_prompt"),
    ("grader.rounds", "grading_rounds"),
    ("grader.", "grader"),
    ("generation_rounds", "generation_rounds"),
    ("combinations", "combinations"),
    ("ks", "ks"),
    ("sampling", "sampling"),
    ("order_seed", "sampling"),
    ("seed", "seed"),
    ("tasks", "tasks"),
)

# leaves in the run id that do not make two runs' numbers incomparable, and why
NOT_COMPARED: dict[str, str] = {
    "grader.name": "a label in paths and reports: the same grader under another name grades the same",
}


@dataclass(frozen=True)
class ResultIdentity:
    """Everything that determines a run's results (not budgets, endpoints or where runs live)."""

    experiment: Experiment
    catalog_hash: str
    prompt_hashes: Mapping[str, str]  # generation, grading
    task_files: Mapping[str, str | None] = field(default_factory=dict)  # task -> files digest

    def fields(self) -> dict[str, Any]:
        e = self.experiment
        tasks = [
            {"name": t.name, "n": t.n, "revision": t.revision, "files": self.task_files.get(t.name)}
            for t in e.tasks
        ]
        return {
            **({"tasks": tasks} if tasks else {}),  # absent: run ids from before tasks stay
            "seed": e.seed,
            "order_seed": e.order_seed,
            "ks": e.ks,
            "combinations": e.combinations,
            "generation_rounds": e.generation_rounds,
            "sampling": e.sampling,
            "catalog": self.catalog_hash,
            "prompts": dict(self.prompt_hashes),
            "students": [
                {
                    **s.identity(),
                    "name": s.name,
                    "system_prompt": s.system_prompt,
                    "sampling": s.sampling.request_params(),
                }
                for s in e.students
            ],
            "grader": {
                **e.grader.identity(),
                "name": e.grader.name,
                "rounds": e.grader.rounds,
                "style": e.grader.style,
                "system_prompt": e.grader.system_prompt,
                "sampling": e.grader.sampling.request_params(),
            },
        }

    def run_id(self) -> str:
        return f"{self.experiment.name}-{config_hash(self.fields())}"


def config_hash(data: Mapping[str, Any], length: int = 8) -> str:
    """Hash of a canonical form (sorted keys), so key order never changes a run id."""
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def leaves(data: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted path -> value of every leaf (an empty mapping is a leaf)."""
    if isinstance(data, Mapping) and data:
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(leaves(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): data}


def setting_of(path: str) -> str | None:
    """The compared setting a leaf belongs to (None: not compared, see NOT_COMPARED)."""
    if path in NOT_COMPARED:
        return None
    for prefix, setting in SETTINGS:
        if path == prefix or (prefix.endswith(".") and path.startswith(prefix)):
            return setting
        if path.startswith(prefix + "."):
            return setting
    return "other"


def _shown(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    if isinstance(value, str) and len(value) > 40:  # e.g. a system prompt: its digest
        return "sha256:" + hashlib.sha256(value.encode()).hexdigest()[:12]
    return str(value)


def comparable_settings(
    fields: Mapping[str, Any], prompt_names: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Each compared setting of a run (its identity's fields without the students) as one
    string: two runs are comparable when every string is equal. Every leaf is shown, so any
    change of the run id but a NOT_COMPARED one changes a string."""
    grouped: dict[str, list[tuple[str, Any]]] = {}
    shared = {k: v for k, v in fields.items() if k != "students"}
    for path, value in leaves(shared).items():
        setting = setting_of(path)
        if setting is not None:
            grouped.setdefault(setting, []).append((path, value))
    names = prompt_names or {}
    out: dict[str, str] = {}
    for setting, items in grouped.items():
        values = dict(items)
        if setting in ("generation_prompt", "grading_prompt"):
            which = setting.removesuffix("_prompt")
            digest = values[f"prompts.{which}"]
            out[setting] = f"{names[which]} ({digest})" if which in names else str(digest)
        elif setting == "sampling":
            out[setting] = f"{values.get('sampling')} (order seed {values.get('order_seed')})"
        elif setting == "grader":
            model = values.pop("grader.model", "?")
            details = [
                f"{path.removeprefix('grader.').removeprefix('sampling.')} {_shown(v)}"
                for path, v in sorted(values.items())
                if v is not None and v != {}
            ]
            out[setting] = f"{model} ({', '.join(details)})" if details else str(model)
        else:
            out[setting] = "; ".join(
                _shown(v) if len(items) == 1 else f"{p} {_shown(v)}" for p, v in items
            )
    return out
