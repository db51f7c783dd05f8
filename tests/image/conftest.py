"""The built image, run as a pod runs it (`make image-test`).

Every container here runs from the image named by SKILLMIX_IMAGE (what `make image` printed),
never from the source tree: the same flags as a `restricted` pod (the image's own non-root
user, a read-only root filesystem, a tmpfs /tmp, no capabilities, no privilege escalation) and
no network at all unless a test needs loopback, then the host's (never podman's bridge).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
PODMAN = REPO_ROOT / "scripts" / "podman.sh"
POD_UID = 10001  # docker/Dockerfile's USER

POD_FLAGS = (
    "--rm",
    "--read-only",
    "--tmpfs",
    "/tmp:rw,mode=1777,size=256m",
    "--cap-drop",
    "ALL",
    "--security-opt",
    "no-new-privileges",
    "--pull",
    "never",
)


def podman(
    *args: str, timeout: float = 120, check: bool = True
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(PODMAN), *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"podman {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
        )
    return result


@dataclass(frozen=True)
class Image:
    """The image under test and a way to run one container of it as a pod would."""

    ref: str

    def run(
        self,
        *args: str,
        entrypoint: str | None = None,
        network: str = "none",
        volumes: dict[Path, str] | None = None,
        env: dict[str, str] | None = None,
        timeout: float = 180,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        flags = [*POD_FLAGS, "--network", network]
        if entrypoint is not None:
            flags += ["--entrypoint", entrypoint]
        for host, target in (volumes or {}).items():
            flags += ["-v", f"{host}:{target}"]
        for name, value in (env or {}).items():
            flags += ["-e", f"{name}={value}"]
        return podman("run", *flags, self.ref, *args, timeout=timeout, check=check)

    def shell(self, script: str, **kw: object) -> subprocess.CompletedProcess[str]:
        return self.run("-c", script, entrypoint="/bin/sh", **kw)  # type: ignore[arg-type]

    def label(self, name: str) -> str:
        out = podman("image", "inspect", "--format", f'{{{{index .Labels "{name}"}}}}', self.ref)
        return out.stdout.strip()


@pytest.fixture(scope="session")
def image() -> Image:
    ref = os.environ.get("SKILLMIX_IMAGE", "")
    if not ref:
        pytest.skip("SKILLMIX_IMAGE is not set: `make image-test` builds the image and sets it")
    if shutil.which("podman") is None:
        pytest.fail("SKILLMIX_IMAGE is set but podman is not installed (make image installs it)")
    found = podman("image", "exists", ref, check=False)
    assert found.returncode == 0, f"no image {ref} in podman's storage: run `make image`"
    return Image(ref)


@pytest.fixture
def pod_volume(tmp_path: Path) -> Iterator[Path]:
    """An emptyDir-like folder the pod's uid may write (as fsGroup would make it)."""
    folder = tmp_path / "volume"
    folder.mkdir()
    if os.geteuid() == 0:
        os.chown(folder, POD_UID, POD_UID)
    else:
        folder.chmod(0o777)
    yield folder
