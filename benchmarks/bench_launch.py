"""`skillmix launch` and `status` of a 1,501-Job run against `kubectl create -f`, side by side
on the real control plane (tests/cluster/controlplane.py: etcd, kube-apiserver,
kube-controller-manager, kube-scheduler; no kubelet).

The experiment: 50 mock students x 5 values of k x 3 generation rounds = 750 units, so 750
generation Jobs, 750 grading Jobs and the aggregation Job (and the run's coordinator Job).
Both sides create the same rendered manifests (``skillmix render``) in their own namespace, as
the cluster admin, against a fresh moto S3 store. Each namespace is first prepared as an admin
prepares one (``prepare_namespace``): ``k8s/rbac-coordinator.yaml`` applied (the coordinator's
ServiceAccount, Role and RoleBinding, which the launch's pre-flight requires) and the S3
credentials Secret the profile names.

Measured phases, in order (each adds its fields to the one JSON document):

- ``measure_launch``: ``kubectl_create_seconds``, ``kubectl create -f manifests.yaml`` (one
  request per object), against ``launch_seconds``, the whole ``skillmix launch`` command
  (start-up, store checks, plan, ``helm template``, the pre-flight dry runs, the launch record,
  creation), with its parts in ``launch_breakdown_seconds`` (from ``SKILLMIX_DEBUG``'s timing
  line). The controller manager and the scheduler are paused (SIGSTOP) meanwhile, so neither
  side pays for the pods the Job controller would start for the other; they resume after.
- then each phase of ``AFTER_LAUNCH`` on the launched run: ``measure_status``,
  ``status_seconds``, the whole ``skillmix status`` command (default output), the median of
  ``--status-runs`` runs made right after the launch while the Job controller creates the
  run's pods (``status_json_seconds``: the same with ``--format json``); then
  ``measure_coordinator``: once the Job controller has made a pod for every Job not suspended
  (they stay Pending: no kubelet), the run's coordinator (``Coordinator`` as ``skillmix task
  coordinate`` builds it, with the admin profile's ``KubeClient`` instead of the pod's) runs out
  of the cluster in its own process (``coordinator_process``), so its CPU time and peak RSS
  (``VmHWM``) are its own: its first pass (the paged lists of Jobs and pods, and the
  decisions), then ``--idle-passes`` passes with nothing changing (a ``--watch-seconds`` watch
  of the Jobs and one of the pods each); the same for the naive variant (every pass lists the
  Jobs and pods again, unpaged: the coordinator before its watches) for comparison.

Targets (``TARGETS``, upper bounds; ``targets_met`` in full mode): ``launch_ratio`` = launch /
kubectl create <= 1.5, status < 2 s, the coordinator's first pass < 5 s of CPU, its idle pass
(median) < 0.1 s of CPU, its peak RSS < 256 MiB (its pod's limit is 512Mi). ``--smoke`` runs
the same phases for a 10-Job run. ``--coordinator-profile PREFIX`` writes cProfile stats of the
coordinator's passes. Prints one JSON document.

    .venv/bin/python benchmarks/bench_launch.py [--students 50] [--ks 1,2,3,4,5] [--rounds 3]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks._common import emit, log, machine_info, parse_args_with_smoke  # noqa: E402

NAMESPACES = {"kubectl": "bench-kubectl", "skillmix": "bench-skillmix"}
S3_SECRET = "skillmix-s3"
SMOKE = {"students": 2, "ks": "1,2", "rounds": 1, "status_runs": 1, "idle_passes": 2}
# upper bounds, checked in full mode (``targets_met``)
TARGETS = {
    "launch_ratio": 1.5,
    "status_seconds": 2.0,
    "coordinator_first_pass_cpu_seconds": 5.0,
    "coordinator_idle_pass_cpu_seconds": 0.1,
    "coordinator_peak_rss_mib": 256.0,
}
COMMAND_TIMEOUT = 900  # seconds, any one command
COORDINATOR_TIMEOUT = 300  # seconds, each coordinator process (then it is killed)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--students", type=int, default=50)
    p.add_argument("--ks", default="1,2,3,4,5")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument(
        "--status-runs", type=int, default=3, help="runs of each status command (the median)"
    )
    p.add_argument(
        "--idle-passes",
        type=int,
        default=5,
        help="coordinator passes measured with nothing changing",
    )
    p.add_argument(
        "--watch-seconds",
        type=int,
        default=1,
        help="how long each idle pass watches the Jobs, then the pods",
    )
    p.add_argument(
        "--coordinator-profile",
        metavar="PREFIX",
        help="write cProfile stats of the coordinator's passes to PREFIX.<variant>.<first|settle|idle>",
    )
    args = parse_args_with_smoke(p, argv, SMOKE)
    args.k_values = [int(k) for k in args.ks.split(",")]
    if min(args.students, args.rounds, args.status_runs, args.idle_passes, args.watch_seconds) < 1:
        p.error(
            "--students, --rounds, --status-runs, --idle-passes and --watch-seconds must be "
            "positive"
        )
    return args


def experiment(students: int, ks: list[int], rounds: int) -> dict[str, Any]:
    return {
        "name": "bench-launch",
        "seed": 1,
        "ks": ks,
        "combinations": 4,
        "generation_rounds": rounds,
        "catalog": {},
        "students": [
            {"name": f"s{i:02d}", "backend": "mock", "model": f"mock-{i:02d}", "quality": 0.5}
            for i in range(students)
        ],
        "grader": {
            "name": "grader",
            "backend": "mock",
            "model": "mock-grader",
            "quality": 0.9,
            "rounds": 1,
        },
        "metrics": {"bootstrap_samples": 20},
        "store": "runs",
    }


def profiles(kubeconfig: Path, store: str, s3: str, namespace: str) -> dict[str, Any]:
    return {
        "default": "bench",
        "clusters": {
            "bench": {
                "context": "admin",
                "kubeconfig": str(kubeconfig),
                "namespace": namespace,
                "image": "skillmix:bench",
                "store": store,
                "s3": {"endpoint_url": s3, "credentials_secret": S3_SECRET},
            }
        },
    }


def timed(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[float, str, str]:
    started = time.perf_counter()
    proc = subprocess.run(
        argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=COMMAND_TIMEOUT
    )
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:4])} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return elapsed, proc.stdout, proc.stderr


def median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


# ---------------------------------------------------------------------------------------------
# the setup every phase shares
# ---------------------------------------------------------------------------------------------


@dataclass
class Bench:
    """What every measured phase gets: the control plane, the store, and the environment and
    working folder of the CLI commands."""

    tmp: Path
    cp: Any  # tests.cluster.controlplane.ControlPlane
    env: dict[str, str]
    kubectl_bin: str
    store: str
    s3: str
    experiment: Path

    def kubectl_argv(self) -> list[str]:
        return [self.kubectl_bin, "--kubeconfig", str(self.cp.kubeconfig), "--context", "admin"]

    def kubectl(self, *args: str, stdin: str | None = None) -> str:
        """kubectl as the cluster admin; a failure ends the benchmark with kubectl's error."""
        argv = [*self.kubectl_argv(), *args]
        proc = subprocess.run(
            argv, input=stdin, capture_output=True, text=True, timeout=120, check=False
        )
        if proc.returncode != 0:
            raise SystemExit(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()[-2000:]}")
        return proc.stdout

    def use_namespace(self, namespace: str) -> None:
        """Point the skillmix profile (SKILLMIX_CONFIG) at ``namespace``."""
        profile = profiles(self.cp.kubeconfig, self.store, self.s3, namespace)
        Path(self.env["SKILLMIX_CONFIG"]).write_text(yaml.safe_dump(profile))

    def skillmix(
        self, *args: str, extra_env: dict[str, str] | None = None
    ) -> tuple[float, str, str]:
        """``python -m skillmix ARGS``, timed: (seconds, stdout, stderr)."""
        return timed(
            [sys.executable, "-m", "skillmix", *args], {**self.env, **(extra_env or {})}, self.tmp
        )

    def pause_controllers(self, stop: bool) -> None:
        """SIGSTOP (or SIGCONT) the controller manager and the scheduler."""
        for name in ("kube-controller-manager", "kube-scheduler"):
            pid = self.cp.pids.get(name)
            if pid:
                os.killpg(pid, signal.SIGSTOP if stop else signal.SIGCONT)


