"""Reading the user's YAML files (experiments, cluster profiles): strict YAML with one-line
errors, an experiment's validation problem as one line, and paths relative to the file. The
schema itself lives in :mod:`skillmix.config`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from skillmix.config import Experiment
from skillmix.errors import SkillmixError
from skillmix.limits import EXPERIMENT_BYTES, read_text_file


def format_validation_error(exc: ValidationError, source: str) -> str:
    err = exc.errors()[0]
    path = ".".join(str(p) for p in err["loc"]) or "(top level)"
    if err["type"] == "extra_forbidden":
        return f"{source}: unknown key {path!r}; check the spelling (see `skillmix schema`)"
    if err["type"] == "missing":
        return f"{source}: missing required key {path!r}"
    message = err["msg"].removeprefix("Value error, ")
    more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
    return f"{source}: {path}: {message}{more}"


def parse_experiment(
    data: object, source: str = "<experiment>", *, strict: bool | None = None
) -> Experiment:
    """``strict=False`` only for the quick form, whose numbers arrive as text."""
    if not isinstance(data, dict):
        raise SkillmixError(f"{source}: expected a mapping at the top level")
    try:
        return Experiment.model_validate(data, strict=strict)
    except ValidationError as exc:
        raise SkillmixError(format_validation_error(exc, source)) from None


MAX_YAML_DEPTH = 100  # nesting of mappings and sequences; our files need fewer than 10


def load_yaml(text: str, source: str) -> Any:
    """``yaml.safe_load`` with one-line errors: malformed files, absurd nesting, and a key
    repeated in one mapping (PyYAML keeps the last value silently; merge keys ``<<`` may still
    be overridden)."""

    class StrictLoader(yaml.SafeLoader):
        pass

    def construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> Any:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = loader.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                first = seen.setdefault(key, line)
            except TypeError:  # an unhashable key: PyYAML reports it below
                continue
            if first != line:
                raise SkillmixError(
                    f"{source}:{line}: duplicate key {key!r} (first on line {first})",
                    hint="a key may appear once per mapping; keep one of them",
                )
        loader.flatten_mapping(node)
        return yaml.SafeLoader.construct_mapping(loader, node, deep=True)

    StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
    try:
        depth = 0
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_YAML_DEPTH:
                    line = event.start_mark.line + 1 if event.start_mark else 0
                    raise SkillmixError(
                        f"{source}:{line}: YAML nested deeper than {MAX_YAML_DEPTH} levels"
                    )
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
        return yaml.load(text, Loader=StrictLoader)  # a SafeLoader subclass: safe
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SkillmixError(f"{where}: malformed YAML: {problem}") from None
    except RecursionError:  # aliases can nest without nesting the text
        raise SkillmixError(f"{source}: YAML nested too deeply") from None


def load_experiment(path: str | Path) -> Experiment:
    p = Path(path)
    text = read_text_file(p, EXPERIMENT_BYTES, "an experiment file")
    experiment = parse_experiment(load_yaml(text, str(p)), str(p))
    return resolve_relative_paths(experiment, p.parent)


def resolve_relative_paths(experiment: Experiment, base: Path) -> Experiment:
    """Catalog, prompt and task file paths in a file are relative to that file's folder."""

    def fix(value: str | None) -> str | None:
        if value is None or "://" in value or Path(value).is_absolute():
            return value
        return str((base / value).resolve())

    catalog = experiment.catalog.model_copy(
        update={"skills": fix(experiment.catalog.skills), "topics": fix(experiment.catalog.topics)}
    )
    prompts = experiment.prompts.model_copy(update={"dir": fix(experiment.prompts.dir)})
    generation, grading = experiment.prompts.generation, experiment.prompts.grading
    if generation.endswith(".json"):
        prompts = prompts.model_copy(update={"generation": fix(generation)})
    if grading.endswith(".json"):
        prompts = prompts.model_copy(update={"grading": fix(grading)})
    tasks = [
        t.model_copy(update={"config": fix(t.config), "dataset_file": fix(t.dataset_file)})
        for t in experiment.tasks
    ]
    return experiment.model_copy(update={"catalog": catalog, "prompts": prompts, "tasks": tasks})


def experiment_schema() -> dict[str, Any]:
    return Experiment.model_json_schema()
