"""`skillmix launch`, `status`, `logs` and `cancel` on the real control plane, for what a fake
API server once stood in for: what a launch sends (the pre-flight's dry runs first, the API
server's Warning headers counted, only calls the launcher Role allows, as the real RBAC
authorizer judges them), and the verdicts of `launch --wait` and `status` in a namespace that
holds Jobs of an earlier attempt and many failed Jobs (failed by the real Job controller)."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml

from skillmix.store.uri import open_store
from skillmix.vocab import ATTEMPT_LABEL, PHASE_LABEL, RUN_LABEL
from tests.cluster.conftest import Cluster, wait_for
from tests.cluster.test_failures_on_cluster import experiment
from tests.helpers import CliResult, run_cli

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]


def error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def flat(text: str) -> str:
    return " ".join(text.split())


def failing_job(name: str, run_id: str, attempt: int = 1) -> dict[str, Any]:
    """A generation Job of ``run_id`` that starts no pod (parallelism 0) and that the Job
    controller fails with DeadlineExceeded one second after it starts."""
    labels = {RUN_LABEL: run_id, PHASE_LABEL: "generate", ATTEMPT_LABEL: str(attempt)}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "parallelism": 0,
            "activeDeadlineSeconds": 1,
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 10001,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [
                        {
                            "name": "client",
                            "image": "registry.invalid/never-pulled:1",
                            "securityContext": {
                                "allowPrivilegeEscalation": False,
                                "capabilities": {"drop": ["ALL"]},
                            },
                        }
                    ],
                },
            },
        },
    }


def _failed(job: Any) -> bool:
    return any(c.type == "Failed" and c.status == "True" for c in job.status.conditions or [])


@pytest.mark.timeout(240)
def test_wait_and_status_judge_the_current_attempt_and_bound_the_attention_list(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Attempt 1 of a run ended with a failed Job (still there until its TTL); attempt 2 is
    launched: its `--wait` and `status` ignore attempt 1's failure. Beside it, 25 failed Jobs
    of another run: `status` counts them, lists 20 and says how to see the rest; `--all` lists
    every one."""
    path, run_id = experiment(tmp_path)
    run = open_store(f"{cluster.store}/{run_id}")
    run.write_bytes("launches/attempt-001.json", b"{}")  # attempt 1 was fully created
    run.write_bytes("launches/attempt-001.created", b"")
    old = f"{run_id}-old-a1"
    many = [f"r1-gen-s{i:02d}-a1" for i in range(25)]
    batch = cluster.batch()
    for name, owner in [(old, run_id), *((n, "r1") for n in many)]:
        batch.create_namespaced_job(cluster.namespace, failing_job(name, owner))
    wait_for(
        lambda: sum(map(_failed, cluster.jobs())) == len(many) + 1,
        "the Job controller to fail the Jobs at their deadline",
        60,
    )

    # the CLI in this process (the fixture's environment): no interpreter start per call
    result = run_cli("launch", "-f", str(path), "--wait", "--timeout", "3")
    assert result.exit_code == 1, result.stdout + result.stderr
    line = error_line(result.stderr)
    assert "timed out after 3s" in line and old not in line, line
    assert "attempt 2" in flat(result.stdout)
    status = run_cli("status", run_id, "--format", "json")
    assert status.exit_code == 0, status.stderr
    doc = json.loads(status.stdout)
    assert doc["state"] == "running" and doc["attempt"] == 2, doc
    assert doc["previous_attempt_jobs"] == 1 and len(doc["jobs"]) == 4  # + coordinator
    assert all(j["attempt"] == 2 for j in doc["jobs"])

    table = run_cli("status", "r1")
    assert table.exit_code == 0, table.stderr
    listed = [name for name in many if name in table.stdout]
    assert len(listed) == 20, table.stdout
    assert "5 more Jobs need attention (--all" in flat(table.stderr)
    assert "run r1: failed (attempt 1)" in flat(table.stdout)
    assert "DeadlineExceeded" in table.stdout
    every = run_cli("status", "r1", "--all")
    assert every.exit_code == 0, every.stderr
    assert all(name in every.stdout for name in many) and "more Jobs" not in every.stderr


# ---------------------------------------------------------------------------------------------
# what the CLI asks the API server
# ---------------------------------------------------------------------------------------------

_PATH = re.compile(
    r"^/(?:api/v1|apis/(?P<group>[^/]+)/[^/]+)/namespaces/[^/]+/(?P<resource>[^/]+)"
    r"(?:/(?P<name>[^/]+)(?:/(?P<sub>[^/]+))?)?$"
)


def rbac_verb(method: str, url: str) -> tuple[str, str, str]:
    """(apiGroup, resource[/subresource], verb) as the API server authorizes the request."""
    path, _, query = url.partition("?")
    match = _PATH.match(path)
    assert match, url
    group, resource = match["group"] or "", match["resource"]
    if match["sub"]:
        resource = f"{resource}/{match['sub']}"
    if method == "POST":
        verb = "create"
    elif method == "DELETE":
        verb = "delete" if match["name"] else "deletecollection"
    elif match["name"]:
        verb = "get"
    else:
        verb = "watch" if re.search(r"(^|&)watch=(true|True|1)", query) else "list"
    return group, resource, verb


