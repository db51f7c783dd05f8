"""``helm template`` on the chart shipped with skillmix (no cluster needed)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from skillmix import settings
from skillmix.errors import RunFailedError, SkillmixError


def chart_dir() -> Path:
    """Wheels carry the chart as ``skillmix/builtin_chart``; a checkout has ``helm/skillmix``."""
    packaged = Path(__file__).resolve().parent.parent / "builtin_chart"
    if (packaged / "Chart.yaml").is_file():
        return packaged
    return Path(__file__).resolve().parents[2] / "helm" / "skillmix"


def checkout_helm() -> Path:
    """Where `make tools` puts helm in a source checkout."""
    return Path(__file__).resolve().parents[2] / ".tools" / "bin" / "helm"


def find_helm() -> str:
    explicit = settings.helm_binary()
    if explicit:
        if not (Path(explicit).is_file() and os.access(explicit, os.X_OK)):
            raise SkillmixError(f"SKILLMIX_HELM={explicit} is not an executable file")
        return explicit
    found = shutil.which("helm")
    if found:
        return found
    local = checkout_helm()
    if local.is_file():
        return str(local)
    raise SkillmixError(
        "helm not found on PATH",
        hint="install Helm (https://helm.sh/docs/intro/install/), set SKILLMIX_HELM, or run `make tools` in a checkout",
    )


def helm_template(
    values: dict[str, Any],
    release: str,
    namespace: str,
    *,
    chart: Path | None = None,
    kube_version: str | None = None,
) -> str:
    """Render the chart; returns the multi-document YAML. ``kube_version`` (the API server's
    ``/version``) makes helm check Chart.yaml's ``kubeVersion`` and ``.Capabilities`` against
    the real cluster instead of helm's built-in default."""
    import yaml

    helm = find_helm()
    chart = chart or chart_dir()
    if not (chart / "Chart.yaml").is_file():
        raise SkillmixError(f"chart not found at {chart}")
    with tempfile.TemporaryDirectory(prefix="skillmix-values-") as tmp:
        values_file = Path(tmp) / "values.yaml"
        values_file.write_text(yaml.safe_dump(values, sort_keys=False), encoding="utf-8")
        proc = subprocess.run(
            [
                helm,
                "template",
                release,
                str(chart),
                "--namespace",
                namespace,
                "-f",
                str(values_file),
                *(["--kube-version", kube_version] if kube_version else []),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    if proc.returncode != 0:
        message = " ".join(proc.stderr.strip().split())[:600]
        if "kubeVersion" in message:
            raise SkillmixError(
                f"the cluster's Kubernetes {kube_version} is not supported by the chart: {message}"
            )
        raise RunFailedError(f"helm template failed: {message}")
    return proc.stdout


def manifests(rendered: str) -> list[dict[str, Any]]:
    """The rendered documents. libyaml's loader when PyYAML has it: the pure-Python one takes
    ~20 s for a 1,500-Job run (8 MB), libyaml ~2 s."""
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return [
        doc
        for doc in yaml.load_all(rendered, Loader=loader)
        if isinstance(doc, dict) and doc.get("kind")
    ]
