"""A whole launch with every skillmix container run from the image that `make image` built.

The process kubelet runs pods whose image is ``localhost/skillmix:TAG`` in podman containers
(tests/cluster/kubelet.py): the coordinator, the generation clients beside their mock-server
sidecars (meeting on loopback), the grading clients, the waits and the aggregation all run the
image's installed skillmix as uid 10001 on a read-only root, with the pod's volumes, the
service-account token at its real path and the store's credentials from the Secret. The report
must equal the local executor's. Needs SKILLMIX_IMAGE (`make cluster-test` builds the image
and sets it).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from skillmix.loading import load_experiment
from skillmix.pipeline.context import resolve_context
from skillmix.store.uri import open_store
from tests.cluster.conftest import Cluster
from tests.cluster.test_status_on_cluster import edit_profile

pytestmark = pytest.mark.cluster

REPO_ROOT = Path(__file__).resolve().parents[2]
EXPERIMENT = REPO_ROOT / "k8s" / "experiment.kind.yaml"


@pytest.fixture
def built_image() -> str:
    image = os.environ.get("SKILLMIX_IMAGE", "")
    if not image:
        pytest.skip("SKILLMIX_IMAGE is not set: `make cluster-test` builds the image and sets it")
    assert image.startswith("localhost/skillmix:"), f"the kubelet runs only `make image`'s: {image}"
    return image


def test_a_whole_launch_runs_from_the_built_image(
    cluster: Cluster, built_image: str, tmp_path: Path
) -> None:
    from skillmix.executors.local import evaluate

    edit_profile(cluster, image=built_image, image_pull_policy="Never")
    run_id = resolve_context(load_experiment(EXPERIMENT)).run_id
    launched = cluster.skillmix(
        *("launch", "-f", str(EXPERIMENT), "--cluster", "local", "--wait", "--timeout", "420"),
        timeout=480,
    )
    kubelet_log = cluster.cp.log("kubelet")
    assert launched.returncode == 0, (
        launched.stdout
        + launched.stderr
        + (kubelet_log.read_text()[-3000:] if kubelet_log.exists() else "")
    )

    jobs = cluster.jobs(f"skillmix.io/run={run_id}")
    phases = {j.metadata.labels.get("skillmix.io/phase") for j in jobs}
    assert {"coordinate", "generate", "grade", "aggregate"} <= phases, phases
    pods = cluster.pods(f"skillmix.io/run={run_id}")
    containers = [
        status
        for pod in pods
        for status in [
            *(pod.status.init_container_statuses or []),
            *(pod.status.container_statuses or []),
        ]
    ]
    assert len(containers) >= 2 * len(pods) - 2  # client + model or wait, coordinator alone
    for status in containers:
        assert status.image == built_image and status.image_id == built_image, status
    for pod in pods:  # the chart's restricted pods, which the runtime now enforces
        for container in [*(pod.spec.init_containers or []), *pod.spec.containers]:
            context = container.security_context
            assert context.run_as_user == 10001 and context.read_only_root_filesystem

    local_store = tmp_path / "local"
    evaluate(load_experiment(EXPERIMENT), store_uri=str(local_store), progress=False)
    local = json.loads((local_store / run_id / "report" / "summary.json").read_text("utf-8"))
    remote = json.loads(open_store(f"{cluster.store}/{run_id}").read_bytes("report/summary.json"))
    assert remote["metrics"]["rows"] == local["metrics"]["rows"]
    assert open_store(f"{cluster.store}/{run_id}").read_bytes("report/report.html")
