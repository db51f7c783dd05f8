"""``skillmix clusters|render|launch|status|logs|cancel``: the Kubernetes executor's CLI."""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from skillmix import settings
from skillmix.cli._output import echo_json, format_option, info, stdout_console, warn, write_files
from skillmix.errors import SkillmixError

if TYPE_CHECKING:
    from rich.table import Table

    from skillmix.k8s.cluster import KubeClient
    from skillmix.k8s.launch import LaunchPlan

cluster_option = click.option(
    "--cluster",
    default=None,
    envvar=settings.CLUSTER.name,
    help="Cluster profile name (skillmix.yaml).",
)
file_option = click.option(
    "-f",
    "--file",
    "file",
    required=True,
    type=click.Path(dir_okay=False),
    help="Experiment YAML file.",
)


@click.command("clusters")
@format_option(("table", "json"))
def clusters_cmd(fmt: str) -> None:
    """List the cluster profiles (./skillmix.yaml, $SKILLMIX_CONFIG or the user config dir)."""
    from skillmix.k8s.profiles import load_profiles, profile_paths

    profiles, where = load_profiles()
    if fmt == "json":
        echo_json(
            {
                "file": str(where) if where else None,
                "default": profiles.default,
                "clusters": {n: p.model_dump(mode="json") for n, p in profiles.clusters.items()},
            }
        )
        return
    if not profiles.clusters:
        info(f"no cluster profiles (searched {', '.join(map(str, profile_paths()))})")
        return
    from rich.table import Table

    table = Table(title=f"cluster profiles ({where})")
    for column in ("name", "context", "namespace", "store", "image", "kueue queue"):
        table.add_column(column)
    for name, p in profiles.clusters.items():
        marker = " (default)" if name == profiles.default else ""
        table.add_row(
            name + marker,
            p.context or "(current)",
            p.namespace,
            p.store,
            p.image,
            p.kueue_queue or "",
        )
    stdout_console().print(table)


def plan_table(lp: LaunchPlan) -> Table:
    from rich.table import Table

    table = Table(title=f"run {lp.run_id}: attempt {lp.attempt} on {lp.cluster}/{lp.namespace}")
    for column in ("phase", "student", "k", "round", "backend", "pods", "GPUs/pod"):
        table.add_column(
            column, justify="right" if column in ("k", "round", "pods", "GPUs/pod") else "left"
        )
    for j in lp.jobs:
        table.add_row(
            j.phase,
            j.student,
            str(j.k or ""),
            str(j.round or ""),
            j.backend,
            str(j.pods),
            str(j.gpus_per_pod),
        )
    cost = "n/a (unknown prices)" if lp.api_cost_usd is None else f"${lp.api_cost_usd:,.2f}"
    table.caption = (
        f"{len(lp.jobs)} Jobs, {lp.gpus} GPUs, ~{lp.gpu_hours:.1f} GPU-hours, API cost up to {cost}; "
        f"{lp.finished_units}/{lp.total_units} units already finished"
    )
    return table


@click.command("render")
@file_option
@cluster_option
@click.option(
    "--out",
    "out",
    type=click.Path(file_okay=False),
    default=None,
    help="Write values.yaml and manifests.yaml here (default: manifests to stdout).",
)
def render_cmd(file: str, cluster: str | None, out: str | None) -> None:
    """Render the run's Kubernetes objects with helm template (no cluster or store needed)."""
    import yaml

    from skillmix.config import load_experiment
    from skillmix.k8s.launch import plan_launch, prepare_launch

    name, profile, ctx, _run = prepare_launch(load_experiment(file), cluster, check_store=False)
    lp = plan_launch(ctx, profile, name, None)
    for line in lp.serving_lines():  # stderr: stdout stays the manifests
        info(line)
    if out is None:
        click.echo(lp.rendered, nl=False)
        return
    target = Path(out)
    values = yaml.safe_dump(lp.values, sort_keys=False)
    write_files(
        target,
        {"values.yaml": values.encode("utf-8"), "manifests.yaml": lp.rendered.encode("utf-8")},
    )
    stdout_console().print(plan_table(lp))
    info(f"run id: {lp.run_id}")
    info(f"wrote {target / 'values.yaml'} and {target / 'manifests.yaml'}")


