"""Progress of a local run on stderr: rich bars on a terminal, a plain line every few seconds
elsewhere (CI, a log file). Its own module so that the executor only counts and this only
shows."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from skillmix.backends.client import ChatClient


class RichProgress:
    """Per-phase bars on stderr: done/total, rate, ETA, tokens, retries. When stderr is not a
    terminal (CI, a log file, a pod), a bar cannot redraw: a plain line every
    ``PLAIN_EVERY`` seconds says the same, from the start."""

    PLAIN_EVERY = 10.0

    def __init__(self, clients: dict[str, ChatClient], *, enabled: bool = True) -> None:
        self.clients = clients
        self.console = Console(stderr=True)
        self.plain = enabled and not self.console.is_terminal
        self.done: dict[str, int] = {"generate": 0, "grade": 0}
        self.totals: dict[str, int] = {"generate": 0, "grade": 0}
        self.started = time.monotonic()
        self.last_line = 0.0
        self.progress = Progress(
            TextColumn("[bold]{task.description:<9}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[stats]}"),
            console=self.console,
            disable=not enabled or self.plain,
            transient=False,
            refresh_per_second=4,
        )
        self.tasks = {
            phase: self.progress.add_task(phase, total=0, rate="", stats="")
            for phase in ("generate", "grade")
        }
        self.roles: dict[str, list[str]] = {"generate": [], "grade": []}

    def add_total(self, phase: str, n: int) -> None:
        task = self.progress.tasks[self.tasks[phase]]
        self.progress.update(self.tasks[phase], total=(task.total or 0) + n)
        self.totals[phase] += n
        self._plain_line()

    def advance(self, phase: str, n: int = 1) -> None:
        self.progress.advance(self.tasks[phase], n)
        self.done[phase] += n
        self._plain_line()

    def _plain_line(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not self.plain or (not force and now - self.last_line < self.PLAIN_EVERY):
            return
        self.last_line = now
        counts = ", ".join(
            f"{phase} {self.done[phase]}/{self.totals[phase]}"
            for phase in ("generate", "grade")
            if self.totals[phase]
        )
        self.console.print(f"progress: {counts or 'starting'} ({now - self.started:.0f}s)")

    def refresh_stats(self) -> None:
        for phase, names in self.roles.items():
            stats = [self.clients[n].stats for n in names if n in self.clients]
            tokens = sum(s.prompt_tokens + s.completion_tokens for s in stats)
            retries = sum(s.retries for s in stats)
            limited = sum(s.rate_limited for s in stats)
            cached = sum(s.cached for s in stats)
            task = self.progress.tasks[self.tasks[phase]]
            speed = task.speed or 0.0
            self.progress.update(
                self.tasks[phase],
                rate=f"{speed:5.1f}/s",
                stats=f"tok {tokens:,} retries {retries} 429s {limited} cached {cached}",
            )

    @contextlib.contextmanager
    def running(self) -> Iterator[RichProgress]:
        with self.progress:
            self._plain_line(force=True)
            yield self
            self.refresh_stats()
            self._plain_line(force=True)
