from __future__ import annotations

import json

import pytest

from skillmix.catalog import Skill, builtin_catalog
from skillmix.errors import SkillmixError
from skillmix.method.prompts import (
    infer_grading_style,
    make_template,
    number_words,
    render_generation_prompts,
    render_grading_prompt,
    rubric_items,
)
from skillmix.promptset import builtin_prompts_dir, list_prompt_versions, load_prompt_version
from tests.helpers import run_cli

A = Skill("alpha (a kind)", "Def A.", "Ex A.")
B = Skill("Beta", "Def B.", "Ex B.")
C = Skill("gamma", "Def C.", "Ex C.")

ALL = (
    "{skills_str}|{skills_defs_and_examples}|{skills_defs_and_examples_simple}|{skills_defs}|"
    "{num_skills}|{num_skills_str}|{topic}|{num_sentences}|{num_sentences_str}"
)


def test_every_generation_placeholder_has_its_exact_format() -> None:
    template = make_template("t", "generation", [ALL])
    (out,) = render_generation_prompts(template, [A, B, C], "Sewing")
    assert out.split("|") == [
        "alpha (a kind), Beta, gamma",
        "Skill: alpha (a kind)\nDefinition: Def A.\nExample: Ex A.\nSkill: Beta\nDefinition: Def B.\nExample: Ex B.\nSkill: gamma\nDefinition: Def C.\nExample: Ex C.",
        "**alpha (a kind)**: Def A. For example, Ex A.\n**Beta**: Def B. For example, Ex B.\n**gamma**: Def C. For example, Ex C.",
        "**alpha (a kind)**: Def A.\n**Beta**: Def B.\n**gamma**: Def C.",
        "3",
        "three",
        "Sewing",
        "2",
        "two sentences",
    ]


@pytest.mark.parametrize(
    ("skills", "expected"),
    [([A], "one sentence"), ([A, B], "one sentence"), ([A, B, C], "two sentences")],
)
def test_sentence_limit_words(skills, expected) -> None:
    template = make_template("t", "generation", ["{num_sentences_str}"])
    assert render_generation_prompts(template, skills, "x") == [expected]


def test_number_word_table_matches_inflect() -> None:
    import inflect

    from skillmix.method.prompts import _SMALL_NUMBER_WORDS

    engine = inflect.engine()
    assert [
        # inflect annotates numbers.Number, which mypy does not match to int
        engine.number_to_words(n)  # type: ignore[arg-type]
        for n in range(len(_SMALL_NUMBER_WORDS))
    ] == _SMALL_NUMBER_WORDS


def test_number_words_use_inflect_spelling() -> None:
    assert [number_words(n) for n in (1, 7, 21, 100)] == [
        "one",
        "seven",
        "twenty-one",
        "one hundred",
    ]


def test_rubric_items_per_style() -> None:
    assert rubric_items(["Red Herring ", "metaphor"], "Knots", "table") == [
        "Correctly illustrates red herring",
        "Correctly illustrates metaphor",
        "Pertains to Knots",
        "Text makes sense",
        "At most one sentence",
    ]
    assert rubric_items(["a", "b", "c"], "T", "points")[0] == "Contains a"
    assert rubric_items(["a", "b", "c"], "T", "points")[-1] == "At most two sentences"


def test_grading_prompt_fills_answer_and_rubric() -> None:
    template = make_template("g", "grading", ["[{student_answer}] {rubric_items} / {skills_str}"])
    out = render_grading_prompt(template, [A, B], "Knots", "My text.")
    assert out == (
        "[My text.] Correctly illustrates alpha (a kind), Correctly illustrates beta, "
        "Pertains to Knots, Text makes sense, At most one sentence / alpha (a kind), Beta"
    )
    points = render_grading_prompt(template, [A, B], "Knots", "x", style="points")
    assert "Contains alpha (a kind), Contains beta" in points


@pytest.mark.parametrize(
    ("turns", "message"),
    [
        (["Hello {unknown}"], "unknown placeholder {unknown}"),
        (["Hello {topic"], "stray brace"),
        (["Hello topic}"], "stray brace"),
        (["{topic.upper}"], "unknown placeholder"),
        ([], "non-empty JSON array of strings"),
        (["ok", 3], "non-empty JSON array of strings"),
        ("just a string", "non-empty JSON array of strings"),
    ],
)
def test_bad_templates_are_clear_errors(turns, message) -> None:
    with pytest.raises(SkillmixError) as info:
        make_template("bad", "generation", turns, "dir/bad.json")
    assert message in info.value.message
    assert info.value.message.startswith("dir/bad.json")


