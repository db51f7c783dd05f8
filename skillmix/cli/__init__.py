"""The ``skillmix`` command line. Commands live in one module per group and load lazily,
so ``skillmix --help`` does not import the heavy layers.

Exit codes: 0 ok, 1 run failed, 2 bad input or usage, 130 interrupted.
"""

from __future__ import annotations

import importlib
import sys

import click

from skillmix import __version__, settings

# command name -> "module:attribute" (modules under skillmix.cli)
COMMANDS: dict[str, str] = {
    "catalog": "catalog:catalog",
    "sample": "catalog:sample",
    "prompts": "prompts:prompts",
    "aggregate": "results:aggregate_cmd",
    "import-reference": "results:import_reference_cmd",
    "evaluate": "run:evaluate_cmd",
    "generate": "run:generate_cmd",
    "score": "run:score_cmd",
    "report": "run:report_cmd",
    "compare": "compare:compare_cmd",
    "schema": "run:schema_cmd",
    "task": "task:task",
    "mock-server": "mock:mock_server",
    "clusters": "cluster:clusters_cmd",
    "render": "cluster:render_cmd",
    "launch": "cluster:launch_cmd",
    "status": "cluster:status_cmd",
    "logs": "cluster:logs_cmd",
    "cancel": "cluster:cancel_cmd",
}

EPILOG = "Exit codes: 0 ok, 1 run failed, 2 bad input or usage, 130 interrupted."


class LazyGroup(click.Group):
    """A group whose subcommands are imported only when used (or listed)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        module = importlib.import_module(f"skillmix.cli.{module_name}")
        command: click.Command = getattr(module, attr)
        return command


@click.group(cls=LazyGroup, epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="skillmix")
@click.option(
    "--debug", is_flag=True, envvar=settings.DEBUG.name, help="Show tracebacks on errors."
)
def cli(debug: bool) -> None:
    """Run the SKILL-MIX evaluation of language models, locally or on Kubernetes."""
    # --debug is read from argv by main() before click runs (tracebacks on errors)


def _debug_requested(argv: list[str]) -> bool:
    return "--debug" in argv or settings.debug()


def main(argv: list[str] | None = None) -> None:
    """Console entry point: runs the CLI and turns errors into one line and an exit code."""
    from skillmix.errors import SkillmixError

    args = list(sys.argv[1:] if argv is None else argv)
    try:
        cli.main(args=args, prog_name="skillmix", standalone_mode=False)
    except SkillmixError as exc:
        if _debug_requested(args):
            raise
        click.echo(f"error: {exc.one_line()}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx else "skillmix"
        message = " ".join(exc.format_message().split()).rstrip(".")
        click.echo(f"error: {message}; see '{where} --help'", err=True)
        sys.exit(2)
    except click.ClickException as exc:
        click.echo(f"error: {' '.join(exc.format_message().split())}", err=True)
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(0)
    sys.exit(0)
