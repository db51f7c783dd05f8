"""k8s/policy-coordinator.yaml and k8s/policy-launcher.yaml on the real control plane (the
``control_plane`` fixture applies them for every cluster test, so the launches, Kueue runs,
stuck pods and failed coordinators of the other files show that they allow what a run needs;
these show what they refuse).

The coordinator's identity here is what the kubelet gives a real coordinator pod: a token of
the ServiceAccount ``skillmix-coordinator`` from the TokenRequest API, bound to a pod named like
the coordinator pod of a run (``{run short}-coo-a{attempt}-xxxxx``), so the API server puts the
pod's name in the token's user extra. That pod never runs (its node selector matches no node).
The Jobs are made by the admin, suspended and unschedulable: nothing starts."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from tests.cluster.conftest import IMAGE, Cluster, wait_for

pytestmark = pytest.mark.cluster

COORDINATOR = "skillmix-coordinator"
GATE = "kueue.x-k8s.io/admission-gated-by"
FAILURE = "skillmix.io/failure"
# longer than 20 characters: the chart's short form is the first 11, "-", the last 8
RUN_A, SHORT_A = "admission-policy-a-1a2b3c4d", "admission-p-1a2b3c4d"
RUN_B, SHORT_B = "admission-policy-b-5e6f7a8b", "admission-p-5e6f7a8b"
MERGE = {"_content_type": "application/merge-patch+json"}
NOWHERE = {"skillmix.io/test-node": "none"}  # no node has it: pods stay Pending


def pod_spec(account: str = "default", automount: bool = False) -> dict[str, Any]:
    """A pod spec that Pod Security ``restricted`` admits and no node runs."""
    return {
        "serviceAccountName": account,
        "automountServiceAccountToken": automount,
        "restartPolicy": "Never",
        "nodeSelector": NOWHERE,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 1000,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [
            {
                "name": "c",
                "image": IMAGE,
                "command": ["true"],
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "capabilities": {"drop": ["ALL"]},
                },
            }
        ],
    }


def job(
    name: str,
    run: str,
    *,
    gated: bool = True,
    annotations: dict[str, str] | None = None,
    **pod: Any,
) -> dict[str, Any]:
    """A Job as the chart makes a held-back one (labels, suspended, a deadline)."""
    labels = {"skillmix.io/run": run, "skillmix.io/attempt": "0"}
    if gated:
        labels["skillmix.io/gated"] = "true"
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": labels, "annotations": annotations or {}},
        "spec": {
            "suspend": True,
            "activeDeadlineSeconds": 900,
            "backoffLimit": 0,
            "template": {"metadata": {"labels": labels}, "spec": pod_spec(**pod)},
        },
    }


def coordinator_api(cluster: Cluster, pod_name: str | None) -> Any:
    """A BatchV1Api as the coordinator ServiceAccount of the cluster's namespace, with a token
    bound to a new pod named ``pod_name`` (as the kubelet gets it), or bound to nothing."""
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    core, ns = cluster.core(), cluster.namespace
    try:  # `skillmix launch` creates it for a run; here no run is launched
        core.create_namespaced_service_account(ns, {"metadata": {"name": COORDINATOR}})
    except ApiException as exc:
        if exc.status != 409:
            raise
    spec: dict[str, Any] = {"expirationSeconds": 3600}
    if pod_name is not None:
        pod = core.create_namespaced_pod(
            ns, {"metadata": {"name": pod_name}, "spec": pod_spec(COORDINATOR, automount=True)}
        )
        spec["boundObjectRef"] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "name": pod_name,
            "uid": pod.metadata.uid,
        }
    answer = core.create_namespaced_service_account_token(COORDINATOR, ns, {"spec": spec})
    admin = cluster.api().configuration
    config = client.Configuration()
    config.host, config.ssl_ca_cert = admin.host, admin.ssl_ca_cert
    config.api_key = {"authorization": f"Bearer {answer.status.token}"}
    return client.BatchV1Api(client.ApiClient(config))


def refused(call: Callable[..., Any], *args: Any, policy: str = COORDINATOR, **kwargs: Any) -> str:
    """``call`` is refused by ``policy`` (403); returns the message."""
    from kubernetes.client.rest import ApiException

    try:
        call(*args, **kwargs)
    except ApiException as exc:
        message = str(json.loads(exc.body).get("message", ""))
        assert exc.status == 403, message
        assert f"ValidatingAdmissionPolicy '{policy}'" in message, message
        return message
    raise AssertionError(f"{getattr(call, '__name__', call)}{args} was allowed")


def test_admission_policy_coordinator_patches_only_what_it_needs_of_its_own_run(
    cluster: Cluster,
) -> None:
    """The coordinator of run A releases its Jobs (suspend true -> false, or the Kueue gate
    annotation removed) and fails a stuck one (activeDeadlineSeconds lowered, skillmix.io/failure
    added), exactly as coordinator.py patches them; anything else is refused, with a message
    naming what and why."""
    batch, ns = cluster.batch(), cluster.namespace
    for body in (
        job(f"{SHORT_A}-grd-s-k1-r0-a0", RUN_A),
        job(f"{SHORT_A}-grd-s-k2-r0-a0", RUN_A, annotations={GATE: "skillmix.io/coordinator"}),
        job(f"{SHORT_A}-agg-a0", RUN_A),
        job(f"{SHORT_B}-grd-s-k1-r0-a0", RUN_B),
        job(f"{SHORT_A}-grd-s-k3-r0-a0", RUN_B),  # run A's name, run B's label
    ):
        batch.create_namespaced_job(ns, body)
    coo = coordinator_api(cluster, f"{SHORT_A}-coo-a0-x7k2p")
    grd, gated, agg = f"{SHORT_A}-grd-s-k1-r0-a0", f"{SHORT_A}-grd-s-k2-r0-a0", f"{SHORT_A}-agg-a0"

    def patch(name: str, body: dict[str, Any]) -> Any:
        return coo.patch_namespaced_job(name, ns, body, **MERGE)

    # another run's Job, by name or by label
    message = refused(patch, f"{SHORT_B}-grd-s-k1-r0-a0", {"spec": {"suspend": False}})
    assert "not a Job of its run" in message and f"{SHORT_A}-" in message
    refused(patch, f"{SHORT_A}-grd-s-k3-r0-a0", {"spec": {"suspend": False}})
    # other fields of its own run's Jobs
    assert "labels" in refused(patch, grd, {"metadata": {"labels": {"team": "x"}}})
    assert "annotations team" in refused(patch, grd, {"metadata": {"annotations": {"team": "x"}}})
    assert GATE in refused(patch, grd, {"metadata": {"annotations": {GATE: "x"}}})
    # (a suspended Job's pod scheduling directives are mutable, its containers are not)
    template = {"spec": {"template": {"spec": {"nodeSelector": {"pool": "gpu"}}}}}
    assert "spec.template" in refused(patch, grd, template)
    assert "spec.parallelism" in refused(patch, grd, {"spec": {"parallelism": 2}})
    ttl = {"spec": {"ttlSecondsAfterFinished": 5}}
    assert "spec.ttlSecondsAfterFinished" in refused(patch, grd, ttl)
    raise_deadline = {"spec": {"activeDeadlineSeconds": 901}}
    assert "activeDeadlineSeconds" in refused(patch, grd, raise_deadline)
    # what it does: release (unsuspend; remove the gate), then fail a stuck Job
    patch(grd, {"spec": {"suspend": False}})
    patch(gated, {"metadata": {"annotations": {GATE: None}}})
    assert "release" in refused(patch, grd, {"spec": {"suspend": True}})
    stuck = {
        "metadata": {"annotations": {FAILURE: "pod x stuck in ErrImagePull"}},
        "spec": {"activeDeadlineSeconds": 1},
    }
    patch(agg, stuck)
    assert FAILURE in refused(patch, agg, {"metadata": {"annotations": {FAILURE: "other"}}})
    assert FAILURE in refused(patch, agg, {"metadata": {"annotations": {FAILURE: None}}})
    found = {j.metadata.name: j for j in cluster.jobs(f"skillmix.io/run={RUN_A}")}
    assert found[grd].spec.suspend is False
    assert GATE not in (found[gated].metadata.annotations or {})
    assert found[agg].spec.active_deadline_seconds == 1
    assert found[agg].metadata.annotations[FAILURE] == "pod x stuck in ErrImagePull"
    assert batch.read_namespaced_job(f"{SHORT_A}-grd-s-k3-r0-a0", ns).spec.suspend is True


def test_admission_policy_coordinator_creates_only_held_back_jobs_of_its_run_without_a_token(
    cluster: Cluster,
) -> None:
    """With Kueue's "defer" hold the coordinator creates its run's held-back Jobs from stored
    manifests: only gated Jobs of its run whose pods mount no token and do not run as the
    coordinator's ServiceAccount."""
    ns = cluster.namespace
    coo = coordinator_api(cluster, f"{SHORT_A}-coo-a1-b4n8q")
    create: Callable[..., Any] = coo.create_namespaced_job
    assert "not a Job of its run" in refused(create, ns, job(f"{SHORT_B}-agg-a1", RUN_B))
    assert "skillmix.io/gated" in refused(create, ns, job(f"{SHORT_A}-gen-a1", RUN_A, gated=False))
    mounted = job(f"{SHORT_A}-agg-a1", RUN_A, automount=True)
    assert "automountServiceAccountToken" in refused(create, ns, mounted)
    as_coordinator = job(f"{SHORT_A}-agg-a1", RUN_A, account=COORDINATOR)
    assert "ServiceAccount skillmix-coordinator" in refused(create, ns, as_coordinator)
    create(ns, job(f"{SHORT_A}-agg-a1", RUN_A))
    assert [j.metadata.name for j in cluster.jobs(f"skillmix.io/run={RUN_A}")] == [
        f"{SHORT_A}-agg-a1"
    ]