def test_generation_placeholders_only_in_generation_prompts() -> None:
    with pytest.raises(SkillmixError, match="unknown placeholder {student_answer}"):
        make_template("g", "generation", ["{student_answer}"])
    with pytest.raises(SkillmixError, match="exactly one user turn"):
        make_template("g", "grading", ["a", "b"])
    make_template("g", "generation", ["literal {{braces}} are fine"])


def test_builtin_prompt_versions_load_and_render_with_builtin_catalog() -> None:
    assert set(list_prompt_versions("generation")) >= {"two-turn-v1"}
    assert set(list_prompt_versions("grading")) >= {"table-v1", "points-v1"}
    cat = builtin_catalog()
    skills = [cat.skills[0], cat.skills[40], cat.skills[80]]
    gen = load_prompt_version("generation", "two-turn-v1")
    turns = render_generation_prompts(gen, skills, cat.topics[0])
    assert len(turns) == 2
    assert all(s.name in turns[0] for s in skills) and cat.topics[0] in turns[0]
    assert "two sentences" in turns[1]
    table = load_prompt_version("grading", "table-v1")
    points = load_prompt_version("grading", "points-v1")
    assert infer_grading_style(table) == "table"
    assert infer_grading_style(points) == "points"
    assert "Correctly illustrates" in render_grading_prompt(table, skills, "T", "ans")
    assert "Contains" in render_grading_prompt(points, skills, "T", "ans")


def test_prompt_dirs_accept_grade_folder_and_report_missing_versions(tmp_path) -> None:
    (tmp_path / "grade").mkdir()
    (tmp_path / "grade" / "mine.json").write_text(json.dumps(["{rubric_items}"]), encoding="utf-8")
    template = load_prompt_version("grading", "mine", tmp_path)
    assert template.turns == ("{rubric_items}",)
    with pytest.raises(SkillmixError, match="no grading prompt version 'other'.*available: mine"):
        load_prompt_version("grading", "other", tmp_path)
    (tmp_path / "grade" / "broken.json").write_text('["a",', encoding="utf-8")
    with pytest.raises(SkillmixError, match="broken.json:1: invalid JSON"):
        load_prompt_version("grading", "broken", tmp_path)


def test_builtin_prompts_dir_exists() -> None:
    assert (builtin_prompts_dir() / "generation" / "two-turn-v1.json").is_file()


def test_cli_render_json_and_text() -> None:
    args = [
        "prompts",
        "render",
        "--kind",
        "generation",
        "--version",
        "two-turn-v1",
        "--topic",
        "Knots",
    ]
    cat = builtin_catalog()
    args += ["--skill", cat.skills[0].name, "--skill", cat.skills[1].name]
    result = run_cli(*args, "--format", "json")
    assert result.exit_code == 0, result.stderr
    turns = json.loads(result.stdout)
    assert len(turns) == 2 and "Knots" in turns[0]
    text = run_cli(*args)
    assert "--- turn 2 ---" in text.stdout


def test_cli_render_errors_are_one_line_exit_2(tmp_path) -> None:
    bad = tmp_path / "generation"
    bad.mkdir()
    (bad / "v.json").write_text(json.dumps(["{nope}"]), encoding="utf-8")
    result = run_cli(
        "prompts",
        "render",
        "--kind",
        "generation",
        "--prompts-dir",
        str(tmp_path),
        "--version",
        "v",
        "--topic",
        "T",
        "--skill",
        builtin_catalog().skills[0].name,
    )
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "unknown placeholder {nope}" in result.stderr
    missing = run_cli(
        "prompts",
        "render",
        "--kind",
        "grading",
        "--version",
        "table-v1",
        "--topic",
        "T",
        "--skill",
        "no such skill",
        "--answer",
        "a",
    )
    assert missing.exit_code == 2 and "unknown skill 'no such skill'" in missing.stderr
    no_answer = run_cli(
        "prompts",
        "render",
        "--kind",
        "grading",
        "--version",
        "table-v1",
        "--topic",
        "T",
        "--skill",
        builtin_catalog().skills[0].name,
    )
    assert no_answer.exit_code == 2 and "--answer is required" in no_answer.stderr
