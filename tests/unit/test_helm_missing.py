from __future__ import annotations

from pathlib import Path

import pytest

import skillmix.k8s.helm as helm
from tests.helpers import run_cli

PROFILE = """clusters:
  prod:
    namespace: evals
    store: s3://bucket/runs
"""


@pytest.fixture
def profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "skillmix.yaml").write_text(PROFILE, encoding="utf-8")
    monkeypatch.setenv("SKILLMIX_CONFIG", str(tmp_path / "skillmix.yaml"))
    return tmp_path


def test_missing_helm_is_a_one_line_error_naming_the_fix(
    profile: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SKILLMIX_HELM", raising=False)
    monkeypatch.setenv("PATH", str(profile))  # no helm here
    monkeypatch.setattr(helm, "checkout_helm", lambda: profile / "nope")
    result = run_cli("render", "-f", "examples/quickstart.yaml", "--cluster", "prod")
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1
    assert (
        "helm not found on PATH" in result.stderr
        and "SKILLMIX_HELM" in result.stderr
        and "make tools" in result.stderr
    )
    assert result.stdout == ""


def test_skillmix_helm_must_be_executable(profile: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SKILLMIX_HELM", str(profile / "missing-helm"))
    result = run_cli("render", "-f", "examples/quickstart.yaml", "--cluster", "prod")
    assert result.exit_code == 2 and "is not an executable file" in result.stderr


def test_a_helm_that_fails_silently_still_says_why(
    profile: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SKILLMIX_HELM=/bin/false exits 1 and prints nothing: the line names the binary and code."""
    monkeypatch.setenv("SKILLMIX_HELM", "/bin/false")
    result = run_cli("render", "-f", "examples/quickstart.yaml", "--cluster", "prod")
    assert result.exit_code != 0 and result.stderr.count("\n") == 1, result.stderr
    assert "/bin/false" in result.stderr and "exit status 1" in result.stderr
    assert "no output" in result.stderr
