"""The run's vocabulary (skillmix/vocab.py) is defined once and the chart writes the same."""

from __future__ import annotations

import re
from pathlib import Path

from skillmix import vocab
from skillmix.pipeline.plan import plan_tasks  # noqa: F401  (imports vocab.Phase)

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = ROOT / "helm" / "skillmix" / "templates"


def test_the_chart_writes_every_skillmix_label_and_annotation_key() -> None:
    text = "\n".join(p.read_text(encoding="utf-8") for p in sorted(TEMPLATES.iterdir()))
    keys = [
        value
        for name, value in vars(vocab).items()
        if name.endswith(("_LABEL", "_ANNOTATION")) and isinstance(value, str)
    ]
    written_by_code = {vocab.FAILURE_ANNOTATION, vocab.PREFLIGHT_ANNOTATION, vocab.QUEUE_LABEL}
    for key in keys:
        if key in written_by_code:  # set by the coordinator, the pre-flight, or Kueue's users
            continue
        assert re.search(rf"^\s*{re.escape(key)}:", text, re.M), f"the chart never writes {key}"
    chart_keys = set(re.findall(r"^\s*(skillmix\.io/[a-z-]+):", text, re.M))
    assert chart_keys <= set(keys), (
        f"keys the chart writes but vocab.py lacks: {chart_keys - set(keys)}"
    )


def test_the_chart_phases_are_the_job_phases() -> None:
    text = "\n".join(p.read_text(encoding="utf-8") for p in sorted(TEMPLATES.glob("*.yaml")))
    assert set(re.findall(r'"phase" "(\w+)"', text)) == set(vocab.JOB_PHASES)
    assert vocab.PHASES == ("generate", "grade", "aggregate")
    assert vocab.JOB_PHASES[: len(vocab.PHASES)] == vocab.PHASES


def test_phases_and_label_keys_are_defined_only_in_vocab() -> None:
    pattern = re.compile(
        r"^\s*((?:PHASES|Phase|JOB_PHASES)\s*(?::[^=\n]*)?=|\w+\s*=\s*\"(?:skillmix\.io|kueue\.x-k8s\.io|batch\.kubernetes\.io)/)",
        re.M,
    )
    for path in sorted((ROOT / "skillmix").rglob("*.py")):
        if path.name == "vocab.py":
            continue
        found = pattern.findall(path.read_text(encoding="utf-8"))
        assert not found, f"{path.relative_to(ROOT)} defines {found}: import them from vocab.py"
