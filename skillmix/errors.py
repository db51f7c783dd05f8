"""The two error types the CLI turns into exit codes.

Every layer raises these (never ``SystemExit``); the CLI boundary prints the one-line message
and exits with :attr:`exit_code`. Kubernetes Job failure policies rely on those codes:
2 means the input is wrong and retrying cannot help.
"""

from __future__ import annotations


class SkillmixError(Exception):
    """Bad input: a config, catalog, prompt file or flag the user must fix (exit code 2)."""

    exit_code = 2

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.one_line()

    def one_line(self) -> str:
        text = self.message if not self.hint else f"{self.message}; {self.hint}"
        return " ".join(text.split())


class RunFailedError(SkillmixError):
    """The input was fine but the run could not finish (exit code 1); a retry may succeed."""

    exit_code = 1
