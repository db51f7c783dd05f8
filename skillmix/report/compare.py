"""``skillmix compare``: one leaderboard across runs, refusing to rank apples against oranges.

Runs can be ranked together only when every setting that changes the numbers is the same
(catalog, prompts, grader, rounds, M, k values, sampling, seed, metric options); otherwise
the comparison names the settings that differ and stops, unless mixing is allowed.

The comparison is one view model (``compare_view.Comparison``, written as compare.json), built
here from the runs (``compare_load``) and the baseline's differences (``compare_baseline``);
``html_compare`` and ``markdown_compare`` render it and ``compare_files`` writes the files.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from skillmix.errors import SkillmixError
from skillmix.identity import SETTING_LABELS
from skillmix.method.points import METRIC_NAMES
from skillmix.report.compare_baseline import baseline_view
from skillmix.report.compare_load import load_run
from skillmix.report.compare_view import Comparison, RunData, SettingValue, run_of, setting_keys
from skillmix.report.leaderboard import Entry, describe_entry, entries_from_rows, leaderboard
from skillmix.store.runs import utc_now


def differing_settings(runs: Sequence[RunData]) -> dict[str, dict[str, list[int]]]:
    """Per setting that is not the same everywhere: each value and the runs (1-based) with it."""
    out: dict[str, dict[str, list[int]]] = {}
    for key in setting_keys(runs):
        values: dict[str, list[int]] = {}
        for r in runs:
            values.setdefault(r.settings.get(key, "unknown"), []).append(r.index)
        if len(values) > 1:
            out[key] = values
    return out


def describe_differences(diff: Mapping[str, Mapping[str, list[int]]]) -> str:
    """The differing settings in one line, for the refusal's error message."""
    parts = []
    for key, values in diff.items():
        shown = ", ".join(
            f"{value} (run {'/'.join(map(str, runs))})" for value, runs in values.items()
        )
        parts.append(f"{SETTING_LABELS[key]}: {shown}")
    return "; ".join(parts)


def entry_label(entry: Entry, runs: Sequence[RunData], clashes: set[str]) -> str:
    """The entry's student, with its run when the name is in several runs (``clashes``), so
    that every row can be told apart and named by ``--baseline``."""
    if entry.student not in clashes:
        return entry.student
    run = runs[run_of(entry) - 1]
    same_id = sum(1 for r in runs if r.run_id == run.run_id) > 1
    where = f"#{run.index} {run.run_id}" if same_id else run.run_id
    return f"{entry.student} ({where})"


def compare_runs(
    uris: Sequence[str],
    *,
    allow_mixed: bool = False,
    rank_by: str = "full_marks",
    baseline: str | None = None,
) -> Comparison:
    """The comparison as one document (``compare.json``); raises SkillmixError on mixed settings
    unless ``allow_mixed``. ``baseline``: the model the differences are taken from (a student
    name, or its label with the run when it is in several runs); default: the leader."""
    if not uris:
        raise SkillmixError("give at least one run folder to compare")
    if rank_by not in METRIC_NAMES:
        raise SkillmixError(
            f"unknown metric {rank_by!r}", hint=f"choose from {', '.join(METRIC_NAMES)}"
        )
    runs = [load_run(uri, i) for i, uri in enumerate(uris, start=1)]
    diff = differing_settings(runs)
    if diff and not allow_mixed:
        raise SkillmixError(
            f"runs differ in settings, so their numbers are not comparable: {describe_differences(diff)}",
            hint="pass --allow-mixed to rank them anyway",
        )
    entries: list[Entry] = []
    for run in runs:
        for entry in entries_from_rows(run.rows):
            entry.run = run.index
            entry.run_id = run.run_id
            entry.run_label = f"#{run.index} {run.run_id}"
            describe_entry(entry, run.student_specs, run.grader_specs)
            entry.excluded = run.excluded.get(entry.student)
            # paired tests pair (k, combination) only between runs drawing the same ones
            entry.design = "|".join(
                run.settings.get(key, "") for key in ("catalog", "seed", "sampling")
            )
            entries.append(entry)
    students: dict[str, set[int]] = {}
    for entry in entries:
        students.setdefault(entry.student, set()).add(run_of(entry))
    clashes = {s for s, where in students.items() if len(where) > 1}
    for entry in entries:
        entry.model = entry_label(entry, runs, clashes)
    order = [rank_by, *[m for m in METRIC_NAMES if m != rank_by]]
    boards = [leaderboard(entries, metric) for metric in order]
    return Comparison(
        baseline=baseline_view(boards, runs, baseline),
        compared_at=utc_now(),
        rank_by=rank_by,
        mixed=bool(diff),
        settings_differ={
            key: [SettingValue(value=value, runs=r) for value, r in values.items()]
            for key, values in diff.items()
        },
        setting_labels=SETTING_LABELS,
        runs=runs,
        leaderboards=boards,
    )
