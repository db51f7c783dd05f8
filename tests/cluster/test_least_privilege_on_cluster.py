"""Least privilege on the real control plane: one stable ServiceAccount per profile serves many
runs (cloud workload identity binds to its name), made once with the profile's annotations and
never deleted; model sidecars are skipped by the cloud-identity webhook."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cluster.conftest import Cluster
from tests.cluster.test_failures_on_cluster import experiment

pytestmark = pytest.mark.cluster

ROLE_ARN = "arn:aws:iam::123456789012:role/skillmix-store"


def edit_profile(cluster: Cluster, **changes: Any) -> None:
    doc = yaml.safe_load(cluster.profile_file.read_text())
    doc["clusters"]["local"].update(changes)
    cluster.profile_file.write_text(yaml.safe_dump(doc, sort_keys=False))


def test_one_service_account_serves_many_runs(cluster: Cluster, tmp_path: Path) -> None:
    """Two runs of one profile: the first launch creates the pods' and the coordinator's
    accounts with the profile's annotation (the coordinator reaches the store the same way);
    the second reuses them; cancelling a run leaves them; an account that exists without the
    annotation is kept as it is and the launch says so."""
    edit_profile(cluster, service_account={"annotations": {"eks.amazonaws.com/role-arn": ROLE_ARN}})
    for sub in ("a", "b", "c"):
        (tmp_path / sub).mkdir()
    first, first_id = experiment(tmp_path / "a", name="sa-first")
    second, second_id = experiment(tmp_path / "b", name="sa-second")
    cluster.skillmix("launch", "-f", str(first), check=True)
    out = cluster.skillmix("launch", "-f", str(second), check=True)
    assert "Kubernetes API warning" not in out.stderr, out.stderr
    for name in ("skillmix", "skillmix-coordinator"):
        account = cluster.core().read_namespaced_service_account(name, cluster.namespace)
        assert account.metadata.annotations == {"eks.amazonaws.com/role-arn": ROLE_ARN}
        assert account.automount_service_account_token is False
    for run_id in (first_id, second_id):
        jobs = cluster.jobs(f"skillmix.io/run={run_id}")
        names = {j.spec.template.spec.service_account_name for j in jobs}
        assert names == {"skillmix", "skillmix-coordinator"}
        for job in jobs:
            notes = job.spec.template.metadata.annotations or {}
            # the model sidecar asks the IRSA / Pod Identity webhook for no credentials
            has_model = any(c.name == "model" for c in job.spec.template.spec.init_containers or [])
            assert (notes.get("eks.amazonaws.com/skip-containers") == "model") is has_model
    cluster.skillmix("cancel", first_id, check=True)
    assert cluster.core().read_namespaced_service_account("skillmix", cluster.namespace)

    # an account made by someone else, without the annotation: used, not changed, named
    cluster.skillmix("cancel", second_id, check=True)
    cluster.kubectl("delete", "serviceaccount", "skillmix")
    cluster.kubectl("create", "serviceaccount", "skillmix")
    third, _ = experiment(tmp_path / "c", name="sa-third")
    out = cluster.skillmix("launch", "-f", str(third), check=True)
    assert "ServiceAccount skillmix exists without the profile's annotation" in out.stderr
    assert "eks.amazonaws.com/role-arn" in out.stderr
    account = cluster.core().read_namespaced_service_account("skillmix", cluster.namespace)
    assert not (account.metadata.annotations or {})


def test_network_policy_is_made_per_run_and_goes_with_it(cluster: Cluster, tmp_path: Path) -> None:
    """Each launch attempt gets a NetworkPolicy selecting the run's pods: no ingress (model
    servers listen on loopback), egress to DNS, HTTPS, the API server and the store's port;
    it is owned by the attempt's coordinator Job, so cancelling the run (or its TTL) removes
    it through the garbage collector."""
    from urllib.parse import urlsplit

    from kubernetes import client

    # and every Job and pod carries the profile's labels and PriorityClass, pods an fsGroup
    priority = f"{cluster.namespace}-batch"
    client.SchedulingV1Api(cluster.api()).create_priority_class(
        {"metadata": {"name": priority}, "value": 10}
    )
    edit_profile(
        cluster, labels={"team": "nlp", "cost-centre": "4711"}, priority_class_name=priority
    )
    path, run_id = experiment(tmp_path, name="netpol")
    try:
        cluster.skillmix("launch", "-f", str(path), check=True)
        jobs = cluster.jobs(f"skillmix.io/run={run_id}")
        assert len(jobs) == 4
        for job in jobs:
            for labels in (job.metadata.labels, job.spec.template.metadata.labels):
                assert labels["team"] == "nlp" and labels["cost-centre"] == "4711"
        from tests.cluster.conftest import wait_for

        pods = wait_for(lambda: cluster.pods(f"skillmix.io/run={run_id}"), "pods", 60)
        for pod in pods:
            assert pod.metadata.labels["team"] == "nlp"
            assert pod.spec.priority_class_name == priority and pod.spec.priority == 10
            assert pod.spec.security_context.fs_group == 10001
    finally:
        client.SchedulingV1Api(cluster.api()).delete_priority_class(priority)
    api = client.NetworkingV1Api(cluster.api())
    [policy] = api.list_namespaced_network_policy(
        cluster.namespace, label_selector=f"skillmix.io/run={run_id}"
    ).items
    assert policy.metadata.name.endswith("-a1")
    assert policy.spec.pod_selector.match_labels == {"skillmix.io/run": run_id}
    assert sorted(policy.spec.policy_types) == ["Egress", "Ingress"]
    assert not policy.spec.ingress
    ports = {(p.protocol, p.port) for rule in policy.spec.egress for p in rule.ports}
    store_port = urlsplit(cluster.s3_endpoint).port
    assert {("UDP", 53), ("TCP", 53), ("TCP", 443), ("TCP", 6443), ("TCP", store_port)} <= ports
    [owner] = policy.metadata.owner_references
    [coordinator] = cluster.jobs(f"skillmix.io/run={run_id},skillmix.io/phase=coordinate")
    assert (owner.kind, owner.name, owner.uid) == (
        "Job",
        coordinator.metadata.name,
        coordinator.metadata.uid,
    )
    cluster.skillmix("cancel", run_id, check=True)
    from tests.cluster.conftest import wait_for

    wait_for(
        lambda: (
            not api.list_namespaced_network_policy(
                cluster.namespace, label_selector=f"skillmix.io/run={run_id}"
            ).items
        ),
        "the garbage collector to remove the run's NetworkPolicy",
        60,
    )


def _pod_port(cluster: Cluster, pod: str, container_port: int) -> int:
    """The host port our process kubelet gave ``pod``'s ``container_port`` (pods are processes
    on this host; each pod's ports are mapped: tests/cluster/netns_shim)."""
    folder = f"{cluster.namespace}_{pod}_".encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if not any(folder in e for e in environ if e.startswith(b"TMPDIR=")):
            continue
        for e in environ:
            if e.startswith(b"SKILLMIX_POD_PORTS="):
                for pair in e.split(b"=", 1)[1].decode().split(","):
                    inner, _, outer = pair.partition(":")
                    if inner == str(container_port):
                        return int(outer)
    raise AssertionError(f"no port mapping for {pod}:{container_port}")


