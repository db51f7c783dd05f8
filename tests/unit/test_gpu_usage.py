"""GPU time in the report: the arithmetic over pod usage records and launch plans (MIG shares,
failed and deleted pods, several attempts), reading the records from a run folder (damaged ones
left out with a warning), the summary section (old summaries without it still read) and the
"GPU time" table of report.md and report.html."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from skillmix.artifacts import (
    LaunchPlanRecord,
    LaunchRecord,
    PodUsage,
    Summary,
    UnitRef,
    parse_artifact,
)
from skillmix.k8s.estimate import DECODE_TOKENS_PER_SECOND
from skillmix.k8s.estimate import MODEL_LOAD_SECONDS as PLAN_LOAD_SECONDS
from skillmix.report import gpu_usage
from skillmix.report.build import build_report
from skillmix.report.gpu_usage import gpu_usage_section
from skillmix.store.layout import RunLayout
from skillmix.store.local import LocalStore
from skillmix.store.runs import RunStore
from tests.report_checks import markdown_table_rows_ok, parse_page
from tests.unit.test_report import make_crafted_run

MIG_3G = round(3 / 7, 4)  # nvidia.com/mig-3g.40gb: 3 of 7 compute slices


def pod(
    name: str,
    student: str,
    seconds: float,
    *,
    gpus: float = 1.0,
    attempt: int = 1,
    outcome: str = "Succeeded",
) -> PodUsage:
    return PodUsage(
        pod=name,
        job=f"job-{name}",
        attempt=attempt,
        student=student,
        units=[UnitRef(student=student, k=2, round=1)],
        gpus=gpus,
        gpu_resource="nvidia.com/gpu",
        started_at="2026-01-01T00:00:00Z",
        finished_at="2026-01-01T01:00:00Z",
        seconds=seconds,
        outcome=outcome,
    )


def plan(
    attempt: int, by_student: dict[str, float], total: float | None = None
) -> LaunchPlanRecord:
    return LaunchPlanRecord(
        run_id="r-1",
        run="s3://b/runs/r-1",
        cluster="prod",
        namespace="ns",
        release="skillmix-r-1",
        attempt=attempt,
        jobs=[],
        gpus=2,
        estimated_gpu_hours=round(sum(by_student.values()), 2) if total is None else total,
        estimated_api_cost_usd=None,
        finished_units=0,
        total_units=4,
        gpu_hours_by_student=by_student,
    )


# the arithmetic ---------------------------------------------------------------------------
def test_two_attempts_mig_share_and_a_deleted_pod() -> None:
    pods = [
        # attempt 1: a's pod is deleted (preempted) after 20 minutes; b runs on a MIG slice
        pod("a-1", "a", 1200.0, gpus=2.0, outcome="Deleted"),
        pod("b-1", "b", 3600.0, gpus=MIG_3G),
        # attempt 2 redoes a's unit; one pod fails
        pod("a-2", "a", 1800.0, gpus=2.0, attempt=2),
        pod("a-3", "a", 60.0, gpus=2.0, attempt=2, outcome="Failed"),
    ]
    plans = {1: plan(1, {"a": 0.5, "b": 0.25}), 2: plan(2, {"a": 0.6})}
    section = gpu_usage_section(pods, plans, students=["b", "a", "mock-c"])
    assert section is not None
    assert list(section.students) == ["b", "a"]  # the experiment's order; c had no GPU pod
    a, b = section.students["a"], section.students["b"]
    assert a.pods == 3
    assert a.gpu_seconds == 2 * (1200 + 1800 + 60) == 6120.0
    assert a.gpu_hours == 1.7
    assert a.failed_or_deleted_pods == 2
    assert a.failed_or_deleted_gpu_seconds == 2 * (1200 + 60)
    assert a.estimated_gpu_hours == 1.1  # 0.5 + 0.6 over both attempts
    assert a.measured_over_estimate == round(1.7 / 1.1, 4)
    assert b.pods == 1 and b.gpu_seconds == round(MIG_3G * 3600, 3)
    assert b.gpu_hours == MIG_3G and b.failed_or_deleted_pods == 0
    assert b.failed_or_deleted_gpu_seconds == 0
    assert b.estimated_gpu_hours == 0.25
    assert b.measured_over_estimate == round(MIG_3G / 0.25, 4)
    total = section.total
    assert total.pods == 4 and total.failed_or_deleted_pods == 2
    assert total.gpu_seconds == round(6120 + MIG_3G * 3600, 3)
    assert total.estimated_gpu_hours == 1.35
    assert total.measured_over_estimate == round((6120 + MIG_3G * 3600) / 3600 / 1.35, 4)
    assert section.attempts == [1, 2] and section.unmeasured_attempts == []
    assert section.warnings == []
    assert "attempts 1, 2" in section.note


def test_no_usage_records_no_section() -> None:
    assert gpu_usage_section([], {1: plan(1, {"a": 1.0})}, ["a"]) is None


def test_attempts_without_records_or_plans_are_named() -> None:
    pods = [pod("a-2", "a", 3600.0, attempt=2), pod("a-3", "a", 3600.0, attempt=3)]
    plans = {1: plan(1, {"a": 2.0}), 2: plan(2, {"a": 0.5}), 3: None}
    section = gpu_usage_section(pods, plans, ["a"])
    assert section is not None
    # attempt 1 planned GPU time but recorded none: left out of the estimate; attempt 3 has
    # no plan, so its estimate is unknown (said, not guessed)
    assert section.attempts == [2, 3] and section.unmeasured_attempts == [1]
    assert section.students["a"].estimated_gpu_hours == 0.5
    assert section.students["a"].gpu_hours == 2.0
    assert section.students["a"].measured_over_estimate == 4.0
    assert "attempt 1 planned GPU time but recorded none" in section.note
    assert any("attempt 3 has no launch record" in w for w in section.warnings)


def test_records_before_the_per_student_estimate() -> None:
    old = plan(1, {}, total=0.75)  # a plan written before gpu_hours_by_student
    section = gpu_usage_section([pod("a-1", "a", 1800.0)], {1: old}, ["a"])
    assert section is not None
    assert section.students["a"].estimated_gpu_hours is None
    assert section.students["a"].measured_over_estimate is None
    assert section.total.estimated_gpu_hours == 0.75
    assert section.total.measured_over_estimate == round(0.5 / 0.75, 4)


def test_a_pod_without_its_student_label_counts_for_its_units_student() -> None:
    unlabelled = pod("x-1", "", 3600.0).model_copy(
        update={"units": [UnitRef(student="a", k=2, round=1)]}
    )
    section = gpu_usage_section([unlabelled], {}, ["a"])
    assert section is not None and list(section.students) == ["a"]
    assert section.students["a"].estimated_gpu_hours is None
    assert section.total.estimated_gpu_hours is None


def test_note_states_the_plans_assumptions() -> None:
    # report/ may not import k8s/: the copies of the plan's assumptions must stay equal
    assert gpu_usage.MODEL_LOAD_SECONDS == PLAN_LOAD_SECONDS
    assert gpu_usage.DECODE_TOKENS_PER_SECOND == DECODE_TOKENS_PER_SECOND
    note = gpu_usage.gpu_usage_note([1])
    assert f"{PLAN_LOAD_SECONDS} s per model load" in note
    assert f"{DECODE_TOKENS_PER_SECOND:g} tokens/s" in note
    assert "start to its end" in note


def test_hours_text_keeps_short_runs_visible() -> None:
    assert gpu_usage.gpu_hours_text(0.0083) == "0.008"
    assert gpu_usage.gpu_hours_text(12.345) == "12.35"
    assert gpu_usage.gpu_hours_text(None) == "—"


# a run folder with usage records ----------------------------------------------------------
def write_usage(run: RunStore, pods: list[PodUsage]) -> None:
    for p in pods:
        run.store.write_bytes(
            RunLayout.pod_usage(p.pod), json.dumps(p.model_dump(mode="json")).encode()
        )


def write_launch(run: RunStore, attempt: int, by_student: dict[str, float]) -> None:
    record = LaunchRecord(attempt=attempt, plan=plan(attempt, by_student), values={})
    run.store.write_bytes(
        RunLayout.launch_record(attempt), json.dumps(record.model_dump(mode="json")).encode()
    )


@pytest.fixture
def crafted_run(tmp_path: Path) -> tuple[RunStore, Any]:
    run_dir, ctx = make_crafted_run(tmp_path)
    return RunStore(LocalStore(run_dir)), ctx


def test_report_of_a_run_without_usage_has_no_gpu_time(crafted_run: tuple[RunStore, Any]) -> None:
    run, ctx = crafted_run
    summary, files, _ = build_report(run, ctx, dpi=40)
    assert summary.gpu_usage is None
    assert json.loads(files[RunLayout.SUMMARY])["gpu_usage"] is None
    assert "GPU time" not in files[RunLayout.REPORT_MD].decode()
    assert "GPU time" not in files[RunLayout.REPORT_HTML].decode()


def test_report_shows_gpu_time_table(crafted_run: tuple[RunStore, Any]) -> None:
    run, ctx = crafted_run
    write_launch(run, 1, {"evil": 0.5, "plain": 1.0})
    write_launch(run, 2, {"evil": 0.25})
    write_usage(
        run,
        [
            pod("gen-evil-1", "evil", 1800.0, outcome="Deleted"),
            pod("gen-evil-2", "evil", 900.0, attempt=2),
            pod("gen-plain-1", "plain", 3600.0, gpus=MIG_3G),
        ],
    )
    summary, files, _ = build_report(run, ctx, dpi=40)
    data = json.loads(files[RunLayout.SUMMARY])["gpu_usage"]
    assert list(data["students"]) == ["evil", "plain"]
    assert data["students"]["evil"] == {
        "pods": 2,
        "gpu_seconds": 2700.0,
        "gpu_hours": 0.75,
        "failed_or_deleted_pods": 1,
        "failed_or_deleted_gpu_seconds": 1800.0,
        "estimated_gpu_hours": 0.75,
        "measured_over_estimate": 1.0,
    }
    assert data["total"]["pods"] == 3 and data["total"]["estimated_gpu_hours"] == 1.75
    assert data["attempts"] == [1, 2] and data["warnings"] == []
    # the summary reads back as the model
    assert parse_artifact(Summary, files[RunLayout.SUMMARY], "summary.json") == summary

    md = files[RunLayout.REPORT_MD].decode()
    assert "### GPU time" in md
    markdown_table_rows_ok(md)
    part = md.split("### GPU time", 1)[1].split("\n\n- generations failed", 1)[0]
    rows = [line for line in part.splitlines() if line.startswith("|")]
    assert rows[0].startswith("| student | pods | measured GPU-hours | estimated GPU-hours |")
    assert rows[2:] == [
        "| evil | 2 | 0.750 | 0.750 | 1.00 | 0.500 (1 pod) |",
        f"| plain | 1 | {MIG_3G:.3f} | 1.00 | {MIG_3G:.2f} | — |",
        f"| **total** | 3 | {0.75 + MIG_3G:.2f} | 1.75 | {(0.75 + MIG_3G) / 1.75:.2f} | 0.500 (1 pod) |",
    ]
    assert "600 s per model load" in part

    html = files[RunLayout.REPORT_HTML].decode()
    parse_page(html)
    table = re.search(r'<table class="gpu-time">.*?</table>', html, re.S)
    assert table, "no GPU time table"
    t = table.group(0)
    assert t.count("<caption") == 1 and re.match(r"<table[^>]*><caption>", t)
    assert all("scope=" in th for th in re.findall(r"<th(?:\s[^>]*)?>", t))
    assert "<td>plain</td>" in t and "of which failed or deleted" in t
    assert 'id="gpu-time"' in html and "40 tokens/s" in html


def test_damaged_records_are_left_out_with_a_warning(crafted_run: tuple[RunStore, Any]) -> None:
    run, ctx = crafted_run
    write_usage(run, [pod("gen-evil-1", "evil", 3600.0)])
    run.store.write_bytes(RunLayout.pod_usage("gen-evil-2"), b'{"pod": "gen-evil-2"')
    run.store.write_bytes(RunLayout.launch_record(1), b"not json")
    run.store.write_bytes(RunLayout.launch_created(1), b"")  # not a record: ignored
    summary, files, _ = build_report(run, ctx, dpi=40)
    section = summary.gpu_usage
    assert section is not None and section.total.pods == 1
    assert section.total.estimated_gpu_hours is None
    text = " ".join(section.warnings)
    assert "usage/pods/gen-evil-2.json: damaged file" in text
    assert "launches/attempt-001.json: damaged file" in text
    assert "attempt 1 has no launch record" in text
    assert "Warning" in files[RunLayout.REPORT_MD].decode()


def test_old_summary_without_gpu_usage_still_reads(crafted_run: tuple[RunStore, Any]) -> None:
    run, ctx = crafted_run
    write_usage(run, [pod("gen-evil-1", "evil", 3600.0)])
    summary, files, _ = build_report(run, ctx, dpi=40)
    data = json.loads(files[RunLayout.SUMMARY])
    assert data["gpu_usage"] is not None
    del data["gpu_usage"]  # a summary.json written before the section existed
    old = parse_artifact(Summary, json.dumps(data).encode(), "old/summary.json")
    assert old.gpu_usage is None and old.schema_version == 1
    assert old.model_copy(update={"gpu_usage": summary.gpu_usage}) == summary
