"""The experiment file: strict validation and readable errors (run ids: test_identity.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from skillmix.backends.vllm_server import vllm_server_args
from skillmix.cli.flags import (
    BACKEND_ARG_KEYS,
    apply_backend_args,
    apply_sampling_params,
    parse_int_list,
    parse_kv_pairs,
)
from skillmix.config import DEFAULT_SYSTEM_PROMPT, SAMPLING_KEYS, Experiment, GraderSpec, ModelSpec
from skillmix.errors import SkillmixError
from skillmix.loading import (
    experiment_schema,
    format_validation_error,
    load_experiment,
    parse_experiment,
)
from tests.helpers import run_cli
from tests.unit.test_identity import run_hash

ROOT = Path(__file__).resolve().parents[2]


def minimal(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "exp",
        "ks": [2, 3],
        "students": [{"name": "s1", "model": "m1"}],
        "grader": {"model": "judge"},
    }
    data.update(overrides)
    return data


def error_of(data: object, source: str = "exp.yaml") -> str:
    with pytest.raises(SkillmixError) as info:
        parse_experiment(data, source)
    assert info.value.exit_code == 2
    return str(info.value)


# ---- defaults ------------------------------------------------------------------------------


def test_defaults() -> None:
    exp = Experiment.model_validate(minimal())
    assert exp.seed == 10
    assert exp.order_seed == "test"
    assert exp.combinations == 100
    assert exp.generation_rounds == 1
    assert exp.sampling == "reference"
    assert exp.store == "runs"
    assert exp.prompts.generation == "two-turn-v1"
    assert exp.prompts.grading == "table-v1"
    assert exp.prompts.template_encoding == "utf-8"
    assert exp.catalog.skills is None and exp.catalog.topics is None
    assert exp.metrics.mode == "strict" and exp.metrics.vote == "majority"
    assert exp.prices == {}
    student = exp.students[0]
    assert student.backend == "mock"
    assert student.system_prompt == DEFAULT_SYSTEM_PROMPT
    assert student.sampling.request_params() == {"max_tokens": 512}
    assert student.concurrency == 16 and student.rpm == 0 and student.tpm == 0
    assert student.max_retries == 8 and student.replicas == 1
    assert student.vllm.tensor_parallel_size == 1
    grader = exp.grader
    assert isinstance(grader, GraderSpec)
    assert grader.name == "grader"
    assert grader.rounds == 3
    assert grader.style == "auto" and grader.use_n == "auto"
    assert grader.concurrency == 32
    assert grader.sampling.request_params() == {"temperature": 0.7, "max_tokens": 1024}


def test_metric_options_follow_mode() -> None:
    strict = Experiment.model_validate(minimal()).metrics.options()
    assert strict.filter_explicit_name == "word"
    reference = Experiment.model_validate(minimal(metrics={"mode": "reference"})).metrics.options()
    assert reference.filter_explicit_name == "off"
    explicit = Experiment.model_validate(
        minimal(metrics={"mode": "reference", "filter_explicit_name": "substring"})
    ).metrics.options()
    assert explicit.filter_explicit_name == "substring"


def test_api_key_env_defaults() -> None:
    assert ModelSpec(name="a", model="m").resolved_api_key_env() is None
    assert ModelSpec(name="a", backend="openai", model="m").resolved_api_key_env() == (
        "OPENAI_API_KEY"
    )
    spec = ModelSpec(name="a", backend="vllm", model="m", api_key_env="MY_KEY")
    assert spec.resolved_api_key_env() == "MY_KEY"


# ---- validation rules ----------------------------------------------------------------------


def test_ks_sorted() -> None:
    assert Experiment.model_validate(minimal(ks=[4, 2, 3])).ks == [2, 3, 4]


@pytest.mark.parametrize(
    ("ks", "needle"),
    [
        ([2, 2], "ks must not repeat"),
        ([0, 2], "every k must be at least 1"),
        ([-1], "every k must be at least 1"),
        ([], "ks"),
    ],
)
def test_ks_rejected(ks: list[int], needle: str) -> None:
    message = error_of(minimal(ks=ks))
    assert needle in message
    assert message.startswith("exp.yaml: ")


def test_student_names_unique() -> None:
    students = [
        {"name": "a", "model": "m1"},
        {"name": "b", "model": "m2"},
        {"name": "a", "model": "m3"},
    ]
    message = error_of(minimal(students=students))
    assert "student names must be unique" in message
    assert "repeated: a" in message


@pytest.mark.parametrize(
    "name", ["has space", "-leading", "trailing-", "dot.", "a/b", "x" * 64, "", "ü"]
)
def test_name_pattern_rejects(name: str) -> None:
    assert "name" in error_of(minimal(name=name))
    assert "students.0.name" in error_of(minimal(students=[{"name": name, "model": "m"}]))
    assert "grader.name" in error_of(minimal(grader={"name": name, "model": "g"}))


@pytest.mark.parametrize("name", ["a", "A.b_c-d", "gpt-4o-mini", "x" * 54, "7b"])
def test_name_pattern_accepts(name: str) -> None:
    exp = Experiment.model_validate(
        minimal(
            name=name, students=[{"name": name, "model": "m"}], grader={"name": name, "model": "g"}
        )
    )
    assert exp.name == name == exp.students[0].name == exp.grader.name


def test_name_lengths() -> None:
    # model names become folder names and label values (<= 63); the experiment name gets
    # "-{8 hex}" appended to form the run id, which must fit the same limit
    assert Experiment.model_validate(minimal(students=[{"name": "s" * 63, "model": "m"}]))
    assert "students.0.name" in error_of(minimal(students=[{"name": "s" * 64, "model": "m"}]))
    assert "name" in error_of(minimal(name="e" * 55))
    assert len("e" * 54 + "-" + "0" * 8) <= 63


def test_quality_only_for_mock() -> None:
    ok = Experiment.model_validate(minimal(students=[{"name": "s", "model": "m", "quality": 0.4}]))
    assert ok.students[0].quality == 0.4
    message = error_of(
        minimal(students=[{"name": "s", "backend": "openai", "model": "m", "quality": 0.4}])
    )
    assert "quality only applies to the mock backend" in message
    assert "students.0" in message
    assert "quality" in error_of(minimal(grader={"model": "g", "backend": "vllm", "quality": 1}))
    assert "students.0.quality" in error_of(
        minimal(students=[{"name": "s", "model": "m", "quality": 1.5}])
    )


@pytest.mark.parametrize("value", ["sk-abc", "sk-proj-123456", "has space", "1ABC", "A-B", ""])
def test_api_key_env_must_be_a_variable_name(value: str) -> None:
    message = error_of(
        minimal(students=[{"name": "s", "backend": "openai", "model": "m", "api_key_env": value}])
    )
    assert "api_key_env must be an environment variable name" in message
    assert value not in message or value == ""  # never echo what might be a key


@pytest.mark.parametrize("value", ["OPENAI_API_KEY", "_KEY", "key2", "a"])
def test_api_key_env_accepts_names(value: str) -> None:
    exp = Experiment.model_validate(
        minimal(students=[{"name": "s", "backend": "openai", "model": "m", "api_key_env": value}])
    )
    assert exp.students[0].api_key_env == value


def test_sampling_bounds() -> None:
    assert "students.0.sampling.temperature" in error_of(
        minimal(students=[{"name": "s", "model": "m", "sampling": {"temperature": 3}}])
    )
    assert "grader.sampling.top_p" in error_of(
        minimal(grader={"model": "g", "sampling": {"top_p": 0}})
    )


def test_student_lookup() -> None:
    exp = Experiment.model_validate(minimal())
    assert exp.student("s1").model == "m1"
    with pytest.raises(SkillmixError, match="no student named 'nope'"):
        exp.student("nope")


# ---- error messages ------------------------------------------------------------------------


def _validation_error(data: dict[str, Any]) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        Experiment.model_validate(data)
    return info.value


def test_format_unknown_key_names_its_path() -> None:
    data = minimal(students=[{"name": "s", "model": "m", "sampling": {"temprature": 1}}])
    message = format_validation_error(_validation_error(data), "exp.yaml")
    assert message == (
        "exp.yaml: unknown key 'students.0.sampling.temprature'; "
        "check the spelling (see `skillmix schema`)"
    )
    top = format_validation_error(_validation_error(minimal(colour="red")), "f.yaml")
    assert top.startswith("f.yaml: unknown key 'colour'")


def test_format_missing_key() -> None:
    data = minimal()
    del data["grader"]
    assert format_validation_error(_validation_error(data), "exp.yaml") == (
        "exp.yaml: missing required key 'grader'"
    )
    data = minimal(students=[{"name": "s"}])
    assert "missing required key 'students.0.model'" in format_validation_error(
        _validation_error(data), "exp.yaml"
    )


def test_format_wrong_type() -> None:
    message = format_validation_error(_validation_error(minimal(combinations="many")), "x.yaml")
    assert message.startswith("x.yaml: combinations: ")
    assert "valid integer" in message
    assert "\n" not in message


def test_format_counts_further_errors() -> None:
    message = format_validation_error(
        _validation_error(minimal(combinations="many", generation_rounds="x")), "x.yaml"
    )
    assert message.endswith("(and 1 more)")


def test_format_value_error_prefix_removed() -> None:
    message = format_validation_error(_validation_error(minimal(ks=[2, 2])), "x.yaml")
    assert message == "x.yaml: ks: ks must not repeat"


def test_top_level_must_be_mapping() -> None:
    assert error_of([1, 2], "list.yaml") == "list.yaml: expected a mapping at the top level"
    assert "expected a mapping" in error_of(None)


# ---- load_experiment -----------------------------------------------------------------------


def test_load_experiment_ok(tmp_path: Path) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text(
        "name: e\nks: [3, 2]\nstudents:\n  - {name: s, model: m}\ngrader: {model: g}\n",
        encoding="utf-8",
    )
    exp = load_experiment(path)
    assert exp.ks == [2, 3]
    assert exp.students[0].name == "s"


def test_load_experiment_yaml_error_has_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: e\nks: [2, 3\nstudents: []\n", encoding="utf-8")
    with pytest.raises(SkillmixError) as info:
        load_experiment(path)
    message = str(info.value)
    assert message.startswith(f"{path}:")
    assert "malformed YAML" in message
    line = int(message[len(str(path)) + 1 :].split(":", 1)[0])
    assert line in (2, 3)
    assert "\n" not in message


def test_load_experiment_tab_indent(tmp_path: Path) -> None:
    path = tmp_path / "tab.yaml"
    path.write_text("name: e\nstudents:\n\t- name: s\n", encoding="utf-8")
    with pytest.raises(SkillmixError, match=rf"^{path}:3: malformed YAML"):
        load_experiment(path)


def test_load_experiment_validation_error_names_file(tmp_path: Path) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text(
        "name: e\nks: [2]\nstudents: [{name: s, model: m, colour: red}]\ngrader: {model: g}\n",
        encoding="utf-8",
    )
    with pytest.raises(SkillmixError, match=r"exp\.yaml: unknown key 'students\.0\.colour'"):
        load_experiment(path)


def test_load_experiment_missing_and_unreadable(tmp_path: Path) -> None:
    with pytest.raises(SkillmixError, match="experiment file not found"):
        load_experiment(tmp_path / "absent.yaml")
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(b"name: caf\xe9\n")
    with pytest.raises(SkillmixError, match="cannot read"):
        load_experiment(bad)
    empty = tmp_path / "empty.yaml"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(SkillmixError, match="expected a mapping"):
        load_experiment(empty)


@pytest.mark.parametrize("path", sorted((ROOT / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_examples_load(path: Path) -> None:
    exp = load_experiment(path)
    assert exp.students and exp.ks


def test_examples_exist() -> None:
    assert len(list((ROOT / "examples").glob("*.yaml"))) >= 1


# ---- --backend-args / --sampling-params ----------------------------------------------------


def test_parse_kv_pairs() -> None:
    assert parse_kv_pairs("a=1, b = x ,c=y=z", "--x") == {"a": "1", "b": "x", "c": "y=z"}
    assert parse_kv_pairs("", "--x") == {}
    with pytest.raises(SkillmixError, match=r"--x: expected key=value, got 'oops'"):
        parse_kv_pairs("a=1,oops", "--x")


def test_apply_backend_args() -> None:
    spec = {"name": "s", "backend": "openai", "model": "m"}
    out = apply_backend_args(spec, "rpm=500,concurrency=4,base_url=http://127.0.0.1:8000/v1")
    assert out == {**spec, "rpm": "500", "concurrency": "4", "base_url": "http://127.0.0.1:8000/v1"}
    assert spec == {"name": "s", "backend": "openai", "model": "m"}  # not mutated
    validated = ModelSpec.model_validate(out, strict=False)  # as the quick form validates
    assert validated.rpm == 500 and validated.concurrency == 4


def test_apply_backend_args_unknown_key() -> None:
    with pytest.raises(SkillmixError) as info:
        apply_backend_args({"name": "s", "model": "m"}, "rpm=1,temprature=0.2")
    message = str(info.value)
    assert "--backend-args: unknown key 'temprature'" in message
    for key in BACKEND_ARG_KEYS:
        assert key in message


def test_apply_backend_args_values_validated_after() -> None:
    out = apply_backend_args({"name": "s", "model": "m"}, "rpm=lots")
    with pytest.raises(ValidationError):
        ModelSpec.model_validate(out)
    data = minimal(students=[apply_backend_args({"name": "s", "model": "m"}, "concurrency=0")])
    assert "students.0.concurrency" in error_of(data)
    data = minimal(
        students=[
            apply_backend_args(
                {"name": "s", "backend": "openai", "model": "m"}, "api_key_env=sk-abc"
            )
        ]
    )
    assert "api_key_env must be an environment variable name" in error_of(data)


def test_apply_sampling_params() -> None:
    spec = {"name": "s", "model": "m", "sampling": {"max_tokens": 100}}
    out = apply_sampling_params(spec, "temperature=0.5,stop=END|###,seed=3")
    assert out["sampling"] == {
        "max_tokens": 100,
        "temperature": "0.5",
        "stop": ["END", "###"],
        "seed": "3",
    }
    assert spec["sampling"] == {"max_tokens": 100}
    params = ModelSpec.model_validate(out, strict=False).sampling.request_params()
    assert params == {"max_tokens": 100, "temperature": 0.5, "stop": ["END", "###"], "seed": 3}


def test_apply_sampling_params_unknown_key() -> None:
    with pytest.raises(SkillmixError) as info:
        apply_sampling_params({"name": "s", "model": "m"}, "top_k=5")
    message = str(info.value)
    assert "--sampling-params: unknown key 'top_k'" in message
    for key in SAMPLING_KEYS:
        assert key in message


def test_apply_sampling_params_values_validated_after() -> None:
    out = apply_sampling_params({"name": "s", "model": "m"}, "temperature=hot")
    assert "students.0.sampling.temperature" in error_of(minimal(students=[out]))
    out = apply_sampling_params({"name": "s", "model": "m"}, "top_p=1.5")
    assert "students.0.sampling.top_p" in error_of(minimal(students=[out]))


def test_quick_form_cli_rejects_unknown_backend_arg(tmp_path: Path) -> None:
    result = run_cli(
        "evaluate", "--model", "m", "--k", "2", "--backend-args", "nope=1", "--store", str(tmp_path)
    )
    assert result.exit_code == 2
    assert "unknown key 'nope'" in result.stderr
    assert list(tmp_path.iterdir()) == []


# ---- schema --------------------------------------------------------------------------------


def test_experiment_schema_is_valid_json_schema() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = experiment_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == {"name", "ks", "students", "grader"}
    for name, definition in schema["$defs"].items():
        if definition.get("type") == "object" and "properties" in definition:
            assert definition.get("additionalProperties") is False, name
    json.dumps(schema)  # serialisable


def test_schema_validates_examples() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    import yaml

    validator = jsonschema.Draft202012Validator(experiment_schema())
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        errors = list(validator.iter_errors(data))
        assert errors == [], (path.name, [e.message for e in errors])
    assert list(validator.iter_errors({**minimal(), "colour": 1}))


def test_schema_cli_prints_it() -> None:
    result = run_cli("schema")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == experiment_schema()


def test_relative_catalog_paths_are_relative_to_the_experiment_file(tmp_path, monkeypatch) -> None:
    from skillmix.loading import load_experiment

    folder = tmp_path / "exp"
    folder.mkdir()
    (folder / "skills.csv").write_text(
        "category,skill,definition,example\nx,a,d.,e.\n", encoding="utf-8"
    )
    (folder / "exp.yaml").write_text(
        "name: rel\nks: [1]\ncatalog: {skills: skills.csv}\nprompts: {dir: prompts}\n"
        "students: [{name: s, model: m}]\ngrader: {model: g}\n",
        encoding="utf-8",
    )
    monkeypatch.chdir(tmp_path)  # a different working directory
    experiment = load_experiment(folder / "exp.yaml")
    assert experiment.catalog.skills == str(folder / "skills.csv")
    assert experiment.prompts.dir == str(folder / "prompts")
    assert experiment.catalog.topics is None


# ---- strict inputs: nothing is silently changed --------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "path"),
    [
        ({"combinations": True}, "combinations"),
        ({"combinations": "100"}, "combinations"),
        ({"ks": ["2", "3"]}, "ks.0"),
        ({"ks": [True]}, "ks.0"),
        ({"seed": "10"}, "seed"),
        ({"generation_rounds": 2.0}, "generation_rounds"),
        ({"students": [{"name": "s", "model": "m", "concurrency": "4"}]}, "students.0.concurrency"),
        ({"students": [{"name": "s", "model": "m", "quality": True}]}, "students.0.quality"),
        ({"grader": {"model": "j", "rounds": "3"}}, "grader.rounds"),
        (
            {"grader": {"model": "j", "sampling": {"temperature": "0.7"}}},
            "grader.sampling.temperature",
        ),
        ({"metrics": {"bootstrap_samples": False}}, "metrics.bootstrap_samples"),
        ({"prices": {"m": {"prompt": "1", "completion": 2}}}, "prices.m.prompt"),
    ],
)
def test_numbers_must_be_numbers(overrides: dict[str, Any], path: str) -> None:
    assert error_of(minimal(**overrides)).startswith(f"exp.yaml: {path}: Input should be a valid")


def test_integers_where_floats_belong_still_work() -> None:
    data = minimal(
        students=[{"name": "s", "model": "m", "quality": 1, "timeout": 30}],
        grader={"model": "j", "sampling": {"temperature": 1, "top_p": 1}},
        prices={"m": {"prompt": 1, "completion": 2}},
    )
    exp = parse_experiment(data, "exp.yaml")
    assert exp.students[0].quality == 1.0 and exp.students[0].timeout == 30.0
    assert exp.grader.sampling.temperature == 1.0


def test_stored_experiment_parses_again() -> None:
    exp = parse_experiment(minimal(), "exp.yaml")
    again = parse_experiment(json.loads(exp.model_dump_json()), "run.json")
    assert again == exp


@pytest.mark.parametrize("store", ["", "   "])
def test_empty_store_is_an_error(store: str) -> None:
    assert error_of(minimal(store=store)).startswith("exp.yaml: store: must not be empty")


@pytest.mark.parametrize(
    ("text", "where"),
    [
        (
            "name: exp\nks: [2]\ncombinations: 10\nstudents:\n  - name: s\n    model: m\n"
            "    model: other\ngrader: {model: j}\n",
            "7: duplicate key 'model' (first on line 6)",
        ),
        (
            "name: exp\nks: [2]\ncombinations: 10\nstudents: [{name: s, model: m}]\n"
            "grader: {model: j}\ncombinations: 20\n",
            "6: duplicate key 'combinations' (first on line 3)",
        ),
    ],
    ids=["nested", "top-level"],
)
def test_duplicate_yaml_keys_name_their_line(tmp_path: Path, text: str, where: str) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SkillmixError) as info:
        load_experiment(path)
    assert info.value.message == f"{path}:{where}"


def test_yaml_merge_keys_may_still_be_overridden(tmp_path: Path) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text(
        "name: exp\nks: [2]\nbase: &b {name: s, model: m, concurrency: 2}\n"
        "students:\n  - <<: *b\n    concurrency: 3\ngrader: {model: j}\n",
        encoding="utf-8",
    )
    with pytest.raises(SkillmixError, match="unknown key 'base'"):
        load_experiment(path)  # the anchor's key is unknown, but the merge itself is accepted
    path.write_text(
        "name: exp\nks: [2]\nstudents:\n  - &b {name: s, model: m, concurrency: 2}\n"
        "  - <<: *b\n    name: t\n    concurrency: 3\ngrader: {model: j}\n",
        encoding="utf-8",
    )
    exp = load_experiment(path)
    assert [(s.name, s.concurrency) for s in exp.students] == [("s", 2), ("t", 3)]


@pytest.mark.parametrize("text", ["temperature=0.5,temperature=0.9", "seed=1, seed =1"])
def test_repeated_sampling_param_is_an_error(text: str) -> None:
    with pytest.raises(SkillmixError) as info:
        apply_sampling_params({"name": "s", "model": "m"}, text)
    assert info.value.message.startswith("--sampling-params: key ")
    assert "given twice" in info.value.message


def test_repeated_backend_arg_is_an_error() -> None:
    with pytest.raises(SkillmixError, match=r"^--backend-args: key 'rpm' given twice"):
        apply_backend_args({"name": "s", "model": "m"}, "rpm=1,rpm=2")


@pytest.mark.parametrize("text", ["2,,3", "2,", ",2", "2,x", "2.5", ""])
def test_int_list_rejects_empty_and_non_integer_items(text: str) -> None:
    with pytest.raises(SkillmixError, match=r"^--k: expected comma-separated integers"):
        parse_int_list(text, "--k", example="2,3")


def test_int_list_reads_integers() -> None:
    assert parse_int_list(" 2, 3 ", "--k", example="2,3") == [2, 3]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--k", "2,,3"], "--k: expected comma-separated integers, got an empty item"),
        (["--k", "2", "--sampling-params", "seed=1,seed=2"], "--sampling-params: key 'seed'"),
        (["--k", "2", "--grader-args", "rpm=1,rpm=2"], "--grader-args: key 'rpm'"),
    ],
)
def test_quick_form_cli_rejects_ambiguous_flags(
    tmp_path: Path, args: list[str], needle: str
) -> None:
    result = run_cli(
        "evaluate", "--model", "m", "-n", "1", *args, "--store", str(tmp_path / "runs")
    )
    assert result.exit_code == 2, result.stderr
    assert result.stderr.startswith(f"error: {needle}")
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_quick_form_cli_rejects_empty_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the old code ran the evaluation into ./runs
    result = run_cli("evaluate", "--model", "m", "--k", "2", "-n", "1", "--store", "")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: --store: must not be empty")
    assert list(tmp_path.iterdir()) == []


def test_quick_form_still_reads_numbers_from_text(tmp_path: Path) -> None:
    from skillmix.cli.run import load_experiment_for

    kwargs: dict[str, Any] = dict(
        file=None, store=None, name=None, models=("m",), backend="mock", base_url=None,
        ks="3,2", grader=None, grader_backend=None, grader_base_url=None,
        backend_args="concurrency=4,quality=1", sampling_params="temperature=0.5,seed=3",
        grader_args="rpm=60", combinations=5, generation_rounds=1, grading_rounds=3, seed=10,
    )  # fmt: skip
    exp = load_experiment_for(kwargs)
    assert exp.ks == [2, 3] and exp.students[0].concurrency == 4
    assert exp.students[0].sampling.temperature == 0.5 and exp.grader.rpm == 60


# ---- prompt sizes: checked before anything is written --------------------------------------


def test_system_prompt_over_the_limit_is_an_error() -> None:
    from skillmix.config import MAX_PROMPT_CHARS

    big = "x" * (MAX_PROMPT_CHARS + 1)
    message = error_of(minimal(students=[{"name": "s", "model": "m", "system_prompt": big}]))
    assert message.startswith("exp.yaml: students.0.system_prompt: String should have at most")
    parse_experiment(minimal(grader={"model": "j", "system_prompt": "x" * MAX_PROMPT_CHARS}))


def test_rendered_prompt_over_the_limit_is_an_error(tmp_path: Path) -> None:
    from skillmix.config import MAX_PROMPT_CHARS
    from skillmix.pipeline.context import resolve_context
    from tests.helpers import skill_row, skills_csv

    skills = tmp_path / "skills.csv"
    rows = [skill_row(f"s{i}") for i in range(4)]
    rows.append(skill_row("huge", definition="d" * (MAX_PROMPT_CHARS // 2)))
    skills.write_text(skills_csv(rows), encoding="utf-8")
    system = "y" * (MAX_PROMPT_CHARS // 2)
    data = minimal(
        catalog={"skills": str(skills)},
        students=[{"name": "s", "model": "m", "system_prompt": system}],
    )
    with pytest.raises(SkillmixError) as info:
        resolve_context(parse_experiment(data))
    assert info.value.message.startswith("prompts.generation: a k=2 generation prompt can reach")
    assert f"over the limit of {MAX_PROMPT_CHARS}" in info.value.message
    # the same catalog with a short system prompt fits
    resolve_context(parse_experiment(minimal(catalog={"skills": str(skills)})))


def test_huge_system_prompt_writes_nothing(tmp_path: Path) -> None:
    big = "z" * 20_000_000
    store = tmp_path / "runs"
    result = run_cli(
        "evaluate", "--model", "m", "--k", "2", "-n", "1", "--store", str(store),
        "--backend-args", f"system_prompt={big}",
    )  # fmt: skip
    assert result.exit_code == 2
    assert "students.0.system_prompt: String should have at most" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and len(result.stderr) < 500
    assert not store.exists()


# ---- serving and Kubernetes settings -------------------------------------------------------


def vllm_student(**overrides: Any) -> dict[str, Any]:
    return {"name": "q", "backend": "vllm", "model": "q", **overrides}


def test_serving_defaults_to_per_unit_and_a_student_overrides_it() -> None:
    exp = parse_experiment(minimal(students=[{"name": "a", "model": "m"}, vllm_student()]))
    assert exp.serving == "per-unit" and exp.serving_of("q") == "per-unit"
    exp = parse_experiment(
        minimal(serving="per-model", students=[{"name": "a", "model": "m", "serving": "per-unit"}])
    )
    assert exp.serving_of("a") == "per-unit"
    # how a run is served changes neither its run id nor its run.json
    assert "serving" not in exp.model_dump() and "serving" not in exp.model_dump()["students"][0]
    assert run_hash(minimal(serving="per-model")) == run_hash(minimal())


@pytest.mark.parametrize(
    ("student", "needle"),
    [
        (
            vllm_student(vllm={"tensor_parallel_size": 2, "gpus": 1}),
            "students.0.vllm: gpus (1) must be at least tensor_parallel_size x "
            "pipeline_parallel_size (2 x 1 = 2)",
        ),
        (
            vllm_student(vllm={"gpus": 2, "args": ["--pipeline-parallel-size", "4"]}),
            "(1 x 4 = 4)",
        ),
        (vllm_student(vllm={"gpus": 3, "tensor_parallel_size": 2, "args": ["-pp=2"]}), "(2 x 2"),
        (vllm_student(vllm={"args": ["--pipeline-parallel-size", "two"]}), "positive integer"),
        (vllm_student(vllm={"args": ["-tp", "2"]}), "set tensor_parallel_size instead of -tp"),
        (vllm_student(vllm={"image_tag": "v1 latest"}), "students.0.vllm.image_tag"),
        (vllm_student(vllm={"env": {"HF_HUB_OFFLINE": "0"}}), "HF_HUB_OFFLINE is set by skillmix"),
        (vllm_student(vllm={"env": {"1X": "a"}}), "not an environment variable name"),
        (vllm_student(serving="per-shard"), "students.0.serving"),
        (vllm_student(kubernetes={"gpu_resource": "mig"}), "students.0.kubernetes.gpu_resource"),
        (vllm_student(kubernetes={"shm_size": "lots"}), "students.0.kubernetes.shm_size"),
        (
            vllm_student(kubernetes={"resources": {"requests": {"memory": "8 GB"}}}),
            "requests.memory: '8 GB' is not a Kubernetes quantity",
        ),
        (vllm_student(kubernetes={"resources": {"request": {}}}), "unknown key 'request'"),
        (vllm_student(kubernetes={"pod_labels": {"skillmix.io/run": "x"}}), "set by skillmix"),
        (vllm_student(kubernetes={"nodeSelector": {}}), "unknown key 'students.0.kubernetes"),
    ],
)
def test_serving_settings_rejected(student: dict[str, Any], needle: str) -> None:
    message = error_of(minimal(students=[student]))
    assert needle in message and "\n" not in message, message


def test_gpus_default_to_tensor_times_pipeline_parallel_size() -> None:
    exp = parse_experiment(
        minimal(
            students=[
                vllm_student(
                    vllm={"tensor_parallel_size": 2, "args": ["--pipeline-parallel-size", "2"]}
                )
            ]
        )
    )
    vllm = exp.students[0].vllm
    assert (vllm.pipeline_parallel_size, vllm.gpu_count) == (2, 4)
    assert parse_experiment(minimal(students=[vllm_student()])).students[0].vllm.gpu_count == 1


def test_vllm_server_args_match_what_the_chart_renders() -> None:

    exp = parse_experiment(
        minimal(
            students=[
                vllm_student(vllm={"model": "org/Q-7B", "tensor_parallel_size": 2, "args": ["-x"]})
            ]
        )
    )
    assert vllm_server_args(exp.students[0], host="127.0.0.1", port=9) == [
        *("--model", "org/Q-7B", "--served-model-name", "q", "--tensor-parallel-size", "2"),
        *("--host", "127.0.0.1", "--port", "9", "-x"),
    ]


def test_a_bad_gpu_count_is_exit_2_from_the_cli(tmp_path: Path) -> None:
    import yaml

    path = tmp_path / "exp.yaml"
    student = vllm_student(vllm={"tensor_parallel_size": 4, "gpus": 2})
    path.write_text(yaml.safe_dump(minimal(students=[student])), encoding="utf-8")
    result = run_cli("launch", "-f", str(path), "--dry-run")
    assert result.exit_code == 2
    [line] = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert "students.0.vllm: gpus (2) must be at least" in line
