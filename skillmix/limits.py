"""How much skillmix reads of a file it reads whole. ``/dev/zero`` or a mistaken multi-gigabyte
path given as an experiment would otherwise be read until memory runs out; each limit is far
above what a real file of its kind needs and is named in the error."""

from __future__ import annotations

from pathlib import Path

from skillmix.errors import SkillmixError

MiB = 1 << 20
EXPERIMENT_BYTES = 4 * MiB  # experiment files, cluster profiles, task files
PROMPT_BYTES = 4 * MiB  # a prompt version's template file
CATALOG_BYTES = 64 * MiB  # a skills CSV or a topics file
REFERENCE_CSV_BYTES = 1024 * MiB  # one records.csv of a reference-format result tree
RESULTS_BYTES = 4096 * MiB  # a reasoning run's results.json


def read_at_most(path: str | Path, limit: int, what: str) -> bytes:
    """The file's bytes, or one SkillmixError when it holds more than ``limit`` bytes (read in
    one go up to the limit, so an endless file costs no more than that)."""
    p = Path(path)
    with open(p, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise SkillmixError(
            f"{p}: {what} is at most {limit:,} bytes; this one is larger",
            hint="check the path (a device or a data file given by mistake?)",
        )
    return data


def read_text_file(path: str | Path, limit: int, what: str) -> str:
    """A UTF-8 text file read whole (at most ``limit`` bytes); one SkillmixError naming the
    file when it is missing, unreadable, not UTF-8 or too large. ``what``: "an experiment
    file", "a task file", ..."""
    p = Path(path)
    try:
        return read_at_most(p, limit, what).decode("utf-8")
    except FileNotFoundError:
        raise SkillmixError(f"{p}: {what.split(' ', 1)[1]} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SkillmixError(f"{p}: cannot read: {exc}") from None