def test_a_per_model_server_requires_the_runs_key(cluster: Cluster, tmp_path: Path) -> None:
    """Serving per-model: the model server requires the key of a per-attempt Secret the launch
    made (random, owned by the coordinator Job), which only the run's client gets: the run
    completes, a request without the key gets 401, one with it an answer."""
    import base64
    import json
    import urllib.error
    import urllib.request

    from kubernetes import client

    from tests.cluster.conftest import wait_for

    path, run_id = experiment(
        tmp_path,
        name="keyed",
        serving="per-model",
        students=[{"name": "weak", "backend": "mock", "model": "mock-weak", "quality": 0.4}],
        combinations=20,
    )
    cluster.skillmix("launch", "-f", str(path), check=True)
    [secret] = [
        s
        for s in client.CoreV1Api(cluster.api()).list_namespaced_secret(cluster.namespace).items
        if s.metadata.name.endswith("-model-key-a1")
    ]
    [owner] = secret.metadata.owner_references
    assert owner.kind == "Job" and "-coo-" in owner.name
    key = base64.b64decode(secret.data["api-key"]).decode()
    assert len(key) >= 32
    [job] = cluster.jobs(f"skillmix.io/run={run_id},skillmix.io/phase=generate")
    spec = job.spec.template.spec
    [model] = [c for c in spec.init_containers if c.name == "model"]
    [client_c] = spec.containers
    model_env = {e.name: e.value_from for e in model.env}
    client_env = {e.name: e.value_from for e in client_c.env}
    for env, name in ((model_env, "SKILLMIX_MOCK_API_KEY"), (client_env, "SKILLMIX_DUMMY_API_KEY")):
        assert env[name].secret_key_ref.name == secret.metadata.name
    pod = wait_for(
        lambda: next(
            (
                p
                for p in cluster.pods(f"job-name={job.metadata.name}")
                if p.status.phase == "Running"
            ),
            None,
        ),
        "the per-model pod to run",
        60,
    )
    port = _pod_port(cluster, pod.metadata.name, 8000)
    body = json.dumps(
        {"model": "mock-weak", "messages": [{"role": "user", "content": "hi"}]}
    ).encode()

    def ask(headers: dict[str, str]) -> int:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            data=body,
            headers={"Content-Type": "application/json", **headers},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return int(answer.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)
        except urllib.error.URLError:
            return -1  # not listening yet

    assert wait_for(lambda: ask({}) != -1 and ask({}), "the model server to listen", 60) == 401
    assert ask({"Authorization": "Bearer wrong"}) == 401
    assert ask({"Authorization": f"Bearer {key}"}) == 200
    # the run's own client has the key: its run completes
    from skillmix.store.layout import RunLayout
    from skillmix.store.uri import open_store

    run = open_store(f"{cluster.store}/{run_id}")
    wait_for(lambda: run.exists(RunLayout.summary_key()), "the run's report", 240)
