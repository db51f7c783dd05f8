"""``helm template`` on the chart shipped with skillmix (no cluster needed)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from skillmix import settings
from skillmix.errors import RunFailedError, SkillmixError
from skillmix.vocab import PHASE_LABEL, STUDENT_LABEL


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
        if not message:  # a helm that says nothing (a wrong SKILLMIX_HELM): say what ran
            message = f"{helm} ended with exit status {proc.returncode} and no output"
        if "kubeVersion" in message:
            raise SkillmixError(
                f"the cluster's Kubernetes {kube_version} is not supported by the chart: {message}"
            )
        raise RunFailedError(f"helm template failed: {message}")
    return proc.stdout


def manifests(rendered: str) -> list[dict[str, Any]]:
    """The rendered documents. libyaml's loader when PyYAML has it: the pure-Python one takes
    ~20 s for a 1,500-Job run (8 MB), libyaml ~2 s."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return [
        doc
        for doc in yaml.load_all(rendered, Loader=loader)
        if isinstance(doc, dict) and doc.get("kind")
    ]


_SEPARATOR = re.compile(r"^---[ \t]*$", re.MULTILINE)
_KIND = re.compile(r"^kind:[ \t]*(\S+)[ \t]*$", re.MULTILINE)
_NAME = re.compile(r"^metadata:[ \t]*\n(?:[ \t]+.*\n)*?  name:[ \t]*(\S+)[ \t]*$", re.MULTILINE)
_LABEL = r"^    {key}:[ \t]*(\S+)[ \t]*$"  # metadata.labels (the first, 4-space-indented one)


@dataclass
class RenderedDoc:
    """One rendered object as helm wrote it: its kind, name and (phase, student) read from the
    text, the YAML itself (sent as is: the API server takes YAML), and the parsed object on
    demand. A 1,500-Job launch parses only one object per (kind, phase, student), not
    1,500 (libyaml needs ~2-3 s for all of them)."""

    kind: str
    name: str
    group: tuple[str, str, str]
    text: str
    _parsed: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def doc(self) -> dict[str, Any]:
        if self._parsed is None:
            loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
            parsed = yaml.load(self.text, Loader=loader)
            self._parsed = parsed if isinstance(parsed, dict) else {}
        return self._parsed


def split_manifests(rendered: str) -> list[RenderedDoc]:
    """The rendered stream as documents, without parsing them (see RenderedDoc); a document
    whose kind or name the text does not show plainly is parsed."""
    docs = []
    for text in _SEPARATOR.split(rendered):
        body = "\n".join(
            line for line in text.splitlines() if line.strip() and not line.startswith("#")
        )
        if not body:
            continue
        kind, name = _KIND.search(text), _NAME.search(text)
        labels = [
            re.search(_LABEL.format(key=re.escape(k)), text, re.MULTILINE)
            for k in (PHASE_LABEL, STUDENT_LABEL)
        ]
        if kind is None or name is None:
            doc = RenderedDoc("", "", ("", "", ""), text + "\n")
            parsed = doc.doc
            if not parsed.get("kind"):
                continue
            doc.kind = str(parsed["kind"])
            doc.name = str((parsed.get("metadata") or {}).get("name", ""))
            plain = (parsed.get("metadata") or {}).get("labels") or {}
            doc.group = (
                doc.kind,
                str(plain.get(PHASE_LABEL, "")),
                str(plain.get(STUDENT_LABEL, "")),
            )
            docs.append(doc)
            continue
        values = [_scalar(m.group(1)) if m else "" for m in labels]
        docs.append(
            RenderedDoc(
                _scalar(kind.group(1)),
                _scalar(name.group(1)),
                (_scalar(kind.group(1)), values[0], values[1]),
                text.strip("\n") + "\n",
            )
        )
    return docs


def _scalar(text: str) -> str:
    """A plain or double-quoted YAML scalar as helm writes names and labels."""
    if text.startswith('"'):
        try:
            return str(json.loads(text))
        except ValueError:
            return text.strip('"')
    return text.strip("'")
