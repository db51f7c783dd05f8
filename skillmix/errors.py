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


class ModelServerUnhealthy(RunFailedError):
    """The pod's model server (vLLM or mock sidecar) never answered ``/health`` within the
    model-load budget (exit code 3): a bad model id, a gated model without a token, OOM at load,
    tensor parallel larger than the node, a load slower than the budget. A Job's
    ``podFailurePolicy`` fails the Job at once on it, so the GPU is not held until the deadline."""

    exit_code = 3


class TimeLimitReached(RunFailedError):
    """A task ran out of its own time limit (exit code 4): the bound a generation pod keeps
    itself to instead of the Job's ``activeDeadlineSeconds``, which would also count the time
    the pod waited for a GPU. The parts written so far are kept; a relaunch resumes them."""

    exit_code = 4
