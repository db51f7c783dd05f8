"""``skillmix task ...``: the commands Kubernetes containers run. Each parses its flags and calls
the pod executor (:mod:`skillmix.executors.pod`); progress goes to stderr as log lines."""

from __future__ import annotations

from typing import Any

import click

from skillmix import settings
from skillmix.errors import SkillmixError
from skillmix.executors import pod
from skillmix.executors.pod import PodLog
from skillmix.k8s.coordinator import Timing
from skillmix.vocab import Phase, Unit


def _say(line: str) -> None:
    click.echo(line, err=True)


_pod_log: PodLog | None = None


def _remember_run(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """Where this pod's log goes at exit: the run given to the task."""
    if _pod_log is not None and value:
        _pod_log.run_uri = value
    return value


run_option = click.option(
    "--run",
    "run_uri",
    envvar=settings.RUN.name,
    required=True,
    callback=_remember_run,
    help="Run folder URI (env SKILLMIX_RUN).",
)

model_load_option = click.option(
    "--model-load-timeout",
    type=click.FloatRange(0),
    default=0,
    show_default=True,
    help="Wait this long for the model server's /health before starting (the pod's model "
    "sidecar); never healthy: exit 3. 0 = do not wait.",
)


student_option = click.option("--student", required=True)


def wait_first_option(help: str) -> Any:
    """``--wait-timeout``: how long a phase waits for its inputs before it starts."""
    return click.option("--wait-timeout", type=float, default=0, show_default=True, help=help)


def timeout_option(kind: click.ParamType[float, Any] | type[float], default: float) -> Any:
    """``--timeout``: a command that waits gives up (exit 1) after this many seconds."""
    return click.option(
        "--timeout",
        type=kind,
        default=default,
        show_default=True,
        help="Give up after this many seconds (exit 1).",
    )


attempt_option = click.option(
    "--attempt",
    type=click.IntRange(0),
    default=0,
    show_default=True,
    help="Launch attempt (Kubernetes): manifests record it; waits require it of relaunched units.",
)


def unit_options(f: Any) -> Any:
    for option in reversed(
        [
            run_option,
            student_option,
            click.option("--k", "k", type=int, required=True),
            click.option("--round", "g", type=int, required=True, help="Generation round."),
        ]
    ):
        f = option(f)
    return f


@click.group()
def task() -> None:
    """Run one unit of a run (container entrypoints). Exit 2 = bad input, 1 = failed,
    3 = the model server never became healthy, 4 = the task's time limit was reached."""
    global _pod_log
    pod = settings.pod_name()
    if pod and _pod_log is None:
        _pod_log = PodLog(pod)
        _pod_log.install()


def serving_options(f: Any) -> Any:
    """The flags a generation client takes, shared by ``generate`` and ``reason``: its shard,
    its endpoint and budget share, the model server's start, its time limit, the attempt."""
    for option in reversed(
        [
            click.option(
                "--shard",
                type=int,
                default=None,
                help="Shard index (default: $JOB_COMPLETION_INDEX or 0).",
            ),
            click.option("--shards", type=click.IntRange(1), default=1, show_default=True),
            click.option(
                "--base-url",
                default=None,
                help="Override the student's endpoint (in a pod: the vLLM sidecar).",
            ),
            click.option(
                "--budget-share",
                type=click.IntRange(1),
                default=None,
                help="Parallel workers sharing the student's concurrency/RPM/TPM budget "
                "[default: --shards].",
            ),
            model_load_option,
            click.option(
                "--model-log",
                default=None,
                help="The model server's output of its current start (a vLLM sidecar's model "
                "log): while waiting for /health, a permanent failure it names (gated, not "
                "found, out of memory) exits 3 at once, a transient one (the Hub's 429 or 5xx) "
                "gets one more load budget.",
            ),
            click.option(
                "--time-limit",
                type=click.FloatRange(0),
                default=0,
                show_default=True,
                help="Stop after this many seconds of this process (exit 4; parts are kept). "
                "0 = none.",
            ),
            attempt_option,
        ]
    ):
        f = option(f)
    return f


@task.command("generate")
@run_option
@student_option
@click.option("--k", "k", type=int, default=None, help="The unit's k (or --units).")
@click.option("--round", "g", type=int, default=None, help="The unit's generation round.")
@click.option(
    "--units",
    default=None,
    help="Serving per-model: K:R,K:R... units of the student, run one after another.",
)
@serving_options
def generate_task(
    run_uri: str, student: str, k: int | None, g: int | None, units: str | None, **options: Any
) -> None:
    """Generate one (student, k, round) unit, or one shard of it; with --units, several units
    of the student in turn (serving per-model: the model server loads once).

    The shards of a unit run at once and share the student's budget: each takes 1/--shards of
    its concurrency, RPM and TPM, unless --budget-share says otherwise."""
    if units is None and k is not None and g is not None:
        todo = [Unit(student, k, g)]
    elif units is not None and k is None and g is None:
        todo = pod.parse_units(student, units)
    else:
        raise SkillmixError("give either --k and --round (one unit) or --units K:R,... (several)")
    pod.generate(run_uri, student, todo, pod.GenerateOptions(**options), say=_say)


@task.command("reason")
@run_option
@click.option("--task", "task_name", required=True, help="A task of the run's experiment.")
@student_option
@serving_options
def reason_task(run_uri: str, task_name: str, student: str, **options: Any) -> None:
    """Ask one shard of a reasoning task's problems (experiment `tasks:`): the responses go
    into the run folder as parts and a manifest; the aggregation scores them."""
    pod.reason(run_uri, task_name, student, pod.GenerateOptions(**options), say=_say)


@task.command("grade")
@unit_options
@click.option("--base-url", default=None, help="Override the grader's endpoint.")
@click.option(
    "--budget-share",
    type=click.IntRange(1),
    default=1,
    show_default=True,
    help="Parallel grading workers sharing the grader's concurrency/RPM/TPM budget.",
)
@wait_first_option("Seconds to wait for the generations first (0 = do not wait).")
@model_load_option
@attempt_option
def grade_task(run_uri: str, student: str, k: int, g: int, **options: Any) -> None:
    """Grade one (student, k, round) unit (all grading rounds)."""
    pod.grade(run_uri, Unit(student, k, g), pod.GradeOptions(**options), say=_say)


@task.command("aggregate")
@run_option
@wait_first_option("Seconds to wait for every grading unit first.")
@attempt_option
def aggregate_task(run_uri: str, wait_timeout: float, attempt: int) -> None:
    """Compute the metrics and write the run's report/ folder."""
    pod.aggregate(run_uri, wait_timeout=wait_timeout, attempt=attempt, say=_say)


@task.command("wait")
@run_option
@click.option(
    "--phase",
    type=click.Choice(["generate", "grade"]),
    required=True,
    help="Wait for this phase's manifests.",
)
@click.option("--student", default=None, help="Only this student's units.")
@click.option("--k", "k", type=int, default=None)
@click.option("--round", "g", type=int, default=None)
@timeout_option(float, 6 * 3600.0)
@click.option("--interval", type=float, default=10.0, show_default=True)
@attempt_option
def wait_task(run_uri: str, phase: Phase, **options: Any) -> None:
    """Block until the named units have their _SUCCESS manifests (bounded by --timeout).

    With --attempt N, units that launch attempt N redoes must have a manifest from attempt N
    (an older one, written before the relaunch, would be stale)."""
    pod.wait(run_uri, phase, say=_say, **options)


@task.command("coordinate")
@run_option
@attempt_option
@click.option(
    "--interval",
    type=click.FloatRange(0.1),
    default=10.0,
    show_default=True,
    help="Seconds a pass lasts at most (it watches the Jobs and pods for changes meanwhile).",
)
@timeout_option(click.FloatRange(1), 7 * 86400.0)
@click.option(
    "--stuck-seconds",
    type=click.FloatRange(1),
    default=600.0,
    show_default=True,
    help="Fail a Job whose pod waits this long where no retry helps (image pull, missing "
    "Secret key, Multi-Attach volume).",
)
@click.option(
    "--unschedulable-seconds",
    type=click.FloatRange(1),
    default=1800.0,
    show_default=True,
    help="Fail a Job whose pod the scheduler could not place for this long.",
)
def coordinate_task(
    run_uri: str,
    attempt: int,
    interval: float,
    timeout: float,
    stuck_seconds: float,
    unschedulable_seconds: float,
) -> None:
    """Coordinate one launch attempt from inside the cluster: release its gated Jobs when
    their inputs exist in the store (at most pool-size at once), fail Jobs whose pods are
    stuck, record generation pods' GPU time; ends when every Job of the attempt has finished
    (runs in a pod with the skillmix-coordinator Role of k8s/rbac-coordinator.yaml)."""
    from skillmix.k8s.cluster import KubeClient  # deferred: kubernetes takes ~0.5 s to import

    api = KubeClient.in_cluster()
    pod.coordinate(
        run_uri,
        attempt,
        api=api,
        namespace=api.namespace,
        interval=interval,
        timeout=timeout,
        timing=Timing(stuck_seconds=stuck_seconds, unschedulable_seconds=unschedulable_seconds),
        say=_say,
    )
