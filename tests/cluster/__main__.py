"""`make cluster-up` / `make cluster-down`: the test control plane for people.

    python -m tests.cluster up [--dir .cluster] [--port N]   start it in the background
    python -m tests.cluster down [--dir .cluster]            stop everything it started
    python -m tests.cluster status [--dir .cluster]

`up` starts etcd, kube-apiserver, kube-controller-manager, kube-scheduler, the process kubelet
and an S3 server (moto) on 127.0.0.1, prepares the namespace ``skillmix`` (Pod Security
``restricted``, ``k8s/rbac-launcher.yaml``, the S3 Secret, a bucket) and writes a cluster
profile ``local``; it prints the kubeconfig, the profile and the S3 endpoint and returns. The
processes keep running until `down`. Errors are one line; a failed `up` leaves nothing behind.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.cluster.conftest import IMAGE, prepare_namespace, write_profile
from tests.cluster.controlplane import (
    REPO_ROOT,
    ClusterSetupError,
    ControlPlane,
    _spawn,
    free_port,
    start_control_plane,
    start_kubelet,
)
from tests.fixtures_s3 import S3_TEST_ACCESS_KEY, S3_TEST_SECRET

NAMESPACE = "skillmix"
BUCKET = "skillmix-local"


def up(workdir: Path, port: int | None) -> int:
    if (workdir / "state.json").exists():
        cp = ControlPlane.load(workdir)
        if any(cp.alive().values()):
            print(
                f"cluster-up: a cluster is already running from {workdir}; `make cluster-down` first"
            )
            return 2
        shutil.rmtree(workdir)
    cp = start_control_plane(workdir, api_port=port)
    try:
        start_kubelet(cp)
        s3_port = free_port()
        moto = shutil.which("moto_server", path=str(Path(sys.executable).parent))
        if moto is None:
            raise ClusterSetupError("moto_server not found next to this Python: run `make install`")
        _spawn(cp, "s3", [moto, "-H", "127.0.0.1", "-p", str(s3_port)])
        s3 = f"http://127.0.0.1:{s3_port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(s3, timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise ClusterSetupError(
                        f"the S3 server did not start; see {cp.log('s3')}"
                    ) from None
                time.sleep(0.2)
        _create_bucket(s3)
        prepare_namespace(cp, NAMESPACE)
        profile = write_profile(workdir / "skillmix.yaml", cp, NAMESPACE, f"s3://{BUCKET}/runs", s3)
        cp.ports["s3"] = s3_port
        cp.save()
    except BaseException:
        cp.stop(grace=3)
        raise
    secret = workdir / "s3-secret"
    secret.write_text(S3_TEST_SECRET + "\n")
    env = workdir / "env"
    env.write_text(
        f"export KUBECONFIG={cp.kubeconfig}\n"
        f"export SKILLMIX_CONFIG={profile}\n"
        f"export SKILLMIX_S3_ENDPOINT_URL={s3}\n"
        f"export AWS_ACCESS_KEY_ID={S3_TEST_ACCESS_KEY}\n"
        f"export AWS_SECRET_ACCESS_KEY=$(cat {secret})\n"
        "export AWS_DEFAULT_REGION=us-east-1\n"
    )
    for path in (secret, env):
        path.chmod(0o600)
    print(
        f"""cluster up: Kubernetes {cp.server} (process kubelet: cpu-node, gpu-node), S3 {s3}
  kubeconfig: {cp.kubeconfig} (contexts: admin, launcher)
  profile:    {profile} (cluster `local`, namespace {NAMESPACE}, image {IMAGE})
  S3:         {s3} (bucket {BUCKET}; credentials in {env})
Use it:
  source {env}
  skillmix launch -f k8s/experiment.kind.yaml --cluster local --wait
  kubectl --context launcher -n {NAMESPACE} get jobs,pods
Stop it: make cluster-down"""
    )
    return 0


def _create_bucket(endpoint: str) -> None:
    import boto3

    boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=S3_TEST_ACCESS_KEY,
        aws_secret_access_key=S3_TEST_SECRET,
        region_name="us-east-1",
    ).create_bucket(Bucket=BUCKET)


def down(workdir: Path) -> int:
    if not (workdir / "state.json").exists():
        print(f"cluster-down: no cluster state in {workdir}; nothing to stop")
        return 0
    cp = ControlPlane.load(workdir)
    cp.stop()
    left = [name for name, alive in cp.alive().items() if alive]
    if left:
        print(f"cluster-down: still running after SIGKILL: {', '.join(left)}")
        return 1
    shutil.rmtree(workdir)
    print("cluster down: every process stopped")
    return 0


def status(workdir: Path) -> int:
    if not (workdir / "state.json").exists():
        print("no cluster")
        return 1
    cp = ControlPlane.load(workdir)
    print(
        json.dumps(
            {"server": cp.server, "kubeconfig": str(cp.kubeconfig), "alive": cp.alive()}, indent=2
        )
    )
    return 0 if all(cp.alive().values()) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.cluster")
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--dir", type=Path, default=REPO_ROOT / ".cluster")
    parser.add_argument("--port", type=int, default=None, help="API server port (default: free)")
    args = parser.parse_args(argv)
    workdir = args.dir.resolve()
    try:
        if args.command == "up":
            return up(workdir, args.port)
        if args.command == "down":
            return down(workdir)
        return status(workdir)
    except ClusterSetupError as exc:
        print(f"cluster-{args.command}: {exc}", file=sys.stderr)
        return 2
    except (subprocess.CalledProcessError, AssertionError) as exc:
        print(f"cluster-{args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
