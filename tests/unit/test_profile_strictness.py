"""Cluster profiles are checked as strictly as experiment files (issue 24's probe: quoted
numbers and booleans were accepted, and an empty image or `cpu: "lots"` failed only inside
helm). Each bad value is one line naming the profile file and the field, exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.helpers import run_cli

GOOD = {"namespace": "evals", "store": "s3://bucket/runs"}


@pytest.mark.parametrize(
    "change, needle",
    [
        ({"backoff_limit": "3"}, "backoff_limit"),
        ({"model_cache_offline": "yes"}, "model_cache_offline"),
        ({"deadlines": {"generation_seconds": "3600"}}, "generation_seconds"),
        ({"image": ""}, "image"),
        ({"image": "repo/skillmix:1 latest"}, "image"),
        ({"client_resources": {"requests": {"cpu": "lots"}}}, "not a Kubernetes quantity"),
        ({"vllm_resources": {"limits": {"memory": "big"}}}, "not a Kubernetes quantity"),
        ({"secrets": {"BAD KEY": {"name": "key"}}}, "BAD KEY"),
        ({"s3": {"endpoint_url": "minio:9000"}}, "endpoint_url"),
    ],
)
def test_a_bad_profile_value_is_one_line_naming_the_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: dict[str, object], needle: str
) -> None:
    (tmp_path / "skillmix.yaml").write_text(
        yaml.safe_dump({"clusters": {"prod": {**GOOD, **change}}})
    )
    monkeypatch.setenv("SKILLMIX_CONFIG", str(tmp_path / "skillmix.yaml"))
    result = run_cli("render", "-f", "examples/quickstart.yaml", "--cluster", "prod")
    assert result.exit_code == 2, result.stderr
    assert needle in result.stderr and "skillmix.yaml" in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_a_good_profile_still_renders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    profile = {
        **GOOD,
        "backoff_limit": 3,
        "model_cache_offline": False,
        "client_resources": {"requests": {"cpu": "250m", "memory": "256Mi"}},
        "secrets": {"OPENAI_API_KEY": {"name": "openai"}},
        "s3": {"endpoint_url": "http://minio.storage:9000"},
    }
    (tmp_path / "skillmix.yaml").write_text(yaml.safe_dump({"clusters": {"prod": profile}}))
    monkeypatch.setenv("SKILLMIX_CONFIG", str(tmp_path / "skillmix.yaml"))
    result = run_cli("render", "-f", "examples/quickstart.yaml", "--cluster", "prod")
    assert result.exit_code == 0, result.stderr
