"""`make image-test`: the built image holds everything a run needs and runs as a pod runs it.

Each test runs containers of the image (tests/image/conftest.py: uid 10001 from the image,
read-only root, tmpfs /tmp, no capabilities, no network unless loopback is needed) and never
the source tree, so a file missing from the wheel, a wrong entrypoint or an unwritable HOME
fails here and not in a user's first pod.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import yaml

import skillmix
from skillmix.loading import parse_experiment
from skillmix.pipeline.context import resolve_context
from skillmix.store.local import LocalStore
from skillmix.store.runs import RunStore
from tests.helpers import run_cli
from tests.image.conftest import POD_UID, REPO_ROOT, Image, podman

EXPERIMENT: dict[str, Any] = {
    "name": "image-test",
    "seed": 3,
    "ks": [2, 3],
    "combinations": 4,
    "generation_rounds": 2,
    "catalog": {},
    "students": [
        {"name": "strong", "backend": "mock", "model": "mock-strong", "quality": 0.9},
        {"name": "weak", "backend": "mock", "model": "mock-weak", "quality": 0.4},
    ],
    "grader": {
        "name": "judge",
        "backend": "mock",
        "model": "mock-grader",
        "quality": 0.95,
        "rounds": 3,
    },
    "metrics": {"bootstrap_samples": 50},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def metrics_of(report: Path) -> list[dict[str, Any]]:
    """The report's metric rows, without what names the place or time of the run."""
    summary = json.loads((report / "summary.json").read_text())
    rows: list[dict[str, Any]] = summary["metrics"]["rows"]
    assert rows
    return rows


# ---------------------------------------------------------------------------------------------
# the image as a pod runs it
# ---------------------------------------------------------------------------------------------


def test_the_cli_runs_as_uid_10001_on_a_read_only_root_with_home_in_tmp(image: Image) -> None:
    ids = image.run("-c", "id -u; id -g; echo $HOME", entrypoint="/bin/sh").stdout.split()
    assert ids == [str(POD_UID), str(POD_UID), "/tmp"]
    writes = image.shell(
        "touch $HOME/probe && echo home-writable; touch /usr/local/probe 2>&1 || true"
    ).stdout
    assert "home-writable" in writes
    assert "Read-only file system" in writes, writes

    helped = image.run()  # the image's CMD is --help
    assert "Usage: skillmix" in helped.stdout
    for command in ("evaluate", "launch", "task", "mock-server", "version"):
        assert command in helped.stdout

    version = json.loads(image.run("version", "--format", "json").stdout)
    assert version["skillmix"] == skillmix.__version__
    assert version["revision"] == image.label("org.opencontainers.image.revision")
    assert version["revision"] and version["revision"] != "unknown"
    assert version["python"].startswith("3.11.")
    assert all(version["packages"].values()), version["packages"]


def test_the_image_holds_the_installed_package_and_no_sources_compilers_or_caches(
    image: Image,
) -> None:
    script = r"""
import importlib.resources as r, json, os, shutil, skillmix
def files(package, sub=""):
    root = r.files(package).joinpath(sub) if sub else r.files(package)
    out = []
    for entry in root.iterdir():
        if entry.is_file():
            out.append(entry.name)
    return sorted(out)
print(json.dumps({
    "module": skillmix.__file__,
    "templates": files("skillmix.builtin_chart", "templates"),
    "chart": files("skillmix.builtin_chart"),
    "generation": files("skillmix.builtin_prompts", "generation"),
    "grading": files("skillmix.builtin_prompts", "grading"),
    "catalog": files("skillmix.catalog", "data"),
    "report": files("skillmix.report"),
    "compilers": [c for c in ("gcc", "cc", "g++", "make") if shutil.which(c)],
    "src": os.path.exists("/src") or os.path.exists("/dist") or os.path.exists("/app"),
    "pip_cache": [p for p in ("/root/.cache/pip", "/tmp/.cache/pip") if os.path.exists(p)],
    "wheels": [f for d, _, fs in os.walk("/usr/local") for f in fs if f.endswith(".whl")],
}))
"""
    found = json.loads(image.run("-c", script, entrypoint="python").stdout)
    assert found["module"] == "/usr/local/lib/python3.11/site-packages/skillmix/__init__.py"

    def source(folder: Path, pattern: str = "*") -> list[str]:
        return sorted(p.name for p in folder.glob(pattern) if p.is_file())

    chart = REPO_ROOT / "helm" / "skillmix"
    assert found["templates"] == source(chart / "templates")
    assert set(source(chart)) - {"README.md"} <= set(found["chart"])
    assert found["generation"] == source(REPO_ROOT / "prompts" / "generation", "*.json")
    assert found["grading"] == source(REPO_ROOT / "prompts" / "grading", "*.json")
    catalog = REPO_ROOT / "skillmix" / "catalog" / "data"
    assert found["catalog"] == sorted(
        p.name for p in catalog.iterdir() if p.suffix in (".csv", ".txt")
    )
    assert "page_script.js" in found["report"]
    assert found["compilers"] == []
    assert not found["src"], "build stage folders leaked into the final image"
    assert found["pip_cache"] == []
    assert found["wheels"] == []