def prepare_namespace(bench: Bench, namespace: str) -> None:
    """A namespace as an admin prepares one for skillmix: ``k8s/rbac-coordinator.yaml`` applied
    with its namespace edited (the coordinator's ServiceAccount, which the launch's pre-flight
    dry run of the coordinator pod requires, and its Role and RoleBinding), and the S3
    credentials Secret the profile names (``credentials_secret``)."""
    from tests.fixtures_s3 import S3_TEST_ACCESS_KEY, S3_TEST_SECRET

    bench.kubectl("create", "namespace", namespace)
    rbac = list(yaml.safe_load_all((REPO / "k8s" / "rbac-coordinator.yaml").read_text()))
    for doc in rbac:
        doc["metadata"]["namespace"] = namespace
        for subject in doc.get("subjects") or []:
            if subject.get("kind") == "ServiceAccount":
                subject["namespace"] = namespace
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": S3_SECRET, "namespace": namespace},
        "data": {
            "AWS_ACCESS_KEY_ID": base64.b64encode(S3_TEST_ACCESS_KEY.encode()).decode(),
            "AWS_SECRET_ACCESS_KEY": base64.b64encode(S3_TEST_SECRET.encode()).decode(),
        },
    }
    bench.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all([*rbac, secret]))


@contextlib.contextmanager
def bench_setup(args: argparse.Namespace) -> Iterator[Bench]:
    """A moto S3 store with a fresh bucket, the experiment file, the control plane and both
    namespaces prepared; everything is stopped on exit."""
    import logging

    from moto.server import ThreadedMotoServer

    from tests.cluster.controlplane import REPO_ROOT, start_control_plane
    from tests.fixtures_s3 import S3_TEST_ACCESS_KEY, S3_TEST_SECRET, create_bucket

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per S3 request
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    try:
        host, port = moto.get_host_and_port()
        s3 = f"http://{host}:{port}"
        with tempfile.TemporaryDirectory(prefix="bench-launch-") as tmp_name:
            tmp = Path(tmp_name)
            env = {
                **{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SKILLMIX_"))},
                "PATH": f"{REPO_ROOT / '.tools' / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
                "PYTHONPATH": str(REPO),
                "AWS_ACCESS_KEY_ID": S3_TEST_ACCESS_KEY,
                "AWS_SECRET_ACCESS_KEY": S3_TEST_SECRET,
                "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_EC2_METADATA_DISABLED": "true",
                "AWS_CONFIG_FILE": str(tmp / "none"),
                "AWS_SHARED_CREDENTIALS_FILE": str(tmp / "none"),
                "SKILLMIX_S3_ENDPOINT_URL": s3,
                "SKILLMIX_CONFIG": str(tmp / "skillmix.yaml"),
                "COLUMNS": "160",
            }
            os.environ.update({k: env[k] for k in env if k.startswith("AWS_")})
            store = f"s3://{create_bucket(s3)}/runs"
            exp = tmp / "experiment.yaml"
            exp.write_text(yaml.safe_dump(experiment(args.students, args.k_values, args.rounds)))
            log("starting the control plane ...")
            cp = start_control_plane(tmp / "cp")
            try:
                kubectl_bin = str(REPO_ROOT / ".tools" / "bin" / "kubectl")
                bench = Bench(tmp, cp, env, kubectl_bin, store, s3, exp)
                for namespace in NAMESPACES.values():
                    prepare_namespace(bench, namespace)
                yield bench
            finally:
                # kube-apiserver does not exit on SIGTERM within 15 s (the others at once); this
                # cluster is thrown away, so it gets SIGKILL after 2 s instead of stop()'s 10
                cp.stop(grace=2.0)
    finally:
        moto.stop()


# ---------------------------------------------------------------------------------------------
# the measured phases
# ---------------------------------------------------------------------------------------------


@dataclass
class Launched:
    """The run ``measure_launch`` created, which the later phases measure against."""

    run_id: str
    namespace: str
    jobs: int  # Jobs of the rendered manifests
    attempt: int  # the launch attempt (1: the first launch of the run)


def measure_launch(bench: Bench) -> tuple[Launched, dict[str, Any]]:
    """``kubectl create -f`` of the rendered manifests against ``skillmix launch``, each in its
    own namespace with the controllers paused."""
    bench.use_namespace(NAMESPACES["kubectl"])
    log("rendering ...")
    bench.skillmix("render", "-f", str(bench.experiment), "--out", str(bench.tmp / "out"))
    manifests = bench.tmp / "out" / "manifests.yaml"
    jobs = sum(1 for d in yaml.safe_load_all(manifests.read_text()) if d and d["kind"] == "Job")
    bench.pause_controllers(True)
    try:
        log(f"kubectl create -f ({jobs} Jobs) ...")
        kubectl_s, _, _ = timed(
            [*bench.kubectl_argv(), "-n", NAMESPACES["kubectl"], "create", "-f", str(manifests)],
            bench.env,
            bench.tmp,
        )
        bench.use_namespace(NAMESPACES["skillmix"])
        log("skillmix launch ...")
        launch_s, _, launch_err = bench.skillmix(
            "launch", "-f", str(bench.experiment), extra_env={"SKILLMIX_DEBUG": "1"}
        )
    finally:
        bench.pause_controllers(False)
    run_id = next(
        line.split("run id:", 1)[1].strip()
        for line in launch_err.splitlines()
        if line.startswith("run id:")
    )
    breakdown = {
        name.strip(): float(value.rstrip("s"))
        for line in launch_err.splitlines()
        if line.startswith("timings: ")
        for name, value in (
            part.rsplit(" ", 1) for part in line.removeprefix("timings: ").split(", ")
        )
    }
    created = bench.kubectl("-n", NAMESPACES["skillmix"], "get", "jobs", "-o", "name").split()
    attempt = bench.kubectl(
        "-n",
        NAMESPACES["skillmix"],
        "get",
        "jobs",
        "-l",
        f"skillmix.io/run={run_id},skillmix.io/phase=coordinate",
        "-o",
        "jsonpath={.items[0].metadata.labels.skillmix\\.io/attempt}",
    )
    return Launched(run_id, NAMESPACES["skillmix"], jobs, int(attempt)), {
        "jobs": jobs,
        "jobs_created_by_launch": len(created),
        "kubectl_create_seconds": round(kubectl_s, 2),
        "launch_seconds": round(launch_s, 2),
        "launch_ratio": round(launch_s / kubectl_s, 3),
        "launch_breakdown_seconds": breakdown,
    }


def measure_status(bench: Bench, launched: Launched, args: argparse.Namespace) -> dict[str, Any]:
    """``skillmix status`` of the launched run, default output and ``--format json``."""
    log("skillmix status ...")
    samples = [bench.skillmix("status", launched.run_id) for _ in range(args.status_runs)]
    status_runs = sorted(round(t, 2) for t, _, _ in samples)
    json_runs = sorted(
        round(bench.skillmix("status", launched.run_id, "--format", "json")[0], 2)
        for _ in range(args.status_runs)
    )
    return {
        "status_seconds": median(status_runs),
        "status_seconds_runs": status_runs,
        "status_json_seconds": median(json_runs),
        "status_json_seconds_runs": json_runs,
        "status_lines": len(samples[0][1].splitlines()),
    }


def wait_for_pods(bench: Bench, namespace: str, bound: float) -> dict[str, Any]:
    """Wait (at most ``bound`` seconds) until the Job controller has created a pod for each Job
    not suspended (no kubelet runs them: they stay Pending), so the coordinator's first pass
    sees the run's pods and its later passes see nothing change."""
    suspended = bench.kubectl(
        "-n", namespace, "get", "jobs", "-o", "jsonpath={range .items[*]}{.spec.suspend}{' '}{end}"
    ).split(" ")[:-1]
    expected = sum(1 for value in suspended if value != "true")
    started = time.monotonic()
    pods = 0
    while True:
        pods = len(bench.kubectl("-n", namespace, "get", "pods", "-o", "name").split())
        if pods >= expected or time.monotonic() - started >= bound:
            break
        time.sleep(2.0)
    return {"pods": pods, "expected": expected, "seconds": round(time.monotonic() - started, 1)}


class _CountingApi:
    """The coordinator's ClusterApi over a KubeClient, counting the objects listed and the
    watch events each pass reads. ``naive``: no watches (every pass lists the Jobs and the
    pods again, each in one unpaged request), the coordinator as it was before the watches."""

    def __init__(self, kube: Any, naive: bool) -> None:
        self.kube, self.naive = kube, naive
        self.listed = 0
        self.events = 0

    def list_raw(self, resource: str, selector: str) -> tuple[list[dict[str, Any]], str]:
        items, version = self.kube.list_raw(
            resource, selector, page=1_000_000 if self.naive else 250
        )
        self.listed += len(items)
        return items, version

    def watch_raw(
        self, resource: str, selector: str, resource_version: str, timeout_seconds: int
    ) -> Iterator[tuple[str, dict[str, Any] | None, str]]:
        from skillmix.k8s.jobs import WatchExpired

        if self.naive:
            raise WatchExpired()  # the Mirror lists again
        for kind, obj, rv in self.kube.watch_raw(
            resource, selector, resource_version, timeout_seconds
        ):
            if obj is not None:
                self.events += 1
            yield kind, obj, rv

    def create_job_yaml(self, name: str, text: str) -> bool:
        return bool(self.kube.create_job_yaml(name, text))

    def patch_job(self, name: str, body: dict[str, Any]) -> None:
        self.kube.patch_job(name, body)

    def warning_events(self) -> list[dict[str, Any]]:
        return list(self.kube.warning_events())


def _rss_mib(field: str = "VmHWM") -> float:
    """This process's peak RSS (``VmHWM``; ``VmRSS``: the current one). Not ru_maxrss: after
    fork and exec that also counts the parent's peak (the kernel folds the old address space's
    high-water mark into it), here the benchmark's with its moto server."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return round(int(line.split()[1]) / 1024, 1)
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def coordinator_process(spec: dict[str, Any]) -> dict[str, Any]:
    """Runs in its own process (``measure_coordinator``): the run's coordinator, as
    ``skillmix task coordinate`` builds it but with the profile's client instead of the pod's,
    pass by pass, each pass timed. Returns the figures (printed as JSON by the caller)."""
    import cProfile

    from skillmix.k8s.cluster import KubeClient
    from skillmix.k8s.coordinator import Coordinator, Timing
    from skillmix.k8s.profiles import get_profile
    from skillmix.k8s.values import run_uri_for
    from skillmix.pipeline.context import open_run

    naive, watch = spec["variant"] == "naive", int(spec["watch_seconds"])
    cpu0, wall0 = time.process_time(), time.perf_counter()
    _, profile = get_profile(None)
    api = _CountingApi(KubeClient(profile), naive)
    run, ctx = open_run(run_uri_for(profile, spec["run_id"]))
    released: list[str] = []
    coordinator = Coordinator(
        run, ctx, int(spec["attempt"]), api=api, timing=Timing(), say=released.append
    )
    setup = {
        "cpu_seconds": round(time.process_time() - cpu0, 3),
        "wall_seconds": round(time.perf_counter() - wall0, 3),
        "rss_mib": _rss_mib(),
    }

    profiles: dict[str, Any] = {}

    def one_pass(watch_seconds: int, kind: str) -> dict[str, Any]:
        api.listed = api.events = 0
        del released[:]
        profiler = profiles.setdefault(kind, cProfile.Profile()) if spec["profile"] else None
        cpu, wall = time.process_time(), time.perf_counter()
        if profiler:
            profiler.enable()
        result = coordinator.step(watch_seconds)
        if profiler:
            profiler.disable()
        return {
            "cpu_seconds": round(time.process_time() - cpu, 4),
            "wall_seconds": round(time.perf_counter() - wall, 3),
            "listed": api.listed,
            "events": api.events,
            "released": len(released),
            "gated_left": result.gated_left,
            "unfinished": result.unfinished,
        }

    first = one_pass(0, "first")
    # catch up on what the first pass's releases set off (bounded), then the idle passes
    settle: list[dict[str, Any]] = []
    while not naive and len(settle) < int(spec["max_settle_passes"]):
        settle.append(one_pass(watch, "settle"))
        if settle[-1]["events"] == 0 and settle[-1]["released"] == 0:
            break
    idle = [one_pass(watch, "idle") for _ in range(int(spec["idle_passes"]))]
    for kind, profiler in profiles.items():
        profiler.dump_stats(f"{spec['profile']}.{spec['variant']}.{kind}")
    idle_cpu = sorted(p["cpu_seconds"] for p in idle)
    return {
        "variant": spec["variant"],
        "jobs_seen": len(coordinator.mirror.jobs),
        "pods_seen": len(coordinator.mirror.pods),
        "setup": setup,
        "first_pass": first,
        "settle_passes": len(settle),
        "idle_passes": idle,
        "idle_pass_cpu_seconds": median(idle_cpu) if idle_cpu else None,
        "idle_pass_cpu_seconds_max": idle_cpu[-1] if idle_cpu else None,
        "peak_rss_mib": _rss_mib(),
        "rss_at_end_mib": _rss_mib("VmRSS"),
        "cpu_seconds_total": round(time.process_time() - cpu0, 3),
    }


def _run_coordinator(
    bench: Bench, launched: Launched, args: argparse.Namespace, naive: bool
) -> dict[str, Any]:
    """``coordinator_process`` in a child process (its CPU time and peak RSS its own), killed
    after ``COORDINATOR_TIMEOUT`` seconds."""
    spec = {
        "run_id": launched.run_id,
        "attempt": launched.attempt,
        "variant": "naive" if naive else "watch",
        "watch_seconds": args.watch_seconds,
        "profile": str(Path(args.coordinator_profile).resolve())
        if args.coordinator_profile
        else "",
        "idle_passes": args.idle_passes,
        "max_settle_passes": 20,
    }
    code = (
        "import json, sys\n"
        "from benchmarks.bench_launch import coordinator_process\n"
        "print(json.dumps(coordinator_process(json.loads(sys.argv[1]))))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, json.dumps(spec)],
        env=bench.env,
        cwd=bench.tmp,
        capture_output=True,
        text=True,
        timeout=COORDINATOR_TIMEOUT,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(
            f"the coordinator process failed ({proc.returncode}): {proc.stderr[-3000:]}"
        )
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def measure_coordinator(
    bench: Bench, launched: Launched, args: argparse.Namespace
) -> dict[str, Any]:
    """The run's coordinator out of the cluster, in its own process, against the launched
    Jobs: its first pass (the paged lists of Jobs and pods, and the decisions), then idle
    passes (one watch of ``--watch-seconds`` for the Jobs and one for the pods each); then the
    naive variant (every pass lists everything again) for comparison."""
    log("waiting for the Job controller's pods to settle ...")
    settled = wait_for_pods(bench, launched.namespace, bound=60.0 if args.smoke else 300.0)
    log(f"coordinator ({settled['pods']} pods) ...")
    watch = _run_coordinator(bench, launched, args, naive=False)
    log("coordinator, naive variant (lists everything every pass) ...")
    naive = _run_coordinator(bench, launched, args, naive=True)
    return {
        "coordinator_pods_before": settled["pods"],
        "coordinator_pods_expected": settled["expected"],
        "coordinator_pods_settle_seconds": settled["seconds"],
        "coordinator_first_pass_cpu_seconds": watch["first_pass"]["cpu_seconds"],
        "coordinator_first_pass_wall_seconds": watch["first_pass"]["wall_seconds"],
        "coordinator_idle_pass_cpu_seconds": watch["idle_pass_cpu_seconds"],
        "coordinator_peak_rss_mib": watch["peak_rss_mib"],
        "coordinator": watch,
        "coordinator_naive": naive,
    }


# Phases measured on the launched run, in this order; each returns its fields of the document
# (and a new target goes into TARGETS).
AFTER_LAUNCH: tuple[Callable[[Bench, Launched, argparse.Namespace], dict[str, Any]], ...] = (
    measure_status,
    measure_coordinator,
)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    info = machine_info()
    with bench_setup(args) as bench:
        launched, measured = measure_launch(bench)
        for phase in AFTER_LAUNCH:
            measured.update(phase(bench, launched, args))
    return {
        "benchmark": "launch",
        "smoke": args.smoke,
        **info,
        "students": args.students,
        "ks": args.k_values,
        "rounds": args.rounds,
        **measured,
        "targets": TARGETS,
        # the targets mean something only at full size
        "targets_met": None
        if args.smoke
        else {name: measured[name] <= bound for name, bound in TARGETS.items()},
    }


if __name__ == "__main__":
    emit(main())
