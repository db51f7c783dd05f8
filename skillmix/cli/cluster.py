"""``skillmix clusters|render|launch|status|logs|cancel``: the Kubernetes executor's CLI."""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import yaml
from rich.table import Table

from skillmix import settings
from skillmix.cli._output import echo_json, format_option, info, stdout_console, warn, write_files
from skillmix.cli.options import out_option
from skillmix.cli.results import metrics_table
from skillmix.errors import RunFailedError, SkillmixError
from skillmix.executors.kubernetes import KubernetesExecutor
from skillmix.k8s.launch import (
    plan_launch,
    prepare_launch,
)
from skillmix.k8s.profiles import get_profile, load_profiles, profile_paths
from skillmix.k8s.status import job_reasons, run_status
from skillmix.k8s.values import run_uri_for
from skillmix.loading import load_experiment
from skillmix.store.layout import RunLayout
from skillmix.store.runs import SUMMARY_JSON, RunStore
from skillmix.store.uri import open_store

if TYPE_CHECKING:
    from skillmix.k8s.cluster import (
        KubeClient,  # deferred: kubernetes takes ~0.5 s; render needs no cluster
    )
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


def wait_timeout_option(default: float) -> Any:
    """``--timeout``: how long ``--wait`` waits for what a command started (seconds)."""
    return click.option(
        "--timeout", type=float, default=default, show_default=True, help="Seconds --wait waits."
    )


@click.command("clusters")
@format_option(("table", "json"))
def clusters_cmd(fmt: str) -> None:
    """List the cluster profiles (./skillmix.yaml, $SKILLMIX_CONFIG or the user config dir)."""

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
@out_option("Write values.yaml and manifests.yaml here (default: manifests to stdout).")
def render_cmd(file: str, cluster: str | None, out: str | None) -> None:
    """Render the run's Kubernetes objects with helm template (no cluster or store needed)."""

    name, profile, ctx, _run = prepare_launch(load_experiment(file), cluster, check_store=False)
    lp = plan_launch(ctx, profile, name, None)
    for line in lp.serving_lines():  # stderr: stdout stays the manifests
        info(line)
    for line in lp.warnings:
        warn(line)
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
@wait_timeout_option(24 * 3600.0)
@click.option(
    "--replace",
    is_flag=True,
    help="Cancel the run's unfinished Jobs first (waiting until they are gone), then launch.",
)
@click.option(
    "--watch-seconds",
    type=click.IntRange(1, 300),
    default=60,
    hidden=True,
    help="With --wait: how long one watch lasts before pods and events are looked at.",
)
@format_option(("table", "json"))
def launch_cmd(
    file: str,
    cluster: str | None,
    dry_run: bool,
    wait: bool,
    timeout: float,
    replace: bool,
    watch_seconds: int,
    fmt: str,
) -> None:
    """Launch (or resume) a run on Kubernetes: one Job per unit, from the same plan as `evaluate`."""
    metrics_plan: dict[str, Any] | None = None

    def show_plan(lp: LaunchPlan, done: bool) -> None:
        nonlocal metrics_plan
        # json: one document; when metrics follow (--wait, or a finished run) they join the plan
        record = lp.record().model_dump(mode="json")
        if fmt == "json" and (done or (wait and not dry_run)):
            metrics_plan = record
        elif fmt == "json":
            echo_json(record)
        else:
            stdout_console().print(plan_table(lp))
            for line in lp.serving_lines():
                info(line)
        for line in lp.warnings:
            warn(line)
        info(f"run id: {lp.run_id}")

    executor = KubernetesExecutor(
        cluster,
        source=file,
        dry_run=dry_run,
        replace=replace,
        show_plan=show_plan,
        say=info,
        warn=warn,
    )
    outcome = executor.run(load_experiment(file))
    lp, name = outcome.plan, outcome.cluster
    if outcome.done:
        info("every unit is finished and the report exists; nothing to launch")
        _print_metrics(lp.run_uri, fmt, metrics_plan)
        return
    if outcome.kube is None:
        info(
            "dry run: nothing created; the store was not read, so this is the plan of a first "
            "launch (see `skillmix render` for the manifests)"
        )
        return
    kube = outcome.kube
    retried = f"; {kube.retries} transient API errors retried" if kube.retries else ""
    later = (
        f"; the coordinator creates {outcome.deferred} more when their inputs exist"
        if outcome.deferred
        else ""
    )
    info(
        f"created {len(outcome.created)} objects in namespace {outcome.namespace} "
        f"(attempt {lp.attempt}){retried}{later}"
    )
    info(
        f"follow it:  skillmix status {lp.run_id} --cluster {name}   |   skillmix logs {lp.run_id} --cluster {name} --follow"
    )
    info(f"report:     {lp.run_uri}/report/ (when the aggregation Job is done)")
    if wait:
        _wait(kube, lp.run_id, timeout, lp.attempt, watch_seconds)
        _print_metrics(lp.run_uri, fmt, metrics_plan)