def test_a_whole_mock_run_in_the_image_writes_the_same_report_as_the_source_tree(
    image: Image, pod_volume: Path, tmp_path: Path
) -> None:
    config = tmp_path / "config"
    config.mkdir()
    (config / "experiment.yaml").write_text(yaml.safe_dump({**EXPERIMENT, "store": "/out/runs"}))
    result = image.run(
        "evaluate",
        "-f",
        "/config/experiment.yaml",
        volumes={config: "/config:ro", pod_volume: "/out"},
    )
    reports = list(pod_volume.glob("runs/*/report"))
    assert len(reports) == 1, result.stderr
    report = reports[0]
    for name in ("report.html", "report.md", "summary.json", "metrics.csv", "scores.csv"):
        assert (report / name).is_file(), f"{name} missing from {report}"
    assert list((report / "plots").iterdir()), "no plots: matplotlib in the image failed"
    owner = {p.stat().st_uid for p in pod_volume.rglob("*")}
    assert owner == {POD_UID}

    # The same experiment from the source tree: the image changes nothing the method computes.
    here = tmp_path / "host"
    (tmp_path / "host.yaml").write_text(yaml.safe_dump({**EXPERIMENT, "store": str(here)}))
    local = run_cli("evaluate", "-f", str(tmp_path / "host.yaml"))
    assert local.exit_code == 0, local.stderr
    (host_report,) = here.glob("*/report")
    assert host_report.parent.name == report.parent.name, "the run's identity differs"
    assert metrics_of(report) == metrics_of(host_report)
    assert (report / "scores.csv").read_text() == (host_report / "scores.csv").read_text()


def test_the_pod_entrypoints_run_a_phased_run_against_a_mock_server_container(
    image: Image, pod_volume: Path
) -> None:
    """What the chart's pods run: `task generate` beside a mock-server sidecar (both from the
    image, meeting on loopback as a pod's containers do), then `task grade` and `task
    aggregate` on the run folder that `launch` would have written."""
    ctx = resolve_context(parse_experiment({**EXPERIMENT, "students": EXPERIMENT["students"][:1]}))
    ctx.sharded = True
    folder = pod_volume / "runs" / ctx.run_id
    RunStore(LocalStore(folder)).write_run_json(ctx.to_run_json())
    subprocess.run(["chown", "-R", f"{POD_UID}:{POD_UID}", str(pod_volume)], check=False)
    run_uri = f"/out/runs/{ctx.run_id}"
    volumes = {pod_volume: "/out"}

    port = free_port()
    sidecar = f"skillmix-image-test-{uuid.uuid4().hex[:8]}"
    podman(
        "run",
        "-d",
        "--name",
        sidecar,
        *(f for f in ("--read-only", "--cap-drop", "ALL", "--pull", "never")),
        "--tmpfs",
        "/tmp:rw,mode=1777",
        "--network",
        "host",
        image.ref,
        *("mock-server", "--host", "127.0.0.1", "--port", str(port), "--seed", "3"),
        *("--model", "mock-strong=0.9", "--model", "mock-grader=0.95"),
    )
    sidecar_url = f"http://127.0.0.1:{port}/v1"
    try:
        for k in (2, 3):
            for g in (1, 2):
                image.run(
                    *("task", "generate", "--run", run_uri, "--student", "strong"),
                    *("--k", str(k), "--round", str(g), "--attempt", "1"),
                    *("--base-url", sidecar_url, "--model-load-timeout", "60"),
                    network="host",
                    volumes=volumes,
                )
                image.run(
                    *("task", "grade", "--run", run_uri, "--student", "strong"),
                    *("--k", str(k), "--round", str(g), "--attempt", "1"),
                    *("--base-url", sidecar_url),
                    network="host",
                    volumes=volumes,
                )
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=10) as reply:
            served = json.load(reply)
    finally:
        podman("rm", "-f", "-t", "2", sidecar, check=False)
    # the requests went to the sidecar: at least one per answer and one per graded answer
    assert served["by_path"].get("/v1/chat/completions", 0) >= 16 + 16, served
    generated = list(folder.glob("generations/**/*.jsonl")) + list(
        folder.glob("generations/**/*.json")
    )
    assert generated, sorted(p.name for p in folder.rglob("*"))[:20]

    started = time.monotonic()
    image.run("task", "aggregate", "--run", run_uri, "--attempt", "1", volumes=volumes)
    assert time.monotonic() - started < 120
    report = folder / "report"
    assert (report / "report.html").is_file()
    rows = metrics_of(report)
    assert {(r["student"], r["k"]) for r in rows} == {("strong", 2), ("strong", 3)}


def test_a_reasoning_task_runs_in_the_image_from_a_dataset_file(
    image: Image, pod_volume: Path
) -> None:
    """The task YAMLs ship in the wheel, datasets reads the file, sympy scores in workers."""
    data = Path(__file__).resolve().parents[1] / "data" / "tasks"
    result = image.run(
        "evaluate", "--task", "math500", "--dataset-file", "/data/math500.jsonl",
        "--model", "mock-math", "--backend", "mock", "--backend-args", "quality=1.0",
        "--n", "2", "--sampling-params", "temperature=0.7", "--result-dir", "/out/results",
        "--format", "json",
        volumes={data: "/data:ro", pod_volume: "/out"},
    )  # fmt: skip
    summary = json.loads(result.stdout)
    assert summary["accuracy"] == 1.0, result.stderr
    assert summary["pass_at_k"] == {"k=2": 100.0, "k=1": 100.0}
    [folder] = pod_volume.glob("results/mock-math_math500_*")
    assert (folder / "results.json").is_file()
