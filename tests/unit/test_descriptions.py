"""Every field of the experiment file, the cluster profile and the records is described.

The descriptions feed ``skillmix schema`` (and the schemas of profiles and records), so a field
without one is undocumented for users.
"""

from __future__ import annotations

import types
import typing

import pytest
from pydantic import BaseModel

from skillmix.config import Experiment
from skillmix.k8s.profiles import ProfileFile
from skillmix.records import GenerationRecord, GradeRecord


def _nested_models(annotation: object) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin = typing.get_origin(annotation)
    if origin is None and not isinstance(annotation, types.UnionType):
        return []
    return [m for arg in typing.get_args(annotation) for m in _nested_models(arg)]


def walk(root: type[BaseModel]) -> list[type[BaseModel]]:
    """``root`` and every model reachable from its fields (lists, dicts and unions included)."""
    seen: list[type[BaseModel]] = []
    todo = [root]
    while todo:
        model = todo.pop()
        if model in seen:
            continue
        seen.append(model)
        for field in model.model_fields.values():
            todo += _nested_models(field.annotation)
    return seen


def undescribed(root: type[BaseModel], exempt: frozenset[str] = frozenset()) -> list[str]:
    return [
        f"{model.__name__}.{name}"
        for model in walk(root)
        for name, field in model.model_fields.items()
        if name not in exempt and not (field.description or "").strip()
    ]


def test_walk_reaches_nested_models() -> None:
    names = {m.__name__ for m in walk(Experiment)}
    assert {"StudentSpec", "GraderSpec", "SamplingParams", "VllmSpec", "MetricSpec"} <= names
    assert {"ClusterProfile", "S3Settings", "SecretRef", "GpuSettings", "Deadlines"} <= {
        m.__name__ for m in walk(ProfileFile)
    }
    assert {"Turn", "Usage"} <= {m.__name__ for m in walk(GenerationRecord)}


def test_experiment_fields_are_described() -> None:
    assert undescribed(Experiment) == []


@pytest.mark.parametrize("root", [ProfileFile, GenerationRecord, GradeRecord])
def test_profile_and_record_fields_are_described(root: type[BaseModel]) -> None:
    assert undescribed(root) == []
