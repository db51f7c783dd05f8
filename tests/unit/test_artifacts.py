"""The versioned artifact models: run.json's kinds, version checks, one-line errors, and the
JSON they write (same keys and order as before the models)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from skillmix import artifacts
from skillmix.artifacts import (
    RUN_JSON_ADAPTER,
    EvaluationRun,
    LaunchRecord,
    ReferenceImportRun,
    Summary,
    parse_artifact,
)
from skillmix.config import Experiment
from skillmix.errors import SkillmixError
from skillmix.k8s.launch import JobPlan, LaunchPlan
from skillmix.legacy import ImportIssue, ImportSummary
from skillmix.method.agreement import agreement
from skillmix.method.points import MetricOptions
from skillmix.pipeline.context import RunContext
from skillmix.report.markdown import render_markdown

DATA = Path(__file__).parent / "data" / "artifacts"

EXPERIMENT: dict[str, Any] = Experiment.model_validate(
    {
        "name": "r",
        "ks": [2],
        "students": [{"name": "s", "model": "m"}],
        "grader": {"model": "g"},
    }
).model_dump(mode="json")
RUN = {
    "schema_version": 1,
    "kind": "evaluation",
    "run_id": "r-1",
    "created_at": "2026-01-01T00:00:00.000000Z",
    "skillmix_version": "0.1.0",
    "sharded": False,
    "experiment": EXPERIMENT,
    "catalog": {
        "source": "builtin",
        "hash": "h",
        "skills": [{"name": "a", "category": "c", "definition": "d", "example": "e"}],
        "topics": ["t"],
    },
    "prompts": {
        "generation": {"name": "g1", "hash": "x", "turns": ["u"]},
        "grading": {"name": "r1", "hash": "y", "turns": ["v"], "style": "table"},
    },
}


def models() -> list[type[BaseModel]]:
    return [
        m
        for m in vars(artifacts).values()
        if isinstance(m, type)
        and issubclass(m, BaseModel)
        and m.__module__.startswith(artifacts.__name__ + ".")
    ]


@pytest.mark.parametrize("model", models(), ids=lambda m: m.__name__)
def test_every_field_is_described(model: type[BaseModel]) -> None:
    missing = [n for n, f in model.model_fields.items() if not f.description]
    assert not missing, f"{model.__name__}: {missing}"


def test_evaluation_run_round_trips_key_for_key() -> None:
    run = RUN_JSON_ADAPTER.validate_python(RUN)
    assert isinstance(run, EvaluationRun)
    assert run.model_dump(mode="json") == RUN
    assert list(run.model_dump(mode="json")) == list(RUN)


def test_kind_is_inferred_for_old_files() -> None:
    old = {k: v for k, v in RUN.items() if k not in ("kind", "schema_version")}
    assert isinstance(RUN_JSON_ADAPTER.validate_python(old), EvaluationRun)
    imported = RUN_JSON_ADAPTER.validate_python({"root": "/ref", "seed": 3, "ks": [2]})
    assert isinstance(imported, ReferenceImportRun)
    assert imported.kind == "reference-import" and imported.ks == [2]


@pytest.mark.parametrize(
    ("raw", "needles"),
    [
        (b'{"run_id": "x"}', ["missing field 'experiment'", "more"]),
        (b'{"kind": "other", "run_id": "x"}', ["unknown kind 'other'"]),
        (b'{"schema_version": 2}', ["unknown schema_version 2", "upgrade"]),
        (b"\xff\xfe{}", ["not UTF-8 at byte 0"]),
        (b'{"a": 1}\x00', ["NUL byte"]),
        (b"[1, 2]", ["expected a JSON object"]),
        (b'{"run_id": ', ["invalid JSON at line 1"]),
        (json.dumps({**RUN, "sharded": "maybe"}).encode(), ["sharded:"]),
        (
            json.dumps({**RUN, "experiment": {**EXPERIMENT, "ks": [0]}}).encode(),
            ["experiment.ks:", "every k must be at least 1"],
        ),
        (
            json.dumps({**RUN, "experiment": {**EXPERIMENT, "nosuch": 1}}).encode(),
            ["experiment.nosuch: Extra inputs are not permitted"],
        ),
    ],
)
def test_damage_is_one_error_line_naming_the_file(raw: bytes, needles: list[str]) -> None:
    with pytest.raises(SkillmixError) as info:
        parse_artifact(RUN_JSON_ADAPTER, raw, "runs/r-1/run.json")
    line = info.value.one_line()
    assert type(info.value) is SkillmixError and info.value.exit_code == 2
    assert line.startswith("runs/r-1/run.json: ") and "\n" not in line
    for needle in needles:
        assert needle in line, line


def test_summary_rejects_partial_file() -> None:
    with pytest.raises(SkillmixError, match="summary.json: damaged or partial file: missing"):
        parse_artifact(Summary, b'{"run_id": "x"}', "r/report/summary.json")


def test_the_experiment_is_typed_and_round_trips_through_json() -> None:
    """Lists, nested mappings, floats given as integers and excluded fields (serving) come
    back from JSON as the same model, and write the same JSON again."""
    student = {
        "name": "s",
        "backend": "vllm",
        "model": "m",
        "sampling": {"temperature": 1, "stop": ["\n\n", "END"]},
        "serving": "per-model",  # how it ran: not written
        "vllm": {"args": ["--max-model-len", "4096"], "env": {"A": "1"}},
        "kubernetes": {
            "tolerations": [{"key": "gpu", "operator": "Exists"}],
            "resources": {"limits": {"cpu": 4, "memory": "8Gi"}},
        },
    }
    experiment = Experiment.model_validate(
        {
            "name": "r",
            "ks": [3, 2],
            "students": [student],
            "grader": {"model": "g"},
            "prices": {"m": {"prompt": 1, "completion": 2.5}},
            "metrics": {"filter_skills": ["a"]},
        }
    )
    dumped = experiment.model_dump(mode="json")
    written = json.dumps({**RUN, "experiment": dumped}).encode()
    run = parse_artifact(RUN_JSON_ADAPTER, written, "run.json")
    assert isinstance(run, EvaluationRun) and isinstance(run.experiment, Experiment)
    assert run.experiment.ks == [2, 3] and run.experiment.students[0].sampling.temperature == 1.0
    assert run.experiment.student("s").serving is None  # not recorded in run.json
    again = run.model_dump(mode="json")
    assert again == json.loads(written) and json.dumps(again["experiment"]) == json.dumps(dumped)


def test_run_json_as_older_versions_wrote_it() -> None:
    """run.json written before the experiment was typed reads as it is, and the run written
    again is byte for byte the file (run-v1.json: the version just before; run-v1-first.json:
    the first version, whose mock grader has no quality yet: read as the default 0.7, as that
    version's mock backend used)."""
    raw = (DATA / "run-v1.json").read_bytes()
    run = parse_artifact(RUN_JSON_ADAPTER, raw, "run-v1.json")
    assert isinstance(run, EvaluationRun)
    assert [s.name for s in run.experiment.students] == ["alpha", "beta"]
    assert run.experiment.students[0].sampling.stop == ["\n\n"]
    assert run.experiment.students[0].kubernetes.node_selector == {"pool": "gpu"}
    rewritten = json.dumps(
        run.model_dump(mode="json"), indent=2, sort_keys=True, ensure_ascii=False
    )
    assert (rewritten + "\n").encode() == raw
    ctx = RunContext.from_run(run, "run-v1.json")
    assert ctx.to_run_json() == json.loads(raw) and ctx.run_id == "old-format-ee08fbf3"

    first = parse_artifact(RUN_JSON_ADAPTER, (DATA / "run-v1-first.json").read_bytes(), "r.json")
    assert isinstance(first, EvaluationRun)
    assert first.experiment.grader.quality == 0.7 and first.experiment.students[1].quality == 0.7
    assert first.experiment.students[0].kubernetes.node_selector is None  # added later


def test_summary_json_as_an_older_version_wrote_it() -> None:
    """summary.json from before the experiment was typed reads as it is, writes the same bytes
    again, and renders the report.md that version rendered."""
    raw = (DATA / "summary-v1.json").read_bytes()
    summary = parse_artifact(Summary, raw, "summary-v1.json")
    assert summary.experiment.grader.rounds == 2 and summary.experiment.ks == [1, 2]
    rewritten = json.dumps(summary.model_dump(mode="json"), indent=2, ensure_ascii=False)
    assert (rewritten + "\n").encode() == raw
    markdown = (DATA / "report-v1.md").read_text(encoding="utf-8")
    plots = [(n, t) for t, n in re.findall(r"^!\[(.*)\]\(plots/(.*)\.png\)$", markdown, re.M)]
    assert render_markdown(summary, plots) == markdown


def test_launch_plan_record_is_the_old_as_dict() -> None:
    lp = LaunchPlan("r-1", "s3://b/r-1", "kind", "ns", "rel", 2, values={"x": 1}, rendered="y")
    lp.jobs = [
        JobPlan("generate", "s1", 2, 1, 2, 1, "vllm"),
        JobPlan("aggregate", "-", None, None, 1, 0, "-"),
    ]
    lp.gpu_hours, lp.api_cost_usd = 1.23456, None
    lp.finished_units, lp.total_units = 1, 3
    assert lp.record().model_dump(mode="json") == {
        "run_id": "r-1",
        "run": "s3://b/r-1",
        "cluster": "kind",
        "namespace": "ns",
        "release": "rel",
        "attempt": 2,
        "jobs": [
            {"phase": "generate", "student": "s1", "k": 2, "round": 1, "pods": 2, "gpus_per_pod": 1, "backend": "vllm"},
            {"phase": "aggregate", "student": "-", "k": None, "round": None, "pods": 1, "gpus_per_pod": 0, "backend": "-"},
        ],
        "gpus": 2,
        "estimated_gpu_hours": 1.23,
        "estimated_api_cost_usd": None,
        "finished_units": 1,
        "total_units": 3,
        "serving_estimates": {},  # none computed for this plan
        "gpu_hours_by_student": {},
    }  # fmt: skip


def test_launch_record_units_and_older_records() -> None:
    values = {"generation": [{"student": "s1", "k": "2", "round": 1}], "grading": []}
    record = parse_artifact(
        LaunchRecord, json.dumps({"attempt": 2, "values": values}).encode(), "a.json"
    )
    assert record.schema_version == 1 and record.plan is None
    assert record.units("generate") == [("s1", 2, 1)] and record.units("grade") == []


def test_launch_record_values_write_back_what_they_read() -> None:
    """A resumed launch renders its release from the record's values again: every Helm value
    is kept (order included), typed ones too, and no default is added."""
    values = {
        "run": {"id": "r-1", "attempt": 2},
        "students": {"s1": {"gpus": 1}},
        "generation": [{"student": "s1", "k": 2, "round": 1, "args": ["a"], "gpuWeight": 1}],
        "modelGeneration": [
            {"student": "s2", "units": [{"k": 2, "round": 1}, {"k": 3, "round": 1}], "args": []}
        ],
        "grader": {"backend": "mock"},
        "grading": [{"student": "s1", "k": 2, "round": 1, "waitArgs": ["w"]}],
        "aggregation": {"enabled": True},
    }
    text = json.dumps({"attempt": 2, "values": values}, indent=2)
    record = parse_artifact(LaunchRecord, text.encode(), "attempt-002.json")
    assert record.units("generate") == [("s1", 2, 1), ("s2", 2, 1), ("s2", 3, 1)]
    assert record.units("grade") == [("s1", 2, 1)]
    assert record.values.model_generation[0].units[1].k == 3
    assert json.dumps(record.values.as_dict()) == json.dumps(values)  # same keys, same order
    assert json.dumps(LaunchRecord(attempt=2, values=values).model_dump(mode="json")["values"]) == (
        json.dumps(values)
    )
    only = parse_artifact(LaunchRecord, b'{"attempt": 1, "values": {"run": {}}}', "a.json")
    assert only.values.as_dict() == {"run": {}} and only.units("generate") == []


def test_reference_import_run_json() -> None:
    summary = ImportSummary(root="/ref", seed=1, ks=[2], generation_prompt_versions=["v1"])
    summary.issues.append(ImportIssue("a.csv", "short file"))
    run = summary.to_run()
    data = run.model_dump(mode="json")
    assert data["kind"] == "reference-import" and data["issues"] == ["a.csv: short file"]
    assert data["generation_prompt_versions"] == ["v1"] and data["seed"] == 1


def test_as_dict_replacements_keep_their_output() -> None:
    assert MetricOptions(filter_skills=("a",)).as_dict() == {
        "mode": "strict",
        "generation_agg": "max",
        "vote": "majority",
        "filter_explicit_name": "word",
        "filter_skills": ["a"],
        "bootstrap_samples": 2000,
        "bootstrap_seed": 0,
    }
    from dataclasses import asdict

    assert list(asdict(agreement([[1, 1], [0, 1]]))) == [
        "subjects",
        "ratings",
        "percent",
        "unanimous",
        "expected",
        "kappa",
    ]


def test_cache_value_keeps_its_keys() -> None:
    from skillmix.backends.base import ChatResult

    result = ChatResult(["a"], 3, 4, cached=True, attempts=2, finish_reasons=["stop"])
    value = result.as_cache_value()
    assert value == {
        "texts": ["a"],
        "prompt_tokens": 3,
        "completion_tokens": 4,
        "finish_reasons": ["stop"],
    }
    assert list(value) == ["texts", "prompt_tokens", "completion_tokens", "finish_reasons"]


def test_failure_lists_keep_their_keys_and_order() -> None:
    from skillmix.records import GenerationRecord, GradeRecord
    from skillmix.report.summary import failure_lists

    gen = GenerationRecord(
        student="s1", k=2, generation_round=1, index=3, topic="t", skills=["a", "b"],
        prompt_version="v", answer=None, status="failed", error="boom: x",
    )  # fmt: skip
    grade = GradeRecord(
        student="s1", grader="g", k=2, generation_round=1, grading_round=2, index=4, topic="t",
        skills=["a", "b"], answer="x", prompt_version="v", style="table", status="unparsed",
        parse_detail="no table", attempts=2,
    )  # fmt: skip
    data = failure_lists([gen], [grade]).model_dump(mode="json")
    assert json.dumps(data) == json.dumps(
        {
            "generation_failed": 1,
            "grading_failed": 0,
            "grading_unparsed": 1,
            "grading_retried": 1,
            "generation": [
                {"student": "s1", "k": 2, "generation_round": 1, "index": 3, "reason": "boom: x"}
            ],
            "grading": [
                {
                    "student": "s1",
                    "k": 2,
                    "generation_round": 1,
                    "grading_round": 2,
                    "index": 4,
                    "status": "unparsed",
                    "reason": "no table",
                }
            ],
        }
    )


def test_metric_rows_keep_the_json_of_metric_row_as_dict() -> None:
    """Rows of summary.json (details) and of `aggregate --format json` (no details): the same
    keys in the same order, NaN as null, the rates only with details."""
    from skillmix.artifacts import MetricRowJson
    from skillmix.method.metrics import aggregate
    from skillmix.method.points import GradedAnswer

    answers = [
        GradedAnswer("s", "g", 2, 1, r, 0, "t", ("a", "b"), "One. Two.", p)
        for r, p in ((1, (1.0, 1.0, 1.0, 1.0, 1.0)), (2, None))
    ]
    (row,) = aggregate(answers, MetricOptions(bootstrap_samples=10))
    for details in (False, True):
        data = json.loads(json.dumps(row.as_dict(details=details)))
        dumped = MetricRowJson.model_validate(data).model_dump(mode="json")
        assert dumped == data and list(dumped) == list(data)
    assert "per_skill" not in MetricRowJson.model_validate(row.as_dict()).model_dump()
    full_marks = row.as_dict()["full_marks"]
    assert isinstance(full_marks, dict) and full_marks["stderr"] is None  # n = 1: NaN -> null
    # n = 1 still has an honest interval (Wilson: 0/1 gives [0, 0.79]), never a point
    assert full_marks["ci95"] == pytest.approx([0.0, 0.7935], abs=1e-4) and row.unparsed == 1


def test_leaderboard_rows_write_run_keys_only_when_compared() -> None:
    from skillmix.artifacts import LeaderboardRow

    base = {"rank": 1, "student": "s", "grader": "g", "ks": [2], "score": 0.5, "cells": {"2": None}}
    dumped = LeaderboardRow.model_validate(base).model_dump(mode="json")
    assert not {"run", "run_id", "run_label", "model", "own_score"} & set(dumped)
    assert {k: dumped[k] for k in base} == base
    compared = {
        "rank": 1,
        "student": "s",
        "grader": "g",
        "ks": [2],
        "run": 1,
        "run_id": "r",
        "run_label": "#1 r",
        "model": "s",
        "score": None,
        "cells": {"2": None},
    }
    dumped = LeaderboardRow.model_validate(compared).model_dump(mode="json")
    assert {k: dumped[k] for k in compared} == compared
    assert [k for k in dumped if k in compared] == list(compared)  # the old keys keep their order
