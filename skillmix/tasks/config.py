"""A reasoning task as configuration: which dataset (Hugging Face id, subset, split), which keys
hold the question and the answer, the prompt template and how answers are scored. The built-in
tasks (``builtin/*.yaml``) use SkyThought's dataset ids, splits, filters and answer keys, so
that results are comparable; a user's own file (``--task-config FILE``) adds a task without
editing the installed package."""

from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from skillmix.errors import SkillmixError
from skillmix.limits import EXPERIMENT_BYTES, read_text_file
from skillmix.loading import format_validation_error, load_yaml
from skillmix.task_spec import TaskSpec

# how a task builds its prompt and scores a response (SkyThought's handlers)
Handler = Literal["math", "aime", "olympiadbench_math", "gpqa_diamond", "numina"]


class Preprocess(BaseModel):
    """Row filters applied after loading, in this order (SkyThought's preprocess_config)."""

    model_config = ConfigDict(extra="forbid")

    url_contains: str | None = Field(None, description="Keep rows whose `url` contains this.")
    source: str | None = Field(None, description="Keep rows whose `source` is this.")
    answer_contains: str | None = Field(
        None, description="Keep rows whose answer field contains this (e.g. boxed)."
    )


class TaskConfig(BaseModel):
    """One reasoning task."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,62}$", description="Task name.")
    handler: Handler = Field(description="Prompt building and scoring (SkyThought's handler).")
    dataset_path: str = Field(min_length=1, description="Hugging Face dataset id.")
    dataset_subset: str | list[str] | None = Field(
        None, description="Subset (configuration) name; a list is read in turn and joined."
    )
    dataset_split: str = Field("train", description="Split to read.")
    question_key: str = Field(min_length=1, description="Column holding the question.")
    answer_key: str = Field(min_length=1, description="Column holding the reference answer.")
    template: str = Field(
        min_length=1, description="User turn; {prompt} or a column name in braces."
    )
    preprocess: Preprocess = Field(default_factory=Preprocess, description="Row filters.")
    gated: bool = Field(False, description="The dataset needs accepted terms and a token.")
    size: int | None = Field(None, ge=1, description="Rows after filtering, as published.")

    @property
    def subsets(self) -> list[str | None]:
        if isinstance(self.dataset_subset, list):
            return list(self.dataset_subset)
        return [self.dataset_subset]

    @property
    def needs_grader(self) -> bool:
        """Rule-scored: no grader model, so no grading Jobs."""
        return False


def parse_task_config(text: str, source: str) -> TaskConfig:
    """A task file's text as a TaskConfig; any problem is one line naming ``source``."""
    data = load_yaml(text, source)
    if not isinstance(data, dict):
        raise SkillmixError(f"{source}: expected a mapping at the top level")
    try:
        return TaskConfig.model_validate(data)
    except ValidationError as exc:
        raise SkillmixError(format_validation_error(exc, source)) from None


def load_task_config(path: str | Path) -> TaskConfig:
    """A user's task file (``--task-config FILE``)."""
    text = read_text_file(path, EXPERIMENT_BYTES, "a task file")
    return parse_task_config(text, str(path))


def builtin_tasks() -> dict[str, TaskConfig]:
    """The tasks that ship with skillmix, by name."""
    folder = resources.files("skillmix.tasks") / "builtin"
    tasks = {}
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            config = parse_task_config(entry.read_text(encoding="utf-8"), f"builtin/{entry.name}")
            tasks[config.name] = config
    return tasks


def resolve_task(name: str | None, config_file: str | None) -> TaskConfig:
    """``--task NAME`` (built in) or ``--task-config FILE`` (whose name may be given too)."""
    if config_file:
        config = load_task_config(config_file)
        if name and name != config.name:
            raise SkillmixError(
                f"--task {name} does not match the name {config.name!r} in {config_file}",
                hint="give one of them, or make them agree",
            )
        return config
    known = builtin_tasks()
    if not name:
        raise SkillmixError("give --task NAME or --task-config FILE (see `skillmix tasks`)")
    if name not in known:
        raise SkillmixError(
            f"--task: unknown task {name!r}", hint=f"known tasks: {', '.join(sorted(known))}"
        )
    return known[name]


def task_digest(spec: TaskSpec, where: str) -> str | None:
    """A task of an experiment checked (its name or file resolves: one line naming ``where``
    otherwise) and its files (config, dataset file) as one digest for the run id; None when
    it has none (a built-in task read from the Hub: its revision names the data)."""
    config = resolve_task(spec.name, spec.config)
    if spec.config and config.name != spec.name:
        raise SkillmixError(f"{where}.name: {spec.name!r} is not the name in {spec.config}")
    digest = hashlib.sha256()
    files = [f for f in (spec.config, spec.dataset_file) if f]
    for path in files:
        try:
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
        except OSError as exc:
            raise SkillmixError(f"{where}: {path}: cannot read: {exc.strerror}") from None
    return f"sha256:{digest.hexdigest()}" if files else None
