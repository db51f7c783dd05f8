"""GPU time through the real aggregation task: a mock run evaluated locally (no usage records:
no GPU section), then the records a Kubernetes run leaves in its folder (the coordinator's
``usage/pods/*.json``, the launch records of two attempts) added to it, and ``skillmix task
aggregate`` (what the aggregation Job runs) and ``skillmix report`` run again."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from skillmix.artifacts import LaunchPlanRecord, LaunchRecord, PodUsage, UnitRef
from skillmix.store.layout import RunLayout
from tests.helpers import run_cli
from tests.report_checks import markdown_table_rows_ok, parse_page


def _evaluate(tmp: Path) -> Path:
    store = tmp / "store"
    exp = {
        "name": "gpu",
        "seed": 3,
        "ks": [2],
        "combinations": 3,
        "students": [
            {"name": "big", "backend": "mock", "model": "mock-big", "quality": 0.8},
            {"name": "small", "backend": "mock", "model": "mock-small", "quality": 0.4},
        ],
        "grader": {"name": "grader", "backend": "mock", "model": "mock-grader", "rounds": 2},
        "metrics": {"bootstrap_samples": 50},
        "store": str(store),
    }
    path = tmp / "gpu.yaml"
    path.write_text(yaml.safe_dump(exp))
    result = run_cli("evaluate", "-f", str(path), "--no-progress")
    assert result.exit_code == 0, result.stderr
    (run_dir,) = list(store.glob("gpu-*"))
    return run_dir


def _usage(name: str, student: str, attempt: int, gpus: float, seconds: float, outcome: str) -> str:
    return json.dumps(
        PodUsage(
            pod=name,
            job=name.rsplit("-", 1)[0],
            attempt=attempt,
            student=student,
            units=[UnitRef(student=student, k=2, round=1)],
            gpus=gpus,
            gpu_resource="nvidia.com/mig-1g.10gb" if gpus < 1 else "nvidia.com/gpu",
            started_at="2026-03-01T10:00:00.000Z",
            finished_at="2026-03-01T11:00:00.000Z",
            seconds=seconds,
            outcome=outcome,
        ).model_dump(mode="json")
    )


def _launch(attempt: int, by_student: dict[str, float]) -> str:
    plan = LaunchPlanRecord(
        run_id="gpu-x",
        run="s3://bucket/runs/gpu-x",
        cluster="prod",
        namespace="skillmix",
        release=f"skillmix-gpu-{attempt}",
        attempt=attempt,
        jobs=[],
        gpus=2,
        estimated_gpu_hours=round(sum(by_student.values()), 2),
        estimated_api_cost_usd=None,
        finished_units=0,
        total_units=4,
        gpu_hours_by_student=by_student,
    )
    record = LaunchRecord(attempt=attempt, launched_at="2026-03-01T09:59:00Z", plan=plan, values={})
    return json.dumps(record.model_dump(mode="json"))


def test_aggregation_reports_measured_gpu_time(tmp_path: Path) -> None:
    run_dir = _evaluate(tmp_path)
    report = run_dir / "report"
    # a local run: no usage records, no section, no table
    assert json.loads((report / "summary.json").read_text())["gpu_usage"] is None
    assert "GPU time" not in (report / "report.md").read_text()
    assert "GPU time" not in (report / "report.html").read_text()

    files = {
        RunLayout.launch_record(1): _launch(1, {"big": 1.0, "small": 0.1}),
        RunLayout.launch_record(2): _launch(2, {"big": 0.5}),
        # attempt 1: big's pod was preempted after 30 minutes; small ran on a MIG 1g slice
        RunLayout.pod_usage("big-gen-0-a1"): _usage("big-gen-0-a1", "big", 1, 2.0, 1800, "Deleted"),
        RunLayout.pod_usage("small-gen-0-a1"): _usage(
            "small-gen-0-a1", "small", 1, round(1 / 7, 4), 2520, "Succeeded"
        ),
        # attempt 2 redid big's unit
        RunLayout.pod_usage("big-gen-0-a2"): _usage(
            "big-gen-0-a2", "big", 2, 2.0, 2700, "Succeeded"
        ),
    }
    for key, text in files.items():
        (run_dir / key).parent.mkdir(parents=True, exist_ok=True)
        (run_dir / key).write_text(text)

    result = run_cli("task", "aggregate", "--run", str(run_dir))
    assert result.exit_code == 0, result.stderr
    gpu = json.loads((report / "summary.json").read_text())["gpu_usage"]
    assert gpu["attempts"] == [1, 2] and gpu["unmeasured_attempts"] == [] and not gpu["warnings"]
    big, small, total = gpu["students"]["big"], gpu["students"]["small"], gpu["total"]
    assert list(gpu["students"]) == ["big", "small"]
    assert big["pods"] == 2 and big["gpu_seconds"] == 2 * (1800 + 2700) and big["gpu_hours"] == 2.5
    assert big["failed_or_deleted_pods"] == 1 and big["failed_or_deleted_gpu_seconds"] == 3600
    assert big["estimated_gpu_hours"] == 1.5 and big["measured_over_estimate"] == round(
        2.5 / 1.5, 4
    )
    assert small["gpu_seconds"] == round(round(1 / 7, 4) * 2520, 3) and small["gpu_hours"] == 0.1
    assert small["estimated_gpu_hours"] == 0.1 and small["measured_over_estimate"] == 1.0003
    assert total["pods"] == 3 and total["gpu_hours"] == 2.6
    assert total["estimated_gpu_hours"] == 1.6 and total["failed_or_deleted_pods"] == 1

    md = (report / "report.md").read_text()
    markdown_table_rows_ok(md)
    section = md.split("### GPU time", 1)[1]
    assert "pod's start to its end" in section and "600 s per model load" in section
    assert "| big | 2 | 2.50 | 1.50 | 1.67 | 1.00 (1 pod) |" in section
    assert "| small | 1 | 0.100 | 0.100 | 1.00 | — |" in section
    assert "| **total** | 3 | 2.60 | 1.60 | 1.62 | 1.00 (1 pod) |" in section

    page = (report / "report.html").read_text()
    parse_page(page)
    table = re.search(r'<table class="gpu-time"><caption>[^<]+</caption>.*?</table>', page, re.S)
    assert table and "<td>big</td>" in table.group(0) and "<tfoot>" in table.group(0)
    assert all("scope=" in th for th in re.findall(r"<th(?:\s[^>]*)?>", table.group(0)))

    # `skillmix report --out` rebuilds the same section from the run folder
    out = tmp_path / "out"
    result = run_cli("report", str(run_dir), "--out", str(out))
    assert result.exit_code == 0, result.stderr
    assert json.loads((out / "summary.json").read_text())["gpu_usage"] == gpu
