"""The ``skillmix`` command line. Commands live in one module per group and load lazily,
so ``skillmix --help`` does not import the heavy layers.

Exit codes: 0 ok, 1 run failed, 2 bad input or usage, 130 interrupted (Ctrl-C), 143
(SIGTERM), 129 (SIGHUP); the README has the table.
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import sys
import threading
import traceback

import click

from skillmix import __version__, settings
from skillmix.errors import SkillmixError
from skillmix.urls import redact_text

# command name -> ("module:attribute" under skillmix.cli, the summary `--help` lists). The
# summaries live here so that `skillmix --help` imports no command module (each imports its
# layers at the top); a test checks that each is the start of its command's help.
COMMANDS: dict[str, tuple[str, str]] = {
    "catalog": ("catalog:catalog", "Inspect and check skill/topic catalogs."),
    "sample": ("catalog:sample", "Draw (topic, skills) combinations exactly as a run would."),
    "prompts": ("prompts:prompts", "List and render prompt versions."),
    "aggregate": ("results:aggregate_cmd", "Compute Full Marks / All Skills / Skill Fraction"),
    "import-reference": ("results:import_reference_cmd", "Import a reference-format result tree"),
    "evaluate": (
        "run:evaluate_cmd",
        "Run an evaluation locally: generate, grade, aggregate, report",
    ),
    "generate": ("run:generate_cmd", "Only the generation phase"),
    "score": ("run:score_cmd", "Grade and aggregate the saved generations of a run"),
    "report": ("run:report_cmd", "(Re)build a run's report"),
    "unlock": ("lock:unlock_cmd", "Break the lock of RUN"),
    "compare": ("compare:compare_cmd", "Rank the models of several runs in one leaderboard."),
    "schema": ("run:schema_cmd", "Print the JSON schema of experiment files."),
    "tasks": ("reasoning:tasks_cmd", "List the reasoning tasks"),
    "leaderboard": ("reasoning:leaderboard_cmd", "Reasoning tasks side by side"),
    "task": ("task:task", "Run one unit of a run (container entrypoints)."),
    "mock-server": ("mock:mock_server", "Serve a deterministic mock of the vLLM/OpenAI API"),
    "clusters": ("cluster:clusters_cmd", "List the cluster profiles"),
    "render": ("cluster:render_cmd", "Render the run's Kubernetes objects with helm template"),
    "launch": ("cluster:launch_cmd", "Launch (or resume) a run on Kubernetes"),
    "status": ("cluster:status_cmd", "A run's Jobs counted per phase and state"),
    "logs": ("cluster:logs_cmd", "Logs of a run's pods, prefixed with pod/container"),
    "cancel": ("cluster:cancel_cmd", "Delete a run's Jobs and pods (by label)"),
    "cache": ("cache:cache", "The model cache of vLLM pods on Kubernetes"),
    "version": ("version:version_cmd", "Print skillmix's version, the image's git revision"),
}

EPILOG = "Exit codes: 0 ok, 1 run failed, 2 bad input or usage, 130 interrupted (143 SIGTERM, 129 SIGHUP)."


class LazyGroup(click.Group):
    """A group whose subcommands are imported only when used; listing them (``--help``)
    reads the summaries in COMMANDS."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][1]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            if _received:  # SIGTERM/SIGHUP: past click, which prints a blank line for Ctrl-C
                raise _Signalled(_received[0]) from None
            raise

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module_name, attr = COMMANDS[cmd_name][0].split(":")
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


class _Signalled(Exception):
    """SIGTERM or SIGHUP on its way out of click (not a KeyboardInterrupt, so that click does
    not print the blank line that closes a terminal's ``^C``)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGHUP, turned into an exception so that cleanup runs as for Ctrl-C."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


_received: list[int] = []  # the signal that interrupted the command (asyncio may re-raise
# a plain KeyboardInterrupt in place of ours)


def _raise_interrupted(signum: int, frame: object) -> None:
    _received.append(signum)
    raise Interrupted(signum)


class _QuietAfterSignal(logging.Filter):
    """Once a signal ends the command, asyncio's reports of the tasks it cancels on the way
    out ("unhandled exception during asyncio.run() shutdown", "Task was destroyed but it is
    pending!", each with a task's repr) are dropped: the exit is one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not _received


def _install_signal_handlers(debug: bool = False) -> None:
    """SIGTERM and SIGHUP end the command like Ctrl-C: one line, exit 128 + the signal.
    Handlers someone else set (a test harness, a parent) are left alone."""

    if threading.current_thread() is not threading.main_thread():
        return
    if not debug:
        logging.getLogger("asyncio").addFilter(_QuietAfterSignal())
    for name in ("SIGTERM", "SIGHUP"):
        signum = getattr(signal, name, None)
        if signum is not None and signal.getsignal(signum) == signal.SIG_DFL:
            signal.signal(signum, _raise_interrupted)


def _quiet_stdout() -> None:
    """After a broken pipe, point stdout at /dev/null so the interpreter's final flush
    cannot fail again (which would print a warning and exit 120)."""

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def _exit_code(argv: list[str]) -> int:
    """Run the CLI; return its exit code. Every error becomes one line on stderr (with
    --debug, the traceback before it); the code does not depend on --debug."""

    debug = _debug_requested(argv)

    def fail(message: str, code: int) -> int:
        if debug:
            traceback.print_exc()
        click.echo(redact_text(message), err=True)  # a URL's credentials never reach a log
        return code

    try:
        cli.main(args=argv, prog_name="skillmix", standalone_mode=False)
    except SkillmixError as exc:
        return fail(f"error: {exc.one_line()}", exc.exit_code)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.exceptions.NoArgsIsHelpError as exc:
        # bare `skillmix`, `skillmix catalog`: the help, as click prints it
        if exc.ctx is not None:
            click.echo(exc.ctx.get_help())
        return 0
    except click.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx else "skillmix"
        message = " ".join(exc.format_message().split()).rstrip(".")
        return fail(f"error: {message}; see '{where} --help'", 2)
    except click.ClickException as exc:
        return fail(f"error: {' '.join(exc.format_message().split())}", exc.exit_code)
    except _Signalled as exc:
        return fail("interrupted", 128 + exc.signum)
    except (click.Abort, KeyboardInterrupt) as exc:
        signum = exc.signum if isinstance(exc, Interrupted) else (_received or [0])[0]
        return fail("interrupted", 128 + signum if signum else 130)
    except BrokenPipeError:
        _quiet_stdout()
        return 0
    except SystemExit:
        # click met a closed pipe (EPIPE): it wrapped stdout in PacifyFlushWrapper and exits 1
        if type(sys.stdout).__name__.endswith("PacifyFlushWrapper"):
            _quiet_stdout()
            return 0
        raise
    return 0


def main(argv: list[str] | None = None) -> None:
    """Console entry point: runs the CLI and turns errors into one line and an exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    _install_signal_handlers(_debug_requested(args))
    code = _exit_code(args)
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _quiet_stdout()
    except (OSError, ValueError):
        pass
    sys.exit(code)