def test_admission_policy_coordinator_needs_a_pod_bound_token_and_never_deletes(
    cluster: Cluster,
) -> None:
    """A token bound to no pod names no run: refused. Run ids of 20 characters or fewer are
    their own short form, so run ``pol-a`` and run ``pol-a-b`` share a name prefix: the run
    label keeps them apart. DELETE and the status subresource are refused even where RBAC
    grants them."""
    batch, ns = cluster.batch(), cluster.namespace
    batch.create_namespaced_job(ns, job("pol-a-grd-a0", "pol-a"))
    batch.create_namespaced_job(ns, job("pol-a-b-grd-a0", "pol-a-b"))
    release = {"spec": {"suspend": False}}
    unbound = coordinator_api(cluster, None)
    message = refused(unbound.patch_namespaced_job, "pol-a-grd-a0", ns, release, **MERGE)
    assert "not bound to a pod" in message
    coo = coordinator_api(cluster, "pol-a-coo-a0-z9w3m")
    refused(coo.patch_namespaced_job, "pol-a-b-grd-a0", ns, release, **MERGE)
    cluster.kubectl(
        "create", "role", "too-much", "--verb=delete,patch", "--resource=jobs,jobs/status"
    )
    account = f"--serviceaccount={ns}:{COORDINATOR}"
    cluster.kubectl("create", "rolebinding", "too-much", "--role=too-much", account)
    message = wait_for(
        lambda: _refused_once_rbac_allows(coo.delete_namespaced_job, "pol-a-grd-a0", ns),
        "RBAC to grant the coordinator delete",
        timeout=15,
    )
    assert "may not DELETE" in message
    status = {"metadata": {"annotations": {"x": "y"}}}
    assert "/status" in refused(
        coo.patch_namespaced_job_status, "pol-a-grd-a0", ns, status, **MERGE
    )
    coo.patch_namespaced_job("pol-a-grd-a0", ns, release, **MERGE)
    assert batch.read_namespaced_job("pol-a-grd-a0", ns).spec.suspend is False