def _wait(
    kube: KubeClient, run_id: str, timeout: float, attempt: int | None, watch_seconds: int
) -> None:
    from skillmix.k8s.cluster import (
        wait_for_run,  # deferred: kubernetes takes ~0.5 s; render needs no cluster
    )

    last: dict[str, int] = {}
    said: set[str] = set()

    def on_change(states: list[Any]) -> None:
        counts: dict[str, int] = {}
        for s in states:
            counts[s.state] = counts.get(s.state, 0) + 1
        if counts != last:
            last.clear()
            last.update(counts)
            info("jobs: " + ", ".join(f"{v} {k.lower()}" for k, v in sorted(counts.items())))

    def on_idle(states: list[Any]) -> None:
        """A watch ended without a verdict: say once why pods are stuck, if they are."""
        unfinished = [s for s in states if not s.finished]
        if not unfinished:
            return
        for job, reasons in job_reasons(kube, run_id, unfinished).items():
            for reason in reasons:
                if f"{job}: {reason}" not in said:
                    said.add(f"{job}: {reason}")
                    warn(f"{job}: {reason}")

    wait_for_run(
        kube,
        run_id,
        timeout=timeout,
        attempt=attempt,
        on_change=on_change,
        on_idle=on_idle,
        watch_seconds=watch_seconds,
    )
    info(f"run {run_id} finished")


def _print_metrics(run_uri: str, fmt: str, plan: dict[str, Any] | None = None) -> None:

    summary = RunStore(open_store(run_uri)).read_summary()
    if summary is None:
        raise RunFailedError(f"{run_uri}/{SUMMARY_JSON}: not found")
    if fmt == "json":
        metrics = summary.metrics.model_dump(mode="json")
        echo_json(metrics if plan is None else {**plan, "metrics": metrics})
        return

    stdout_console().print(metrics_table(summary.metrics))


def _run_context(run_id: str, cluster: str | None) -> tuple[str, Any, Any]:
    from skillmix.k8s.cluster import (
        KubeClient,  # deferred: kubernetes takes ~0.5 s; render needs no cluster
    )

    name, profile = get_profile(cluster)
    return name, profile, KubeClient(profile)


ATTENTION_ROWS = 20  # Jobs that need attention shown by default (a 1,500-Job run stays readable)