@click.command("launch")
@file_option
@cluster_option
@click.option(
    "--dry-run",
    is_flag=True,
    help="Plan and render only, as a first launch: no network call (store, Kubernetes API).",
)
@click.option(
    "--wait", is_flag=True, help="Watch until the aggregation Job ends, then print the metrics."
)
@click.option(
    "--timeout", type=float, default=24 * 3600.0, show_default=True, help="Seconds --wait waits."
)
@format_option(("table", "json"))
def launch_cmd(
    file: str, cluster: str | None, dry_run: bool, wait: bool, timeout: float, fmt: str
) -> None:
    """Launch (or resume) a run on Kubernetes: one Job per unit, from the same plan as `evaluate`."""
    from skillmix.config import load_experiment
    from skillmix.k8s.cluster import KubeClient
    from skillmix.k8s.launch import plan_launch, prepare_launch, record_launch, rendered_manifests

    # a dry run makes no network call: neither the store nor the Kubernetes API is read
    name, profile, ctx, run = prepare_launch(
        load_experiment(file), cluster, check_store=not dry_run
    )
    lp = plan_launch(ctx, profile, name, None if dry_run else run)
    from skillmix.store.runs import SUMMARY_JSON

    done = not dry_run and lp.finished_units == lp.total_units and run.store.exists(SUMMARY_JSON)
    # json: one document; when metrics follow (--wait, or a finished run) they join the plan
    record = lp.record().model_dump(mode="json")
    plan = record if fmt == "json" and (done or (wait and not dry_run)) else None
    if fmt == "json" and plan is None:
        echo_json(record)
    elif fmt != "json":
        stdout_console().print(plan_table(lp))
    if fmt != "json":
        for line in lp.serving_lines():
            info(line)
    info(f"run id: {lp.run_id}")
    if done:
        info("every unit is finished and the report exists; nothing to launch")
        _print_metrics(lp.run_uri, fmt, plan)
        return
    if dry_run:
        info(
            "dry run: nothing created; the store was not read, so this is the plan of a first "
            "launch (see `skillmix render` for the manifests)"
        )
        return
    kube = KubeClient(profile)
    docs = rendered_manifests(lp)
    kube.apply(docs, dry_run=True)  # rights, namespace, validity: fail before writing anything
    record_launch(run, ctx, lp)
    created = kube.apply(docs)
    info(f"created {len(created)} objects in namespace {profile.namespace} (attempt {lp.attempt})")
    info(
        f"follow it:  skillmix status {lp.run_id} --cluster {name}   |   skillmix logs {lp.run_id} --cluster {name} --follow"
    )
    info(f"report:     {lp.run_uri}/report/ (when the aggregation Job is done)")
    if wait:
        _wait(kube, lp.run_id, timeout)
        _print_metrics(lp.run_uri, fmt, plan)


def _wait(kube: KubeClient, run_id: str, timeout: float) -> None:
    from skillmix.k8s.cluster import wait_for_run

    last: dict[str, int] = {}

    def on_change(states: list[Any]) -> None:
        counts: dict[str, int] = {}
        for s in states:
            counts[s.state] = counts.get(s.state, 0) + 1
        if counts != last:
            last.clear()
            last.update(counts)
            info("jobs: " + ", ".join(f"{v} {k.lower()}" for k, v in sorted(counts.items())))

    wait_for_run(kube, run_id, timeout=timeout, on_change=on_change)
    info(f"run {run_id} finished")


def _print_metrics(run_uri: str, fmt: str, plan: dict[str, Any] | None = None) -> None:
    from skillmix.errors import RunFailedError
    from skillmix.store.runs import SUMMARY_JSON, RunStore
    from skillmix.store.uri import open_store

    summary = RunStore(open_store(run_uri)).read_summary()
    if summary is None:
        raise RunFailedError(f"{run_uri}/{SUMMARY_JSON}: not found")
    if fmt == "json":
        metrics = summary.metrics.model_dump(mode="json")
        echo_json(metrics if plan is None else {**plan, "metrics": metrics})
        return
    from skillmix.cli.results import metrics_table

    stdout_console().print(metrics_table(summary.metrics))


