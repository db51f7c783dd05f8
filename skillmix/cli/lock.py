"""``skillmix unlock RUN``: break a run's lock when its holder is known to be gone."""

from __future__ import annotations

import sys
import time

import click

from skillmix.cli._output import info
from skillmix.errors import SkillmixError
from skillmix.store.base import KeyExists
from skillmix.store.lock import RunLock
from skillmix.store.runs import RunStore
from skillmix.store.uri import open_store


@click.command("unlock")
@click.argument("run_uri")
@click.option("--yes", "-y", is_flag=True, help="Break the lock without asking.")
def unlock_cmd(run_uri: str, yes: bool) -> None:
    """Break the lock of RUN: show who holds it (host, pid, since when) and, once confirmed,
    free the run. A holder that still runs stops at its next lease renewal (its work is kept)."""

    run = RunStore(open_store(run_uri))
    if run.read_run() is None:
        raise SkillmixError(f"{run_uri}: no run.json here", hint="pass a run folder")
    lock = RunLock(run.store, run_name=run_uri)
    holder = lock.current()
    now = time.time()
    if holder is None or not holder.live(now):
        info(f"run {run_uri} is not locked")
        return
    info(f"run {run_uri} is held by {holder.describe(now)}")
    if not yes:
        if not sys.stdin.isatty():
            raise SkillmixError(
                "unlock: not asking without a terminal", hint="pass --yes to break the lock"
            )
        click.confirm(
            f"Break the lock of host {holder.host}, pid {holder.pid}? Only do so when that "
            "process is gone",
            abort=True,
            err=True,
        )
    try:
        lock.break_lease(holder)
    except KeyExists:
        raise SkillmixError(
            f"run {run_uri}: the lock changed while you decided; nothing was broken",
            hint="run `skillmix unlock` again to see the new holder",
        ) from None
    info(f"run {run_uri} is unlocked (lease {holder.epoch} of host {holder.host} broken)")
