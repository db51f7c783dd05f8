"""Bad setup of the test control plane: one clear line naming the fix, no process left behind."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cluster.controlplane import (
    REPO_ROOT,
    ClusterSetupError,
    missing_binaries,
    start_control_plane,
)

SCRIPT = REPO_ROOT / "scripts" / "install-control-plane.sh"
needs_binaries = pytest.mark.skipif(
    bool(missing_binaries()) and not os.environ.get("CI"),
    reason="control plane binaries not built (make tools)",
)


def _script(tmp_path: Path, path: str) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": path,
        "HOME": str(tmp_path / "home"),
        "SKILLMIX_TOOLS_CACHE": str(tmp_path / "cache"),
        "SKILLMIX_CONTROL_PLANE_DIR": str(tmp_path / "bin"),
    }
    return subprocess.run(
        ["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60
    )


def test_install_without_go_names_the_fix(tmp_path: Path) -> None:
    result = _script(tmp_path, "/usr/bin:/bin")
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("install-control")]
    assert errors == [
        "install-control-plane: no Go toolchain on PATH: install Go >= 1.24 "
        "(https://go.dev/doc/install) and rerun 'make tools'"
    ]
    assert not (tmp_path / "bin").exists()


def test_a_failed_build_names_the_fix(tmp_path: Path) -> None:
    fake = tmp_path / "fakebin"
    fake.mkdir()
    go = fake / "go"
    go.write_text("#!/bin/sh\necho 'go: module lookup disabled' >&2\nexit 1\n")
    go.chmod(0o755)
    result = _script(tmp_path, f"{fake}:/usr/bin:/bin")
    assert result.returncode == 1
    assert "install-control-plane: could not download k8s.io/kubernetes@v1.34.4" in result.stderr
    assert "rerun" in result.stderr or "Go module proxy" in result.stderr
    assert not (tmp_path / "bin").exists()


def test_missing_binaries_name_make_tools(tmp_path: Path) -> None:
    with pytest.raises(
        ClusterSetupError, match=r"binaries missing in .*: etcd, .*run `make tools`"
    ):
        start_control_plane(tmp_path / "cp", bin_dir=tmp_path / "empty")


def _descendants_alive(pids: list[int]) -> list[int]:
    alive = []
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        if stat.rsplit(")", 1)[1].split()[0] != "Z":
            alive.append(pid)
    return alive


@needs_binaries
def test_a_port_in_use_is_one_line_and_starts_nothing(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "tests.cluster",
                "up",
                "--dir",
                str(tmp_path / "c"),
                "--port",
                str(port),
            ],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"cluster-up: port {port} on 127.0.0.1 is in use; stop what holds it or pick another port"
    )
    assert not (tmp_path / "c" / "state.json").exists()


@needs_binaries
def test_a_control_plane_not_ready_in_time_is_stopped(tmp_path: Path) -> None:
    with pytest.raises(ClusterSetupError, match="not ready in time") as caught:
        start_control_plane(tmp_path / "cp", timeout=0.3)
    assert "\n" not in str(caught.value)
    logs = list((tmp_path / "cp" / "logs").glob("*.log"))
    assert logs  # something was started ...
    pids = [int(p) for p in _pids_under(tmp_path / "cp")]
    assert _descendants_alive(pids) == []  # ... and nothing of it is left


def _pids_under(workdir: Path) -> list[str]:
    """Processes whose command line names the workdir (every component's does)."""
    out = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if str(workdir) in cmdline:
            out.append(proc.name)
    return out


@needs_binaries
def test_cluster_up_gives_a_cluster_people_can_drive_and_down_stops_it(tmp_path: Path) -> None:
    workdir = tmp_path / "c"
    up = subprocess.run(
        [sys.executable, "-m", "tests.cluster", "up", "--dir", str(workdir)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert f"kubeconfig: {workdir / 'kubeconfig'}" in up.stdout
        assert f"source {workdir / 'env'}" in up.stdout
        kubectl = [
            str(REPO_ROOT / ".tools" / "bin" / "kubectl"),
            "--kubeconfig",
            str(workdir / "kubeconfig"),
        ]

        def run(*args: str) -> str:
            done = subprocess.run([*kubectl, *args], capture_output=True, text=True, timeout=60)
            return done.stdout.strip() + done.stderr.strip()

        assert (
            run("--context", "launcher", "-n", "skillmix", "auth", "can-i", "create", "jobs")
            == "yes"
        )
        assert run(
            "--context", "launcher", "-n", "skillmix", "auth", "can-i", "get", "secrets"
        ).startswith("no")
        nodes = run("--context", "admin", "get", "nodes", "-o", "name")
        assert sorted(nodes.split()) == ["node/cpu-node", "node/gpu-node"]
        labels = run(
            "--context", "admin", "get", "ns", "skillmix", "-o", "jsonpath={.metadata.labels}"
        )
        assert '"pod-security.kubernetes.io/enforce":"restricted"' in labels
    finally:
        down = subprocess.run(
            [sys.executable, "-m", "tests.cluster", "down", "--dir", str(workdir)],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert down.returncode == 0, down.stdout + down.stderr
    assert _descendants_alive([int(p) for p in _pids_under(workdir)]) == []
    assert not workdir.exists()