def _run_context(run_id: str, cluster: str | None) -> tuple[str, Any, Any]:
    from skillmix.k8s.cluster import KubeClient
    from skillmix.k8s.profiles import get_profile

    name, profile = get_profile(cluster)
    return name, profile, KubeClient(profile)


@click.command("status")
@click.argument("run_id")
@cluster_option
@format_option(("table", "json"))
def status_cmd(run_id: str, cluster: str | None, fmt: str) -> None:
    """Jobs of a run (state, pods, reasons) and progress read from the store."""
    from skillmix.k8s.status import run_status

    _name, profile, kube = _run_context(run_id, cluster)
    status = run_status(kube, profile, run_id)
    if fmt == "json":
        echo_json(status)
        return
    from rich.table import Table

    table = Table(title=f"run {run_id}: {status['state']}")
    for column in (
        "job",
        "phase",
        "student",
        "k",
        "round",
        "state",
        "pods ok/failed/active",
        "progress",
        "reason",
    ):
        table.add_column(column, overflow="fold")
    for j in status["jobs"]:
        table.add_row(
            j["name"],
            j["phase"],
            j["student"],
            j["k"],
            j["round"],
            j["state"],
            f"{j['succeeded']}/{j['failed']}/{j['active']}",
            j.get("progress", ""),
            j["reason"],
        )
    stdout_console().print(table)
    p = status["progress"]
    info(
        f"store: generation {p['generation_units_done']}/{p['units']} units, grading {p['grading_units_done']}/{p['units']} units, "
        f"report {'written' if p['report'] else 'not yet'} ({status['run']})"
    )


@click.command("logs")
@click.argument("run_id")
@cluster_option
@click.option("--phase", type=click.Choice(["generate", "grade", "aggregate"]), default=None)
@click.option(
    "--student",
    "--model",
    "student",
    default=None,
    help="Only this student's pods (--model: the old name).",
)
@click.option(
    "--container", default="client", show_default=True, help="Container (client, model, wait)."
)
@click.option("--follow", is_flag=True, help="Stream the logs until the pods end.")
@click.option("--tail", type=int, default=None, help="Lines from the end of each log.")
def logs_cmd(
    run_id: str,
    cluster: str | None,
    phase: str | None,
    student: str | None,
    container: str,
    follow: bool,
    tail: int | None,
) -> None:
    """Logs of a run's pods, prefixed with pod/container."""
    _name, _profile, kube = _run_context(run_id, cluster)
    pods = kube.pods(run_id, phase=phase, student=student)
    if not pods:
        raise SkillmixError(
            f"no pods of run {run_id} match",
            hint="see `skillmix status` (finished pods expire with their Jobs)",
        )
    lock = threading.Lock()

    def emit(prefix: str, text: str) -> None:
        with lock:
            for line in text.splitlines():
                sys.stdout.write(f"[{prefix}] {line}\n")
            sys.stdout.flush()

    def stream(pod_name: str) -> None:
        prefix = f"{pod_name}/{container}"
        try:
            if follow:
                response = kube.pod_log(pod_name, container, follow=True, tail=tail)
                pending = b""  # chunks end anywhere, even inside a line or a character
                for chunk in response.stream():
                    lines = (pending + chunk).split(b"\n")
                    pending = lines.pop()
                    if lines:
                        emit(prefix, b"\n".join(lines).decode(errors="replace"))
                if pending:
                    emit(prefix, pending.decode(errors="replace"))
            else:
                emit(prefix, kube.pod_log(pod_name, container, tail=tail))
        except SkillmixError as exc:
            warn(f"{prefix}: {exc}")

    names = [p.metadata.name for p in pods]
    if not follow:
        for pod_name in names:
            stream(pod_name)
        return
    threads = [threading.Thread(target=stream, args=(n,), daemon=True) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


@click.command("cancel")
@click.argument("run_id")
@cluster_option
def cancel_cmd(run_id: str, cluster: str | None) -> None:
    """Delete a run's Jobs and pods (by label); the store's data is kept, so it can resume."""
    _name, profile, kube = _run_context(run_id, cluster)
    jobs, accounts = kube.delete_run(run_id)
    info(
        f"deleted {jobs} Jobs and {accounts} ServiceAccounts of run {run_id} in {profile.namespace}; its data stays in {profile.store.rstrip('/')}/{run_id}"
    )
