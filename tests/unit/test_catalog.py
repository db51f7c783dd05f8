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


def _unclosed_quote_csv() -> str:
    """Row "b" opens a quote in its definition and never closes it; rows c and d follow."""
    lines = skills_csv([skill_row("a")]).splitlines()
    lines.append('literary,b,"Definition of b.,Example of b.,,,')
    lines.append("literary,c,Definition of c.,Example of c.,,,")
    lines.append('literary,d,"Definition, of d.",Example of d.,,,')
    return "\n".join(lines) + "\n"


def test_unclosed_quote_names_the_row_that_opens_it() -> None:
    with pytest.raises(SkillmixError) as info:
        parse_skills_csv(_unclosed_quote_csv(), "s.csv")
    assert info.value.message.startswith("s.csv:3: a quoted cell of this row is not closed")
    assert "close the quote" in (info.value.hint or "")


def test_unclosed_quote_at_end_of_file_is_an_error() -> None:
    text = skills_csv([skill_row("a")]) + 'literary,b,"Definition of b.,x,,,\nliterary,c,d,e,,,\n'
    with pytest.raises(SkillmixError, match=r"^s\.csv:3: a quoted cell"):
        parse_skills_csv(text, "s.csv")


def test_a_whole_row_inside_a_multiline_cell_is_an_error() -> None:
    # the quote closes further down, so the CSV is well-formed, but a row vanished into a cell
    swallowed = "literary,c,Definition of c.,Example of c.,,keep,me"
    text = skills_csv([skill_row("a"), skill_row("b", definition=f"Def b.\n{swallowed}")])
    with pytest.raises(SkillmixError) as info:
        parse_skills_csv(text, "s.csv")
    assert info.value.message.startswith("s.csv:3: the 'definition' cell opens a quote")
    assert "line 4 became part of it" in info.value.message


def test_multiline_cell_with_commas_is_still_fine() -> None:
    text = skills_csv([skill_row("a", definition="one, two\nthree, four, five")])
    assert parse_skills_csv(text, "s.csv")[0].definition == "one, two\nthree, four, five"


@pytest.mark.parametrize("name", [" lead", "trail ", " both ", "tab\t"])
def test_skill_names_with_outer_spaces_are_errors(name: str) -> None:
    with pytest.raises(SkillmixError) as info:
        parse_skills_csv(skills_csv([skill_row("a"), skill_row(name)]), "s.csv")
    assert info.value.message == f"s.csv:3: skill name {name!r} has leading or trailing spaces"


@pytest.mark.parametrize("status", ["kep", "removed", "active", "yes"])
def test_unknown_status_is_an_error(status: str) -> None:
    with pytest.raises(SkillmixError) as info:
        parse_skills_csv(skills_csv([skill_row("a"), skill_row("b", status=status)]), "s.csv")
    assert info.value.message == f"s.csv:3: unknown status {status!r}"
    assert "remove, in review, maybe" in (info.value.hint or "")


@pytest.mark.parametrize("status", ["", "keep", "KEEP", " Keep ", "Remove", "in review", "maybe"])
def test_known_statuses_are_accepted(status: str) -> None:
    parse_skills_csv(skills_csv([skill_row("a"), skill_row("b", status=status)]), "s.csv")


def test_duplicate_topics_are_errors() -> None:
    with pytest.raises(SkillmixError) as info:
        parse_topics("Sewing\n\nDueling\nSewing\n", "t.txt")
    assert info.value.message == "t.txt:4: duplicate topic 'Sewing' (first on line 1)"


def test_cli_validate_unclosed_quote_fails_with_one_line(tmp_path) -> None:
    path = tmp_path / "skills.csv"
    path.write_text(_unclosed_quote_csv(), encoding="utf-8")
    result = run_cli("catalog", "validate", str(path))
    assert result.exit_code == 2, result.stdout
    assert result.stderr.startswith(f"error: {path}:3: a quoted cell")
    assert len(result.stderr.strip().splitlines()) == 1
    assert "ok" not in result.stdout
