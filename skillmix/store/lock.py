"""One writer per run: a lease in the run folder, on any store (a local folder or S3).

A run is held through a lease object ``_lock/lease-NNNNNNNNN.json`` (``RunLayout.LOCK``)
holding the holder's host, pid, a unique token, since when it holds the run and until when the
lease is valid. The lease with the highest number is the current one.

- Taking the run creates the next lease number with a create-only write (``if_absent``: an
  ``O_EXCL``-style link locally, ``If-None-Match: *`` on S3), after checking that the current
  lease is expired or released. Two processes that try at once race for the same key and
  exactly one wins; the loser reads the winner and is refused. An expired lease (a holder
  killed by SIGKILL, or a machine that went away) is taken over the same way: the new holder
  creates the *next* number, so taking over never overwrites anything.
- The holder renews its lease from a heartbeat thread every third of the lease duration. Only
  the holder ever writes its own lease key after creating it, so a renewal is a plain put
  after checking that no later lease exists; if one does (the holder stalled past its
  expiry and someone took over), the holder has lost the run and stops renewing (``lost``).
- Releasing deletes the lock folder when the lease is still the current one.

Residual races, by design: (1) a holder that stalls for longer than the lease duration
(suspended laptop, long GC pause) can be taken over while it still believes it holds the run;
it notices at its next renewal, and its executor then fails the run. (2) Expiry is judged by
the reader's clock against the writer's, so hosts sharing a store need clocks within a small
fraction of the lease duration. (3) On S3 endpoints without conditional puts (the store falls
back to check-then-put), two simultaneous takers can both win; the later renewal of the loser
then finds the other lease only if their numbers differ.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import Any

from skillmix import settings
from skillmix.errors import RunFailedError, SkillmixError
from skillmix.store.base import ArtifactStore, KeyExists, KeyNotFound, StoreError
from skillmix.store.layout import RunLayout

log = logging.getLogger(__name__)

DEFAULT_LEASE_SECONDS = 60.0
POLL_SECONDS = 0.5  # how often --wait-for-lock looks again
_LEASE_NAME = re.compile(r"^lease-(\d{9})\.json$")


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_iso(text: str) -> float | None:
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


@dataclass(frozen=True)
class Lease:
    """One lease object: who holds the run, since when, and until when (unix seconds).
    ``seconds`` is the holder's lease length and ``renewed`` when it last wrote the lease
    (both absent from leases written before 0.9). ``damaged``: the file could not be read
    (never written); ``claimed`` the expiry a lease claimed before it was capped on read."""

    epoch: int
    host: str
    pid: int
    token: str
    since: str
    expires: float
    released: bool = False
    seconds: float | None = None
    renewed: str | None = None
    damaged: bool = False
    claimed: float | None = None

    def to_bytes(self) -> bytes:
        data = asdict(self)
        for local in ("damaged", "claimed"):
            del data[local]
        data["expires_at"] = _iso(self.expires)  # for people reading the file
        return json.dumps(data, sort_keys=True).encode() + b"\n"

    @classmethod
    def from_bytes(cls, epoch: int, data: bytes) -> Lease:
        """A lease read back. A damaged one counts as released (nobody can be renewing it)
        and says so (``damaged``). An expiry further ahead than any lease length allows
        (``settings.MAX_LOCK_SECONDS`` after the lease was last written) is capped there, so
        that a far-future lease cannot block a run for good."""
        try:
            raw = json.loads(data)
            seconds = raw.get("seconds")
            renewed = raw.get("renewed")
            lease = cls(
                epoch=epoch,
                host=str(raw["host"]),
                pid=int(raw["pid"]),
                token=str(raw["token"]),
                since=str(raw["since"]),
                expires=float(raw["expires"]),
                released=bool(raw.get("released", False)),
                seconds=float(seconds) if seconds is not None else None,
                renewed=str(renewed) if renewed is not None else None,
            )
        except (ValueError, TypeError, KeyError, AttributeError):
            return cls(epoch, "?", 0, "", "?", 0.0, released=True, damaged=True)
        written = _parse_iso(lease.renewed or lease.since)
        limit = (written if written is not None else 0.0) + settings.MAX_LOCK_SECONDS
        if not lease.expires <= limit:  # nan too
            return replace(lease, expires=limit, claimed=lease.expires)
        return lease

    def live(self, now: float) -> bool:
        return not self.released and self.expires > now

    def describe(self, now: float) -> str:
        left = max(0, round(self.expires - now))
        length = f"a lease of {self.seconds:g}s, " if self.seconds is not None else ""
        capped = (
            f"; capped: it claimed to last until {_claimed_text(self.claimed)}"
            if self.claimed is not None
            else ""
        )
        return (
            f"host {self.host}, pid {self.pid}, since {self.since} "
            f"({length}expires in {left}s{capped})"
        )


def _claimed_text(expires: float) -> str:
    try:
        return _iso(expires)
    except (ValueError, OverflowError, OSError):
        return f"{expires:g} (unix seconds)"


class RunLocked(SkillmixError):
    """Another process holds the run (exit 2: retrying right away cannot help)."""


class LockLost(RunFailedError):
    """This process held the run, stalled past its lease, and another took it over."""


def lease_seconds() -> float:
    """The lease duration: ``$SKILLMIX_LOCK_SECONDS`` or 60 s."""
    try:
        return settings.lock_seconds(DEFAULT_LEASE_SECONDS)
    except ValueError:
        raise SkillmixError(
            f"{settings.LOCK_SECONDS.name}={settings.LOCK_SECONDS.raw()!r}: "
            f"expected a positive number of seconds, at most {settings.MAX_LOCK_SECONDS:g}"
        ) from None


class RunLock:
    """The lease of one run folder (``store`` is the run folder). Use ``with lock:`` after
    ``acquire()``, or :func:`hold_run`; ``clock`` and ``sleep`` are injectable for tests."""

    def __init__(
        self,
        store: ArtifactStore,
        *,
        run_name: str = "",
        duration: float | None = None,
        host: str | None = None,
        pid: int | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.store = store
        self.run_name = run_name or store.uri
        self.duration = lease_seconds() if duration is None else duration
        self.host = host or socket.gethostname()
        self.pid = os.getpid() if pid is None else pid
        self.token = uuid.uuid4().hex
        self.clock = clock
        self.sleep = sleep
        self.lease: Lease | None = None
        self.lost: Lease | None = None  # the lease that took over from us, if any
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # reading -----------------------------------------------------------------------------
    def current(self) -> Lease | None:
        """The lease with the highest number, or None when the run is not held."""
        for _ in range(3):  # a newer holder may delete older leases between list and read
            epochs = []
            for key in self.store.list_keys(RunLayout.LOCK):
                match = _LEASE_NAME.match(key.rsplit("/", 1)[-1])
                if match:
                    epochs.append(int(match.group(1)))
            if not epochs:
                return None
            top = max(epochs)
            try:
                return Lease.from_bytes(top, self.store.read_bytes(RunLayout.lease_key(top)))
            except KeyNotFound:
                continue
        return None

    # taking ------------------------------------------------------------------------------
    def _attempt(self) -> Lease | None:
        """Try once to take the run; None when taken, else the lease that holds it."""
        holder: Lease | None = None
        for _ in range(3):
            now = self.clock()
            holder = self.current()
            if holder is not None and holder.live(now):
                return holder
            lease = Lease(
                epoch=(holder.epoch + 1) if holder else 1,
                host=self.host,
                pid=self.pid,
                token=self.token,
                since=_iso(now),
                expires=now + self.duration,
                seconds=self.duration,
                renewed=_iso(now),
            )
            try:
                self.store.write_bytes(
                    RunLayout.lease_key(lease.epoch), lease.to_bytes(), if_absent=True
                )
            except KeyExists:
                continue  # someone else took that number first: read who
            self.lease = lease
            if holder is not None and holder.damaged:
                log.warning(
                    "run %s: the lock's lease %s could not be read (damaged); taking the run "
                    "over as lease %d",
                    self.run_name,
                    RunLayout.lease_key(holder.epoch),
                    lease.epoch,
                )
            if holder is not None:  # older leases are history: keep only ours
                with contextlib.suppress(StoreError):
                    for epoch in range(max(1, holder.epoch - 2), lease.epoch):
                        self.store.delete_prefix(RunLayout.lease_key(epoch))
            return None
        return holder or self.current()

    def refusal(self, holder: Lease, waited: float | None = None) -> RunLocked:
        now = self.clock()
        waited_text = f" after waiting {waited:g}s" if waited is not None else ""
        expiry = (
            f"its lease of {holder.seconds:g}s is taken over when not renewed (a killed process)"
            if holder.seconds is not None
            else "its lease is taken over once it expires (a killed process)"
        )
        return RunLocked(
            f"run {self.run_name} is held by another skillmix process{waited_text}: "
            f"{holder.describe(now)}",
            hint=f"let it finish, or pass --wait-for-lock SECONDS to wait for it; {expiry}; "
            "`skillmix unlock RUN` breaks it when you know the holder is gone",
        )

    def break_lease(self, holder: Lease) -> Lease:
        """Break ``holder``'s lease (``skillmix unlock``): create the next lease number,
        already released, so the run is free and the holder, if it still runs, finds a later
        lease at its next renewal and stops (``LockLost``). Create-only: when the lock has
        changed since ``holder`` was read, :class:`KeyExists` is raised and nothing written."""
        now = self.clock()
        broken = Lease(
            epoch=holder.epoch + 1,
            host=self.host,
            pid=self.pid,
            token=self.token,
            since=_iso(now),
            expires=now,
            released=True,
            seconds=0.0,
            renewed=_iso(now),
        )
        self.store.write_bytes(RunLayout.lease_key(broken.epoch), broken.to_bytes(), if_absent=True)
        return broken

    def acquire(self, wait: float | None = None) -> None:
        """Take the run, or raise :class:`RunLocked` naming the holder. With ``wait``, look
        again every half second for up to ``wait`` seconds first."""
        deadline = self.clock() + (wait or 0.0)
        while True:
            holder = self._attempt()
            if holder is None:
                self._start_heartbeat()
                return
            remaining = deadline - self.clock()
            if wait is None or remaining <= 0:
                raise self.refusal(holder, wait)
            self.sleep(min(POLL_SECONDS, remaining))

    # holding -----------------------------------------------------------------------------
    def renew(self) -> bool:
        """Extend our lease; False (and ``lost`` set) when another lease has replaced it."""
        if self.lease is None or self.lost is not None:
            return False
        current = self.current()
        if current is None or current.epoch != self.lease.epoch or current.token != self.token:
            self.lost = current or self.lease
            log.warning("run %s: lost the run lock (%s)", self.run_name, self.lost)
            return False
        now = self.clock()
        lease = replace(self.lease, expires=now + self.duration, renewed=_iso(now))
        self.store.write_bytes(RunLayout.lease_key(lease.epoch), lease.to_bytes())
        self.lease = lease
        return True

    def _start_heartbeat(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._heartbeat, name="skillmix-run-lock", daemon=True
        )
        self._thread.start()

    def _heartbeat(self) -> None:
        interval = max(0.05, self.duration / 3)
        while not self._stop.wait(interval):
            try:
                if not self.renew():
                    return
            except StoreError as exc:  # transient: try again, the lease has time left
                log.warning("run %s: cannot renew the run lock: %s", self.run_name, exc)

    def check(self) -> None:
        """Raise :class:`LockLost` when another process took the run over from us, or the
        lock was broken (``skillmix unlock``)."""
        if self.lost is None:
            return
        if self.lost.released and self.lost.token != self.token:
            what = (
                f"its lock was broken by host {self.lost.host}, pid {self.lost.pid} at "
                f"{self.lost.since} (skillmix unlock)"
            )
        else:
            what = (
                "this process stalled past its lease and another one took the run over "
                f"({self.lost.describe(self.clock())})"
            )
        raise LockLost(
            f"run {self.run_name}: {what}",
            hint="its work is kept; resume the run once no other process writes it",
        )

    def release(self, *, quiet: bool = False) -> None:
        """Stop renewing and give the run back (the lock folder goes when the lease is ours).
        ``quiet``: an error is already on its way out, so a failed release (the lease then
        expires on its own) is not reported on top of it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        lease, self.lease = self.lease, None
        if lease is None or self.lost is not None:
            return
        try:
            current = self.current()
            if (
                current is not None
                and current.epoch == lease.epoch
                and current.token == lease.token
            ):
                self.store.delete_prefix(RunLayout.LOCK)
        except StoreError as exc:  # the lease then expires on its own
            if quiet:
                return
            log.warning("run %s: cannot release the run lock: %s", self.run_name, exc)

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


@contextlib.contextmanager
def hold_run(
    store: ArtifactStore, *, run_name: str = "", wait: float | None = None
) -> Iterator[RunLock]:
    """Hold a run folder for the block: take its lease (waiting up to ``wait`` seconds),
    renew it while the block runs, release it however the block ends."""
    lock = RunLock(store, run_name=run_name)
    lock.acquire(wait)
    try:
        yield lock
    except BaseException:
        lock.release(quiet=True)
        raise
    lock.release()
