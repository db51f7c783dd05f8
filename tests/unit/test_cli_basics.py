from __future__ import annotations

import json

from skillmix.errors import RunFailedError, SkillmixError
from tests.helpers import run_cli


def test_help_lists_commands_and_exit_codes() -> None:
    result = run_cli("--help")
    assert result.exit_code == 0
    for command in ("aggregate", "catalog", "import-reference", "prompts", "sample"):
        assert command in result.stdout
    assert "Exit codes: 0 ok, 1 run failed, 2 bad input" in result.stdout


def test_every_command_has_help_and_its_listed_summary_starts_it() -> None:
    """`skillmix --help` lists summaries from COMMANDS (importing no command module): each
    must stay the start of what its command's own help says."""
    import click

    from skillmix.cli import COMMANDS, cli

    for name, (_target, summary) in COMMANDS.items():
        result = run_cli(name, "--help")
        assert result.exit_code == 0, (name, result.stderr)
        assert "Usage:" in result.stdout
        command = cli.get_command(click.Context(cli), name)
        assert command is not None
        assert " ".join((command.help or "").split()).startswith(summary), name


def test_unknown_command_and_bad_option_are_one_line_exit_2() -> None:
    for args in (
        ("frobnicate",),
        ("sample", "--k"),
        ("aggregate",),
        ("sample", "--k", "2", "--n", "2", "--mode", "weird"),
    ):
        result = run_cli(*args)
        assert result.exit_code == 2, args
        assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
        assert result.stdout == ""


def test_aggregate_on_a_folder_without_a_run(tmp_path) -> None:
    result = run_cli("aggregate", str(tmp_path / "nothing"))
    assert result.exit_code == 2 and "no run found here" in result.stderr
    assert not (tmp_path / "nothing").exists()


def test_aggregate_unknown_store_scheme() -> None:
    result = run_cli("aggregate", "gs://bucket/run")
    assert result.exit_code == 2 and "unsupported store URI scheme 'gs'" in result.stderr


def test_error_types_and_messages() -> None:
    err = SkillmixError("bad thing\nwith newline", hint="fix it")
    assert str(err) == "bad thing with newline; fix it" and err.exit_code == 2
    assert RunFailedError("x").exit_code == 1


def test_version() -> None:
    from skillmix import __version__

    result = run_cli("--version")
    assert result.exit_code == 0 and __version__ in result.stdout


def test_json_output_is_one_document() -> None:
    result = run_cli("prompts", "list", "--format", "json")
    assert json.loads(result.stdout)["grading"] == ["points-v1", "table-v1"]
