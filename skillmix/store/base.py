"""The artifact store seam: a flat key/value space under a root (a directory or an S3 prefix).

Keys are ``/``-separated relative paths. Writes are atomic per key: a reader sees either the
old value, nothing, or the whole new value. ``if_absent`` turns a write into create-only,
which is how the write protocol avoids overwriting finished work.
"""

from __future__ import annotations

import errno
from typing import Protocol, runtime_checkable

from skillmix.errors import RunFailedError, SkillmixError


class StoreError(RunFailedError):
    """The store could not be read or written (network, permissions); a retry may help."""


class StoreNotWritable(StoreError):
    """The store refuses writes (permissions, a read-only file system): the user must pick
    another store, so this is bad input (exit code 2), not a failed run."""

    exit_code = 2


def store_os_error(path: object, action: str, exc: OSError) -> StoreError:
    """One line for an OSError of a local store; permission problems are bad input."""

    cls = StoreNotWritable if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS) else StoreError
    where = exc.filename if exc.filename else path
    return cls(f"{where}: cannot {action}: {exc.strerror or exc}")


class KeyNotFound(StoreError):
    pass


class KeyExists(StoreError):
    """A create-only write found the key already present."""


@runtime_checkable
class ArtifactStore(Protocol):
    """What every store offers. Implementations: LocalStore, S3Store."""

    @property
    def uri(self) -> str: ...

    def child(self, prefix: str) -> ArtifactStore:
        """A store rooted at ``prefix`` below this one."""
        ...

    def read_bytes(self, key: str) -> bytes: ...

    def write_bytes(self, key: str, data: bytes, *, if_absent: bool = False) -> None: ...

    def exists(self, key: str) -> bool: ...

    def list_keys(self, prefix: str = "") -> list[str]:
        """All keys under ``prefix`` (recursive), sorted, relative to this store's root."""
        ...

    def delete_prefix(self, prefix: str) -> int:
        """Delete every key under ``prefix``; returns how many were deleted."""
        ...

    def check(self) -> None:
        """Raise a one-line SkillmixError if the store cannot be used (missing bucket...)."""
        ...


def check_key(key: str) -> str:
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise SkillmixError(f"invalid store key {key!r}")
    return key


def join_key(*parts: str) -> str:
    return "/".join(p.strip("/") for p in parts if p and p.strip("/"))
