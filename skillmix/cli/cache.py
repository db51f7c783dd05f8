"""``skillmix cache warm``: fill the cluster's model cache once, before generation pods read it
offline (``model_cache_offline: true`` in the cluster profile)."""

from __future__ import annotations

import time

import click

from skillmix.cli._output import info
from skillmix.cli.cluster import cluster_option, file_option, wait_timeout_option
from skillmix.errors import RunFailedError
from skillmix.k8s.cache_values import cache_warm_values
from skillmix.k8s.cluster import KubeClient
from skillmix.k8s.helm import helm_template, split_manifests
from skillmix.k8s.profiles import get_profile
from skillmix.loading import load_experiment


@click.group()
def cache() -> None:
    """The model cache of vLLM pods on Kubernetes (a ReadWriteMany PVC at HF_HOME)."""


@cache.command("warm")
@file_option
@cluster_option
@click.option("--dry-run", is_flag=True, help="Print the Job's manifests; create nothing.")
@click.option("--wait", is_flag=True, help="Wait until the downloads finish.")
@wait_timeout_option(3600.0)
def warm_cmd(file: str, cluster: str | None, dry_run: bool, wait: bool, timeout: float) -> None:
    """Download the experiment's vLLM models into the model cache PVC with one Job (no GPU).

    Then set `model_cache_offline: true` in the cluster profile: vLLM pods get
    HF_HUB_OFFLINE=1 and read the weights from the cache, never from the Hub."""

    experiment = load_experiment(file)
    name, profile = get_profile(cluster)
    release, values = cache_warm_values(experiment, profile, name)
    rendered = helm_template(values, release, profile.namespace)
    if dry_run:
        click.echo(rendered, nl=False)
        return

    kube = KubeClient(profile)
    docs = split_manifests(rendered)
    kube.apply(docs, dry_run=True)
    kube.apply(docs)
    models = values["cacheWarm"]["models"]
    info(f"created Job {release}-cache-warm in {profile.namespace}: {', '.join(models)}")
    if not wait:
        info(f"follow it:  kubectl -n {profile.namespace} logs -f job/{release}-cache-warm")
        return
    deadline = time.monotonic() + timeout
    while True:
        states, _version = kube.jobs(release)
        if any(s.state == "Failed" for s in states):
            raise RunFailedError(f"the cache warm Job failed: {states[0].reason or 'see its logs'}")
        if states and all(s.state == "Complete" for s in states):
            break
        if time.monotonic() >= deadline:
            raise RunFailedError(f"timed out after {timeout:g}s; the Job keeps running")
        time.sleep(min(5.0, max(0.1, deadline - time.monotonic())))
    info("the model cache holds every model: set `model_cache_offline: true` in the profile")