def _refused_once_rbac_allows(call: Callable[..., Any], *args: Any) -> str:
    """The policy's message refusing ``call``; "" while RBAC still refuses it (its cache)."""
    from kubernetes.client.rest import ApiException

    try:
        call(*args)
    except ApiException as exc:
        message = str(json.loads(exc.body).get("message", ""))
        if exc.status == 403 and "ValidatingAdmissionPolicy" not in message:
            return ""
        return refused(call, *args)
    raise AssertionError(f"{getattr(call, '__name__', call)}{args} was allowed")


def test_admission_policy_launcher_creates_pods_only_as_dry_runs(cluster: Cluster) -> None:
    """The launcher's `create pods` is for the pre-flight's dry runs: a real pod is refused."""
    from kubernetes import client

    core = client.CoreV1Api(cluster.api("launcher"))
    pod = {"metadata": {"name": "launcher-pod"}, "spec": pod_spec()}
    message = refused(
        core.create_namespaced_pod, cluster.namespace, pod, policy="skillmix-launcher"
    )
    assert "dry run" in message
    made = core.create_namespaced_pod(cluster.namespace, pod, dry_run="All")
    assert made.metadata.name == "launcher-pod"
    assert cluster.pods() == []


def test_admission_policy_launcher_creates_only_the_model_key_secret(cluster: Cluster) -> None:
    """The launcher's `create secrets` is for the per-model servers' key alone: that Secret is
    admitted (dry run), any other name, type or key is refused by the policy."""
    from kubernetes import client

    core = client.CoreV1Api(cluster.api("launcher"))
    ns = cluster.namespace
    key = {"metadata": {"name": "run-1-model-key-a1"}, "stringData": {"api-key": "x"}}
    core.create_namespaced_secret(ns, key, dry_run="All")
    policy = "skillmix-launcher-secrets"
    for body in (
        {"metadata": {"name": "aws-credentials"}, "stringData": {"api-key": "x"}},
        {"metadata": {"name": "run-1-model-key-a1"}, "stringData": {"token": "x"}},
        {
            "metadata": {
                "name": "run-1-model-key-a2",
                "annotations": {"kubernetes.io/service-account.name": "skillmix-coordinator"},
            },
            "type": "kubernetes.io/service-account-token",
        },
    ):
        message = refused(core.create_namespaced_secret, ns, body, dry_run="All", policy=policy)
        assert "may create only the per-model servers' key Secret" in message
