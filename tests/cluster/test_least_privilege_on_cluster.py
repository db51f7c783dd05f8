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
