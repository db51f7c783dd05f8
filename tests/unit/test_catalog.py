from __future__ import annotations

import json

import pytest

from skillmix.catalog import builtin_catalog, load_catalog, parse_skills_csv, parse_topics
from skillmix.errors import SkillmixError
from tests.helpers import run_cli, skill_row, skills_csv


def test_status_filtering_keeps_order_and_verbatim_names() -> None:
    text = skills_csv(
        [
            skill_row("b skill"),
            skill_row("removed", status="remove"),
            skill_row("complex question (loaded question with implicit assumption )"),
            skill_row("reviewing", status="in review"),
            skill_row("maybe one", status="maybe"),
            skill_row("kept", status="keep"),
            skill_row("A first"),
        ]
    )
    skills = parse_skills_csv(text, "s.csv")
    assert [s.name for s in skills] == [
        "b skill",
        "complex question (loaded question with implicit assumption )",
        "kept",
        "A first",
    ]


def test_multiline_cells_and_fields_are_read() -> None:
    text = skills_csv([skill_row("x", definition="line one\nline two", example='He said "hi".')])
    (skill,) = parse_skills_csv(text, "s.csv")
    assert skill.definition == "line one\nline two"
    assert skill.example == 'He said "hi".'
    assert skill.category == "literary"


@pytest.mark.parametrize("column", ["skill", "definition", "example"])
def test_missing_column_names_file_line_and_column(column: str) -> None:
    header = [h for h in ["category", "skill", "definition", "example", "status"] if h != column]
    with pytest.raises(SkillmixError) as info:
        parse_skills_csv(skills_csv([skill_row("x")], header=header), "cat/skills.csv")
    assert info.value.message.startswith("cat/skills.csv:1: missing column")
    assert repr(column) in info.value.message


def test_duplicate_name_reports_both_lines_even_after_multiline_cells() -> None:
    rows = [skill_row("a", definition="two\nlines"), skill_row("b"), skill_row("a")]
    with pytest.raises(SkillmixError) as info:
        parse_skills_csv(skills_csv(rows), "s.csv")
    # header is line 1, row "a" spans lines 2-3, "b" is line 4, the duplicate is line 5
    assert info.value.message == "s.csv:5: duplicate skill name 'a' (first on line 2)"


def test_duplicate_among_removed_rows_is_allowed() -> None:
    rows = [skill_row("a", status="remove"), skill_row("a")]
    assert [s.name for s in parse_skills_csv(skills_csv(rows), "s.csv")] == ["a"]


def test_empty_catalogs_are_errors() -> None:
    with pytest.raises(SkillmixError, match="no active skills"):
        parse_skills_csv(skills_csv([skill_row("a", status="remove")]), "s.csv")
    with pytest.raises(SkillmixError, match="empty skills file"):
        parse_skills_csv("", "s.csv")
    with pytest.raises(SkillmixError, match="no topics"):
        parse_topics("\n\n  \n", "t.txt")


def test_topics_skip_empty_lines_and_keep_order() -> None:
    assert parse_topics("Sewing\n\nDueling\r\nThe Ottoman Empire", "t") == [
        "Sewing",
        "Dueling",
        "The Ottoman Empire",
    ]


def test_builtin_catalog_is_large_and_complete() -> None:
    cat = builtin_catalog()
    assert len(cat.skills) >= 100
    assert len(cat.topics) >= 100
    families = {s.category for s in cat.skills}
    assert families == {"rhetorical", "literary", "logical", "theory of mind", "physical knowledge"}
    for skill in cat.skills:
        assert skill.definition.strip() and skill.example.strip(), skill.name
        assert "," not in skill.name  # the reference grader splits skill lists on commas
    assert len(set(cat.topics)) == len(cat.topics)


def test_load_catalog_mixes_files_with_builtin(tmp_path) -> None:
    skills = tmp_path / "skills.csv"
    skills.write_text(skills_csv([skill_row("only one")]), encoding="utf-8")
    cat = load_catalog(skills=skills)
    assert cat.skill_names == ["only one"]
    assert cat.topics == builtin_catalog().topics
    assert cat.content_hash() != builtin_catalog().content_hash()


def test_unknown_skill_lookup_is_a_clear_error() -> None:
    with pytest.raises(SkillmixError, match="unknown skill 'nope'"):
        builtin_catalog().skill("nope")


def test_bad_encoding_is_reported(tmp_path) -> None:
    path = tmp_path / "skills.csv"
    path.write_bytes(b"category,skill,definition,example\nx,caf\xe9,d,e\n")
    with pytest.raises(SkillmixError, match="not valid UTF-8"):
        load_catalog(skills=path)


def test_cli_catalog_list_json_shape() -> None:
    result = run_cli("catalog", "list", "--format", "json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert set(data) == {"skills", "topics"}
    assert set(data["skills"][0]) == {"name", "category", "definition", "example"}
    assert len(data["skills"]) == len(builtin_catalog().skills)


def test_cli_catalog_list_table_mentions_counts() -> None:
    result = run_cli("catalog", "list")
    assert result.exit_code == 0
    assert f"{len(builtin_catalog().skills)} skills" in result.stdout


def test_cli_validate_good_and_bad(tmp_path) -> None:
    good = tmp_path / "good"
    good.mkdir()
    (good / "skills.csv").write_text(skills_csv([skill_row("a"), skill_row("b")]), encoding="utf-8")
    (good / "topics.txt").write_text("One\nTwo\n", encoding="utf-8")
    result = run_cli("catalog", "validate", str(good))
    assert result.exit_code == 0, result.stderr
    assert "2 active skills" in result.stdout and "2 topics" in result.stdout

    bad = tmp_path / "bad.csv"
    bad.write_text("category,skill,definition\nx,y,z\n", encoding="utf-8")
    result = run_cli("catalog", "validate", str(good / "skills.csv"), str(bad))
    assert result.exit_code == 2
    assert (
        result.stderr.strip()
        == f"error: {bad}:1: missing column 'example'; the header must include category,skill,definition,example,comments,status,added by"
    )


def test_cli_validate_builtin_data_files() -> None:
    from importlib import resources

    data = resources.files("skillmix.catalog") / "data"
    result = run_cli("catalog", "validate", str(data / "skills.csv"), str(data / "topics.txt"))
    assert result.exit_code == 0, result.stderr
