"""`skillmix launch` and `status` of a 1,501-Job run against `kubectl create -f`, side by side
on the real control plane (tests/cluster/controlplane.py: etcd, kube-apiserver,
kube-controller-manager, kube-scheduler; no kubelet).

The experiment: 50 mock students x 5 values of k x 3 generation rounds = 750 units, so 750
generation Jobs, 750 grading Jobs and the aggregation Job. Both sides create the same rendered
manifests (``skillmix render``) in their own namespace, as the cluster admin, against a fresh
moto S3 store:

- ``kubectl_create_seconds``: ``kubectl create -f manifests.yaml`` (one request per object);
- ``launch_seconds``: the whole ``skillmix launch`` command (start-up, store checks, plan,
  ``helm template``, the pre-flight dry runs, the launch record, creation), with its parts in
  ``launch_breakdown_seconds`` (from ``SKILLMIX_DEBUG``'s timing line);
- ``status_seconds``: the whole ``skillmix status`` command on that run (default output), the
  median of three runs made right after the launch, while the Job controller creates the
  run's 1,501 pods (``status_json_seconds``: the same with ``--format json``).

The controller manager and the scheduler are paused (SIGSTOP) while either side creates, so
neither pays for the 1,501 pods the Job controller would start for the other; they resume
before ``status``. Target: ``launch_ratio`` = launch / kubectl create <= 1.5, status < 2 s.
Prints one JSON document.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks._common import emit, log, machine_info  # noqa: E402


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
                "s3": {"endpoint_url": s3, "credentials_secret": "skillmix-s3"},
            }
        },
    }


def timed(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[float, str, str]:
    started = time.perf_counter()
    proc = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=900)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:4])} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return elapsed, proc.stdout, proc.stderr


def pause(cp: Any, stop: bool) -> None:
    for name in ("kube-controller-manager", "kube-scheduler"):
        pid = cp.pids.get(name)
        if pid:
            os.killpg(pid, signal.SIGSTOP if stop else signal.SIGCONT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--students", type=int, default=50)
    parser.add_argument("--ks", default="1,2,3,4,5")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    from moto.server import ThreadedMotoServer

    from tests.cluster.controlplane import REPO_ROOT, start_control_plane
    from tests.fixtures_s3 import S3_TEST_ACCESS_KEY, S3_TEST_SECRET, create_bucket

    kubectl = str(REPO_ROOT / ".tools" / "bin" / "kubectl")
    info = machine_info()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
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
        ks = [int(k) for k in args.ks.split(",")]
        exp.write_text(yaml.safe_dump(experiment(args.students, ks, args.rounds)))
        log("starting the control plane ...")
        cp = start_control_plane(tmp / "cp")
        try:
            base = [kubectl, "--kubeconfig", str(cp.kubeconfig), "--context", "admin"]
            for ns in ("bench-kubectl", "bench-skillmix"):
                subprocess.run([*base, "create", "namespace", ns], check=True, capture_output=True)
            (tmp / "skillmix.yaml").write_text(
                yaml.safe_dump(profiles(cp.kubeconfig, store, s3, "bench-kubectl"))
            )
            py = [sys.executable, "-m", "skillmix"]
            log("rendering ...")
            timed([*py, "render", "-f", str(exp), "--out", str(tmp / "out")], env, tmp)
            manifests = tmp / "out" / "manifests.yaml"
            jobs = sum(
                1 for d in yaml.safe_load_all(manifests.read_text()) if d and d["kind"] == "Job"
            )
            pause(cp, True)
            try:
                log(f"kubectl create -f ({jobs} Jobs) ...")
                kubectl_s, _, _ = timed(
                    [*base, "-n", "bench-kubectl", "create", "-f", str(manifests)], env, tmp
                )
                (tmp / "skillmix.yaml").write_text(
                    yaml.safe_dump(profiles(cp.kubeconfig, store, s3, "bench-skillmix"))
                )
                log("skillmix launch ...")
                launch_s, _, launch_err = timed(
                    [*py, "launch", "-f", str(exp)], {**env, "SKILLMIX_DEBUG": "1"}, tmp
                )
            finally:
                pause(cp, False)
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
            log("skillmix status ...")
            samples = [timed([*py, "status", run_id], env, tmp) for _ in range(3)]
            status_out = samples[0][1]
            status_runs = sorted(round(t, 2) for t, _, _ in samples)
            json_runs = sorted(
                round(timed([*py, "status", run_id, "--format", "json"], env, tmp)[0], 2)
                for _ in range(3)
            )
            created = subprocess.run(
                [*base, "-n", "bench-skillmix", "get", "jobs", "-o", "name"],
                check=True,
                capture_output=True,
                text=True,
            ).stdout.split()
        finally:
            cp.stop()
            moto.stop()
    emit(
        {
            "benchmark": "launch",
            **info,
            "students": args.students,
            "ks": ks,
            "rounds": args.rounds,
            "jobs": jobs,
            "jobs_created_by_launch": len(created),
            "kubectl_create_seconds": round(kubectl_s, 2),
            "launch_seconds": round(launch_s, 2),
            "launch_ratio": round(launch_s / kubectl_s, 3),
            "launch_breakdown_seconds": breakdown,
            "status_seconds": status_runs[1],  # the median of three
            "status_seconds_runs": status_runs,
            "status_json_seconds": json_runs[1],
            "status_json_seconds_runs": json_runs,
            "status_lines": len(status_out.splitlines()),
            "targets": {"launch_ratio": 1.5, "status_seconds": 2.0},
        }
    )


if __name__ == "__main__":
    main()