def launcher_rules() -> set[tuple[str, str, str]]:
    docs = list(yaml.safe_load_all((ROOT / "k8s" / "rbac-launcher.yaml").read_text("utf-8")))
    [role] = [d for d in docs if d and d.get("kind") == "Role"]
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def record_api_calls(
    monkeypatch: pytest.MonkeyPatch, cluster: Cluster
) -> list[tuple[str, str, int]]:
    """(method, path?query, status) of every HTTP request this process sends to the API
    server as the launcher (urllib3, under the Kubernetes client and skillmix's raw POSTs)."""
    from urllib.parse import urlsplit

    from urllib3.connectionpool import HTTPConnectionPool

    port = urlsplit(cluster.cp.server).port
    bearer = f"Bearer {cluster.cp.launcher_token}"
    calls: list[tuple[str, str, int]] = []
    lock = threading.Lock()
    original = HTTPConnectionPool.urlopen

    def urlopen(self: HTTPConnectionPool, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        response = original(self, method, url, *args, **kwargs)
        headers = {k.lower(): v for k, v in (kwargs.get("headers") or {}).items()}
        if self.port == port and headers.get("authorization") == bearer:
            with lock:
                calls.append((method, url, int(response.status)))
        return response

    monkeypatch.setattr(HTTPConnectionPool, "urlopen", urlopen)
    return calls


@pytest.mark.timeout(240)
def test_launch_dry_runs_first_counts_warnings_and_asks_only_what_the_launcher_may(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A launch with `--wait`, then `status`, `logs` and `cancel`, run in this process with
    every request to the API server recorded. The pre-flight dry-ran one Pod per distinct pod
    template (fewer than the Jobs) before the first Job was created; the API server's Warning
    header (a deprecated node label in the student's nodeSelector) is printed once, with its
    count; and no call was refused: each is one the launcher Role grants, and the real RBAC
    authorizer answered none with 403."""
    student = {
        "name": "weak",
        "backend": "mock",
        "model": "mock-weak",
        "quality": 0.4,
        "kubernetes": {"node_selector": {"beta.kubernetes.io/os": "linux"}},
    }
    path, run_id = experiment(tmp_path, ks=[2, 3], students=[student])
    calls = record_api_calls(monkeypatch, cluster)

    def cli(*args: str, code: int = 0) -> CliResult:
        result = run_cli(*args)
        assert result.exit_code == code, f"skillmix {args}: {result.stdout}{result.stderr}"
        return result

    launched = cli(
        *("launch", "-f", str(path), "--wait", "--timeout", "4", "--watch-seconds", "1"), code=1
    )
    assert "timed out after 4s" in error_line(launched.stderr)
    jobs = cluster.jobs(f"{RUN_LABEL}={run_id}")
    assert len(jobs) == 6  # generation and grading per k, aggregation, coordinator
    # the pre-flight: dry-run Pods (one per distinct template), all before the first Job
    posts = [(i, url) for i, (method, url, _) in enumerate(calls) if method == "POST"]
    pods = [i for i, url in posts if "/pods" in url]
    created = [i for i, url in posts if url.endswith("/jobs")]  # not a dry run
    assert pods and all("dryRun=All" in calls[i][1] for i in pods)
    assert len(pods) < len(jobs) == len(created)
    assert max(pods) < min(created)
    # the deprecated label's warning on the Jobs' creation: one line, with its count (the
    # pre-flight's dry runs print theirs before)
    warnings = [w for w in launched.stderr.splitlines() if "beta.kubernetes.io/os" in w]
    assert len(warnings) == len(set(warnings)), launched.stderr
    assert warnings[-1].startswith(
        "warning: Kubernetes API warning: spec.template.spec.nodeSelector[beta.kubernetes.io/os]"
    ) and warnings[-1].endswith(" (x2)"), warnings  # both generation Jobs

    wait_for(lambda: cluster.pods(f"{RUN_LABEL}={run_id}"), "the run's pods", 60)
    cli("status", run_id)
    cli("logs", run_id, "--tail", "1")
    cli("cancel", run_id)
    wait_for(lambda: not cluster.jobs(f"{RUN_LABEL}={run_id}"), "the cancelled Jobs to go", 60)

    refused = [c for c in calls if c[2] == 403]
    assert refused == [], refused
    rules = launcher_rules()
    # outside a namespace: /version and discovery, which every user may read
    verbs = {rbac_verb(method, url) for method, url, _ in calls if "/namespaces/" in url}
    assert verbs <= rules, sorted(verbs - rules)
    # what was looked at: the wait watched, then listed pods and events; logs read a log
    assert {
        ("batch", "jobs", "watch"),
        ("", "pods", "list"),
        ("", "events", "list"),
        ("", "pods/log", "get"),
        ("batch", "jobs", "deletecollection"),
    } <= verbs, sorted(verbs)