@click.command("status")
@click.argument("run_id")
@cluster_option
@click.option(
    "--all", "show_all", is_flag=True, help="List every Job, not only those that need attention."
)
@format_option(("table", "json"))
def status_cmd(run_id: str, cluster: str | None, show_all: bool, fmt: str) -> None:
    """A run's Jobs counted per phase and state, the Jobs that need attention and why (from
    pods and events), and progress read from the store."""

    _name, profile, kube = _run_context(run_id, cluster)
    status = run_status(kube, profile, run_id)
    if fmt == "json":
        echo_json(status)
        return

    console = stdout_console()
    attempt = f" (attempt {status['attempt']})" if status["attempt"] else ""
    if status["counts"]:
        counts = Table(title=f"run {run_id}: {status['state']}{attempt}")
        states = sorted({st for c in status["counts"].values() for st in c})
        counts.add_column("phase")
        for st in states:
            counts.add_column(st, justify="right")
        for phase, by_state in status["counts"].items():
            counts.add_row(phase, *(str(by_state.get(st, 0)) for st in states))
        console.print(counts)
    else:
        console.print(f"run {run_id}: {status['state']}{attempt}")
    rows = status["jobs"] if show_all else status["attention"][:ATTENTION_ROWS]
    if rows:
        table = Table(title="Jobs" if show_all else "Jobs that need attention")
        for column in ("job", "phase", "state", "pods ok/failed/active", "progress", "reason"):
            table.add_column(column, overflow="fold")
        for j in rows:
            reason = "; ".join([r for r in [j["reason"], *j["reasons"]] if r])
            table.add_row(
                j["name"],
                j["phase"],
                j["state"],
                f"{j['succeeded']}/{j['failed']}/{j['active']}",
                j.get("progress", ""),
                reason,
            )
        console.print(table)
    if status["coordinator"] and status["coordinator"]["reason"]:
        warn(status["coordinator"]["reason"])
    if status["gpu_cap"]:
        cap = status["gpu_cap"]
        info(
            f"GPU cap {cap['cap']}: {cap['gpus_in_use']} GPUs in use by {cap['running']} "
            f"generation Jobs, {cap['queued']} queued, {cap['done']} done"
        )
    hidden = 0 if show_all else len(status["attention"]) - len(rows)
    if hidden:
        info(f"{hidden} more Jobs need attention (--all lists every Job, --format json all of it)")
    if status["previous_attempt_jobs"]:
        info(f"{status['previous_attempt_jobs']} Jobs of earlier attempts are not counted")
    if status["source"] == "store" and status["state"] != "no jobs":
        info(
            "no Jobs of this run exist (expired after ttlSecondsAfterFinished, or cancelled): "
            "progress from the store"
        )
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
@click.option(
    "--max-streams",
    type=click.IntRange(1, 100),
    default=5,
    show_default=True,
    help="With --follow: pods streamed at once (active and failed pods first), like kubectl.",
)
def logs_cmd(
    run_id: str,
    cluster: str | None,
    phase: str | None,
    student: str | None,
    container: str,
    follow: bool,
    tail: int | None,
    max_streams: int,
) -> None:
    """Logs of a run's pods, prefixed with pod/container; once the pods are gone, the logs
    their clients uploaded to the store."""
    _name, profile, kube = _run_context(run_id, cluster)
    pods = kube.pods(run_id, phase=phase, student=student)
    if not pods:
        if not follow and _store_logs(profile, run_id, tail):
            return
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

    if not follow:
        for pod in pods:
            stream(pod["metadata"]["name"])
        return
    chosen, left = _follow_order(pods, max_streams)
    if left:
        info(
            f"following {len(chosen)} of {len(pods)} pods (active and failed first); left out: "
            f"{', '.join(left[:10])}{' ...' if len(left) > 10 else ''} (--max-streams, --phase or --student to pick)"
        )
    threads = [threading.Thread(target=stream, args=(n,), daemon=True) for n in chosen]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def _follow_order(pods: list[dict[str, Any]], limit: int) -> tuple[list[str], list[str]]:
    """Pod names to stream (at most ``limit``: running, then failed, then pending, then
    succeeded) and the names left out."""
    rank = {"Running": 0, "Failed": 1, "Pending": 2, "Unknown": 3, "Succeeded": 4}
    ordered = sorted(
        pods,
        key=lambda p: (
            rank.get((p.get("status") or {}).get("phase", "Unknown"), 3),
            p["metadata"]["name"],
        ),
    )
    names = [p["metadata"]["name"] for p in ordered]
    return names[:limit], names[limit:]


def _store_logs(profile: Any, run_id: str, tail: int | None) -> bool:
    """The pod logs the clients uploaded to the store (``logs/pods/POD.log``); False if none."""

    store = open_store(run_uri_for(profile, run_id))
    prefix = RunLayout.pod_log("x").rsplit("/", 1)[0]
    keys = [k for k in store.list_keys(prefix) if k.endswith(".log")]
    if not keys:
        return False
    info(f"no pods of run {run_id} exist any more: the logs their clients uploaded to the store")
    for key in keys:
        pod = key.rsplit("/", 1)[-1].removesuffix(".log")
        lines = store.read_bytes(key).decode("utf-8", errors="replace").splitlines()
        for line in lines[-tail:] if tail else lines:
            sys.stdout.write(f"[{pod}] {line}\n")
    sys.stdout.flush()
    return True


@click.command("cancel")
@click.argument("run_id")
@cluster_option
def cancel_cmd(run_id: str, cluster: str | None) -> None:
    """Delete a run's Jobs and pods (by label); the store's data is kept, so it can resume."""
    _name, profile, kube = _run_context(run_id, cluster)
    jobs = kube.delete_run(run_id)
    info(
        f"deleted {jobs} Jobs of run {run_id} in {profile.namespace}; its data stays in {profile.store.rstrip('/')}/{run_id}"
    )
