"""A store in a local directory. Atomic writes via a temporary file and rename (or link, for
create-only writes, so two writers can never both win). Files get the permissions a plain
``open()`` would give (0644 under umask 022), not the temporary file's private 0600."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from skillmix.errors import SkillmixError
from skillmix.store.base import KeyExists, KeyNotFound, StoreError, check_key, store_os_error


def current_umask() -> int:
    """The process umask (read from /proc where it can be, so it is never changed, even for
    a moment; else set and restored)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


class LocalStore:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    @property
    def uri(self) -> str:
        return str(self.root)

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    def child(self, prefix: str) -> LocalStore:
        return LocalStore(self.root / check_key(prefix))

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def read_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            raise KeyNotFound(f"{self.root}: no such key {key!r}") from None
        except OSError as exc:
            raise StoreError(f"{self._path(key)}: cannot read: {exc.strerror}") from None

    def write_bytes(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.name[-20:])
            try:
                with os.fdopen(fd, "wb") as fh:
                    os.fchmod(fh.fileno(), 0o666 & ~current_umask())  # mkstemp made it 0600
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                if if_absent:
                    try:
                        os.link(tmp, path)
                    except FileExistsError:
                        raise KeyExists(f"{path}: already exists") from None
                else:
                    os.replace(tmp, path)
                    tmp = ""
            finally:
                if tmp:
                    os.unlink(tmp)
        except KeyExists:
            raise
        except OSError as exc:
            raise store_os_error(path, "write", exc) from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list_keys(self, prefix: str = "") -> list[str]:
        base = self._path(prefix) if prefix else self.root
        if not base.is_dir():
            return []
        keys = []
        for dirpath, _dirs, files in os.walk(base):
            for name in files:
                if name.startswith(".tmp-"):
                    continue
                rel = Path(dirpath, name).relative_to(self.root).as_posix()
                keys.append(rel)
        return sorted(keys)

    def delete_prefix(self, prefix: str) -> int:
        base = self._path(prefix) if prefix else self.root
        if base.is_file():
            try:
                base.unlink()
            except OSError as exc:
                raise store_os_error(base, "delete", exc) from None
            return 1
        if not base.is_dir():
            return 0
        count = len(self.list_keys(prefix))
        try:
            shutil.rmtree(base)
        except OSError as exc:
            raise store_os_error(base, "delete", exc) from None
        return count

    def check(self) -> None:
        """The store folder is, or can become, a directory: the path itself and the nearest
        ancestor that exists must be directories (a path under a regular file never can)."""
        if self.root.exists() and not self.root.is_dir():
            raise SkillmixError(f"{self.root}: store path exists and is not a directory")
        for parent in self.root.parents:
            if parent.exists():
                if not parent.is_dir():
                    raise SkillmixError(
                        f"{parent}: is a file, so the store {self.root} cannot be made under it",
                        hint="choose a store folder whose parents are folders",
                    )
                break
