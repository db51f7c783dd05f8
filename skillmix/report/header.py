"""The marks of a report's header: what a reader must see before the numbers. A student graded
by its own model, an imported run whose grading rounds are copies of one grading (then the
header does not claim "R = 3"), and an explicit-name filter other than the reference's."""

from __future__ import annotations

from skillmix.artifacts import Summary

IDENTICAL_ROUNDS = "byte-identical grading rounds"  # legacy.identical_rounds_message says it
REFERENCE_NAME_FILTER = "off"  # the reference's default (method.points, reference mode)
SELF_GRADED = "self-graded"


def identical_rounds(summary: Summary) -> bool:
    """Whether the agreement section found the grading rounds to be byte-identical copies."""
    return any(IDENTICAL_ROUNDS in w for w in summary.agreement.warnings)


def rounds_text(summary: Summary) -> str:
    """ "R = 3 grading rounds", or, when the rounds are copies, what they are in effect."""
    rounds = summary.experiment.grader.rounds
    if identical_rounds(summary) and rounds > 1:
        return f"R = {rounds} grading rounds, identical copies of one grading (in effect R = 1)"
    return f"R = {rounds} grading rounds"


def self_graded(summary: Summary) -> list[str]:
    """The students whose model id is the grader's."""
    grader = summary.experiment.grader.model
    return [s.name for s in summary.experiment.students if s.model == grader]


def header_marks(summary: Summary) -> tuple[str, ...]:
    """One sentence per mark; none for a summary written before the marks (no reproduction
    block), whose report renders as it did."""
    if summary.reproduction is None:
        return ()
    marks = [
        f"{SELF_GRADED}: {name} is graded by its own model "
        f"({summary.experiment.grader.model}); its row is marked"
        for name in self_graded(summary)
    ]
    if identical_rounds(summary):
        marks.append(
            f"the {summary.experiment.grader.rounds} grading rounds are byte-identical copies of "
            "one grading: in effect R = 1 (agreement between them means nothing)"
        )
    name_filter = summary.metrics.settings.filter_explicit_name
    if name_filter != REFERENCE_NAME_FILTER:
        marks.append(
            f"explicit-name filter: {name_filter} (the reference's default is "
            f"{REFERENCE_NAME_FILTER}): a skill named outright in the answer earns no point here"
        )
    return tuple(marks)
