"""The result identity (skillmix/identity.py): what the run id hashes, and what `skillmix
compare` compares. One owner: a setting that changes the run id changes what compare shows,
unless it is named in NOT_COMPARED with its reason."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from skillmix.config import Experiment
from skillmix.identity import (
    NOT_COMPARED,
    SETTING_LABELS,
    SETTINGS,
    ResultIdentity,
    comparable_settings,
    config_hash,
    leaves,
    setting_of,
)

CATALOG_HASH = "c" * 16
PROMPT_HASHES = {"generation": "g" * 16, "grading": "p" * 16}


def minimal(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "exp",
        "ks": [2, 3],
        "students": [{"name": "s1", "model": "m1"}],
        "grader": {"model": "judge"},
    }
    data.update(overrides)
    return data


def identity(data: dict[str, Any]) -> ResultIdentity:
    return ResultIdentity(Experiment.model_validate(data), CATALOG_HASH, PROMPT_HASHES)


def run_hash(data: dict[str, Any]) -> str:
    return config_hash(identity(data).fields())


def compared(data: dict[str, Any]) -> dict[str, str]:
    return comparable_settings(identity(data).fields())


# ---- run identity --------------------------------------------------------------------------


def test_config_hash_ignores_key_order() -> None:
    a = {"x": 1, "y": {"b": 2, "a": [1, 2]}}
    b = {"y": {"a": [1, 2], "b": 2}, "x": 1}
    assert config_hash(a) == config_hash(b)
    assert len(config_hash(a)) == 8
    assert all(c in "0123456789abcdef" for c in config_hash(a))
    assert len(config_hash(a, length=12)) == 12
    assert config_hash({"x": 1}) != config_hash({"x": 2})


def test_identity_independent_of_key_order() -> None:
    data = minimal(
        students=[{"model": "m1", "name": "s1", "sampling": {"temperature": 0.2, "top_p": 0.9}}],
        grader={"rounds": 2, "model": "judge"},
    )
    reordered = dict(reversed(list(data.items())))
    reordered["students"] = [
        {"sampling": {"top_p": 0.9, "temperature": 0.2}, "name": "s1", "model": "m1"}
    ]
    assert run_hash(data) == run_hash(reordered)


def _with_budgets(data: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(data)
    for spec in [*out["students"], out["grader"]]:
        spec.update(
            concurrency=3,
            rpm=600,
            tpm=90000,
            base_url="http://127.0.0.1:9999/v1",
            timeout=5,
            max_retries=1,
            api_key_env="OTHER_KEY",
            replicas=4,
        )
    out["store"] = "s3://elsewhere/runs"
    out["metrics"] = {"mode": "reference", "bootstrap_samples": 10}
    out["prices"] = {"m1": {"prompt": 1, "completion": 2}}
    return out


def test_identity_ignores_budgets_endpoints_and_store() -> None:
    base = minimal()
    assert run_hash(base) == run_hash(_with_budgets(base))


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d["students"][0].update(model="other"),
        lambda d: d["students"][0].update(name="renamed"),
        lambda d: d["students"][0].update(system_prompt="Be brief."),
        lambda d: d["students"][0].update(sampling={"temperature": 0.3}),
        lambda d: d["students"][0].update(sampling={"max_tokens": 100}),
        lambda d: d["students"][0].update(quality=0.2),
        lambda d: d["grader"].update(model="judge-2"),
        lambda d: d["grader"].update(rounds=5),
        lambda d: d["grader"].update(sampling={"temperature": 0.0}),
        lambda d: d.update(seed=11),
        lambda d: d.update(order_seed="other"),
        lambda d: d.update(ks=[2, 4]),
        lambda d: d.update(combinations=7),
        lambda d: d.update(generation_rounds=2),
        lambda d: d.update(sampling="distinct"),
        lambda d: d["students"].append({"name": "s2", "model": "m2"}),
    ],
)
def test_identity_changes_with_results(change: Any) -> None:
    base = minimal()
    changed = copy.deepcopy(base)
    change(changed)
    assert run_hash(base) != run_hash(changed)


def test_identity_depends_on_catalog_and_prompts() -> None:
    exp = Experiment.model_validate(minimal())
    base = ResultIdentity(exp, CATALOG_HASH, PROMPT_HASHES).run_id()
    assert ResultIdentity(exp, "d" * 16, PROMPT_HASHES).run_id() != base
    other_prompts = {**PROMPT_HASHES, "grading": "q" * 16}
    assert ResultIdentity(exp, CATALOG_HASH, other_prompts).run_id() != base


def test_identity_holds_no_secret_or_endpoint() -> None:
    data = _with_budgets(minimal())
    blob = json.dumps(
        ResultIdentity(Experiment.model_validate(data), CATALOG_HASH, PROMPT_HASHES).fields()
    )
    for absent in ("127.0.0.1", "OTHER_KEY", "elsewhere", "concurrency", "rpm", "tpm"):
        assert absent not in blob


# ---- compare sees what the run id sees ------------------------------------------------------

# Every setting of an experiment that changes the run id and is not about the students (who
# are the rows a comparison ranks). A new result setting belongs here too; the test below
# fails until compare shows it.
RUN_WIDE_CHANGES = [
    lambda d: d["grader"].update(model="judge-2"),
    lambda d: d["grader"].update(rounds=5),
    lambda d: d["grader"].update(sampling={"temperature": 0.7}),
    lambda d: d["grader"].update(sampling={"max_tokens": 900}),
    lambda d: d["grader"].update(system_prompt="Grade harshly."),
    lambda d: d["grader"].update(style="points"),
    lambda d: d["grader"].update(backend="mock", quality=0.5),
    lambda d: d.update(seed=11),
    lambda d: d.update(order_seed="other"),
    lambda d: d.update(ks=[2, 4]),
    lambda d: d.update(combinations=7),
    lambda d: d.update(generation_rounds=2),
    lambda d: d.update(sampling="distinct"),
]


@pytest.mark.parametrize("change", RUN_WIDE_CHANGES)
def test_every_run_wide_change_of_the_run_id_is_a_compared_difference(change: Any) -> None:
    base = minimal()
    changed = copy.deepcopy(base)
    change(changed)
    assert run_hash(base) != run_hash(changed)
    assert compared(base) != compared(changed)


def test_the_graders_temperature_is_compared() -> None:
    """The bug: two runs differing only in the grader's temperature had different run ids
    and were ranked side by side without a warning."""
    cold = compared(minimal(grader={"model": "judge", "sampling": {"temperature": 0.0}}))
    warm = compared(minimal(grader={"model": "judge", "sampling": {"temperature": 0.7}}))
    assert cold["grader"] != warm["grader"]
    assert "temperature 0.7" in warm["grader"]


def test_every_leaf_of_the_identity_has_a_compared_setting_or_a_reason() -> None:
    """A new field in ResultIdentity.fields() fails here until SETTINGS maps it (compare then
    shows it) or NOT_COMPARED names why it does not matter for comparability."""
    rich = minimal(
        grader={
            "model": "judge",
            "backend": "mock",
            "quality": 0.9,
            "system_prompt": "x",
            "sampling": {"temperature": 0.1, "top_p": 0.5, "max_tokens": 10, "seed": 3},
        }
    )
    shared = {k: v for k, v in identity(rich).fields().items() if k != "students"}
    for path in leaves(shared):
        setting = setting_of(path)
        assert setting != "other", f"{path}: map it in identity.SETTINGS or NOT_COMPARED"
        assert setting is None or setting in SETTING_LABELS
    assert set(NOT_COMPARED) <= set(leaves(shared))
    assert {s for _, s in SETTINGS} | {"metrics", "other"} == set(SETTING_LABELS)


def test_a_not_compared_leaf_changes_the_run_id_but_not_the_comparison() -> None:
    base, renamed = minimal(), minimal(grader={"model": "judge", "name": "judge-b"})
    assert run_hash(base) != run_hash(renamed)
    assert compared(base) == compared(renamed)


def test_compare_refuses_runs_whose_grader_sampling_differs(tmp_path: Any) -> None:
    """End to end: two mock runs that differ only in the grader's temperature."""
    import yaml

    from tests.helpers import run_cli

    runs = []
    for temperature in (0.0, 0.7):
        experiment = {
            "name": "cmp",
            "ks": [2],
            "combinations": 3,
            "students": [{"name": "s", "backend": "mock", "model": "mock-s", "quality": 0.8}],
            "grader": {
                "name": "judge",
                "backend": "mock",
                "model": "mock-grader",
                "sampling": {"temperature": temperature},
            },
            "metrics": {"bootstrap_samples": 20},
            "store": str(tmp_path / "runs"),
        }
        path = tmp_path / f"t{temperature}.yaml"
        path.write_text(yaml.safe_dump(experiment))
        result = run_cli("evaluate", "-f", str(path))
        assert result.exit_code == 0, result.stderr
    runs = sorted(str(p) for p in (tmp_path / "runs").iterdir() if p.name.startswith("cmp-"))
    assert len(runs) == 2, "the two runs must have different run ids"
    refused = run_cli("compare", *runs)
    assert refused.exit_code == 2, refused.stdout + refused.stderr
    assert "grader model and settings" in refused.stderr
    allowed = run_cli("compare", *runs, "--allow-mixed", "--format", "json")
    assert allowed.exit_code == 0, allowed.stderr
    assert "grader" in json.loads(allowed.stdout)["settings_differ"]
