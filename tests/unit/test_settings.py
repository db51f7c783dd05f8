"""The environment is read in one place (skillmix/settings.py), and the README lists it all."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from skillmix import settings

ROOT = Path(__file__).resolve().parents[2]
NAME = re.compile(r"`([A-Z][A-Z0-9_]*)`")


def readme_variables() -> list[str]:
    """The names in the first column of the README's environment-variable table."""
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| variable |"))
    names: list[str] = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        names += NAME.findall(line.split("|")[1])
    return names


def test_readme_table_lists_every_variable_and_no_other() -> None:
    listed = readme_variables()
    known = [v.name for v in settings.VARIABLES]
    assert len(listed) == len(set(listed)), "a variable is listed twice in the README"
    assert sorted(set(known) - set(listed)) == [], "missing from the README table"
    assert sorted(set(listed) - set(known)) == [], "in the README table but not in settings.py"


def test_every_variable_is_documented() -> None:
    names = [v.name for v in settings.VARIABLES]
    assert len(names) == len(set(names))
    for variable in settings.VARIABLES:
        assert variable.meaning and variable.default and variable.precedence, variable.name
    own = {v.name for v in settings.VARIABLES if v.name.startswith("SKILLMIX_")}
    assert own == {
        "SKILLMIX_CONFIG",
        "SKILLMIX_CLUSTER",
        "SKILLMIX_HELM",
        "SKILLMIX_RUN",
        "SKILLMIX_DEBUG",
        "SKILLMIX_REVISION",
        "SKILLMIX_MOCK_API_KEY",
        "SKILLMIX_DUMMY_API_KEY",
        "SKILLMIX_S3_ENDPOINT_URL",
        "SKILLMIX_LOCK_SECONDS",
        "SKILLMIX_VLLM_HEALTH_TIMEOUT",
        "SKILLMIX_POD_NAME",
    }


def _env_reads(tree: ast.AST) -> list[int]:
    """Lines that touch os.environ / os.getenv / os.putenv."""
    return [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and node.attr in {"environ", "environb", "getenv", "putenv", "unsetenv"}
    ]


def test_only_settings_reads_the_environment() -> None:
    """Everything else goes through skillmix.settings (values, and names for click's envvar=)."""
    offenders = []
    for path in sorted((ROOT / "skillmix").rglob("*.py")):
        if path.name == "settings.py" and path.parent.name == "skillmix":
            continue
        source = path.read_text(encoding="utf-8")
        tree = ast.parse(source)
        offenders += [f"{path.relative_to(ROOT)}:{line}" for line in _env_reads(tree)]
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.keyword)
                and node.arg == "envvar"
                and isinstance(node.value, ast.Constant)
            ):
                offenders.append(f"{path.relative_to(ROOT)}:{node.value.lineno} envvar literal")
    assert offenders == []


def test_settings_module_is_light() -> None:
    tree = ast.parse((ROOT / "skillmix" / "settings.py").read_text(encoding="utf-8"))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    assert imported <= {"__future__", "os", "dataclasses", "pathlib"}


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, False), ("", False), ("0", False), ("false", False), ("1", True), ("yes", True)],
)
def test_debug(monkeypatch: pytest.MonkeyPatch, value: str | None, expected: bool) -> None:
    if value is None:
        monkeypatch.delenv("SKILLMIX_DEBUG", raising=False)
    else:
        monkeypatch.setenv("SKILLMIX_DEBUG", value)
    assert settings.debug() is expected


def test_profile_file_and_config_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SKILLMIX_CONFIG", "")
    assert settings.profile_file() is None
    monkeypatch.setenv("SKILLMIX_CONFIG", str(tmp_path / "p.yaml"))
    assert settings.profile_file() == tmp_path / "p.yaml"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert settings.config_home() == tmp_path
    monkeypatch.setenv("XDG_CONFIG_HOME", "")
    assert settings.config_home() == Path.home() / ".config"


def test_s3_endpoint_order(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SKILLMIX_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    assert settings.s3_endpoint() is None
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://c")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://b")
    assert settings.s3_endpoint() == "http://b"
    monkeypatch.setenv("SKILLMIX_S3_ENDPOINT_URL", "  ")
    assert settings.s3_endpoint() == "http://b"
    monkeypatch.setenv("SKILLMIX_S3_ENDPOINT_URL", " http://a ")
    assert settings.s3_endpoint() == "http://a"


def test_numbers_and_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOB_COMPLETION_INDEX", raising=False)
    assert settings.completion_index() == 0
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "3")
    assert settings.completion_index() == 3
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "x")
    assert settings.aws_max_attempts(5) == 5
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
    assert settings.aws_max_attempts(5) == 2
    monkeypatch.delenv("SKILLMIX_DUMMY_API_KEY", raising=False)
    assert settings.dummy_api_key() == "EMPTY"
    monkeypatch.setenv("SKILLMIX_DUMMY_API_KEY", "k")
    assert settings.dummy_api_key() == "k"
    monkeypatch.delenv("SKILLMIX_TEST_KEY_VAR", raising=False)
    assert settings.api_key("SKILLMIX_TEST_KEY_VAR") is None
