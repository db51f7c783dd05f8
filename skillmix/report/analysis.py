"""What the report shows beyond the metric rows: grader agreement, per-skill and per-topic
rates across models, parse failures and retries, and the gallery of example answers.

Everything here is computed from records with the method's own functions (points are
prepared and voted exactly as the metrics do), so the report never disagrees with
``skillmix aggregate``. No I/O: the callers read the records.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from skillmix.artifacts import (
    AgreementItem,
    AgreementRow,
    AgreementSection,
    CategoryRateRow,
    CategoryRates,
    GalleryExample,
    GalleryRound,
    ItemScores,
    ModelRef,
    QualityRow,
    SkillRateRow,
    SkillRates,
    TopicRateRow,
    TopicRates,
)
from skillmix.artifacts.summary import ItemFailureCell, ItemFailureRow, ItemFailures
from skillmix.config import Experiment
from skillmix.method.agreement import agreement
from skillmix.method.items import ITEM_GROUPS, item_failures, item_group, worst_item
from skillmix.method.metrics import MetricRow, vote_answers
from skillmix.method.points import MetricOptions, names_skill
from skillmix.records import GenerationRecord, GradeRecord, answer_id

# The parse-failure and retry table: (QualityRow field, column title).
QUALITY_COLUMNS = (
    ("generations", "generations"),
    ("generation_failed", "failed"),
    ("grades", "verdicts"),
    ("grades_ok", "ok"),
    ("grades_unparsed", "unparsed"),
    ("grades_failed", "failed"),
    ("wrong_count", "wrong point count"),
    ("empty", "no table found"),
    ("retried", "re-asked"),
    ("extra_requests", "extra grader requests"),
)
MAX_ANSWER_CHARS = 2000
MAX_GRADER_REPLY_CHARS = 2500
EXPLICIT_NAME_EXAMPLES = 2


def rubric_labels(skills: Sequence[str], k: int) -> list[str]:
    return [*skills[:k], "on topic", "makes sense", "length (computed)"]


# grader agreement -------------------------------------------------------------------------
def agreement_section(grades: Iterable[GradeRecord]) -> AgreementSection:
    """Percent agreement and Fleiss' kappa between grading rounds, per rubric item group:
    per (grader, k) over all students, per grader over everything, and per (grader, student).

    Ratings are the points as the grader gave them (the length item too, although the
    metrics replace it with the computed point). Verdicts without a full point list are left
    out; an item needs at least two rounds to count."""
    ratings: dict[tuple[str, str, int, int, int, int], dict[int, float]] = defaultdict(dict)
    rounds_seen: set[int] = set()
    for r in grades:
        if r.status != "ok" or r.points is None or len(r.points) != r.k + 3:
            continue
        rounds_seen.add(r.grading_round)
        for j, value in enumerate(r.points):
            key = (r.grader, r.student, r.k, r.generation_round, r.index, j)
            ratings[key][r.grading_round] = float(value)
    scopes: dict[tuple[str, str, str], dict[str, list[list[float]]]] = defaultdict(
        lambda: {g: [] for g in ITEM_GROUPS}
    )
    for (grader, student, k, _g, _i, j), by_round in ratings.items():
        values = [by_round[r] for r in sorted(by_round)]
        group = item_group(j, k)
        for scope in ((grader, "all", str(k)), (grader, "all", "all"), (grader, student, "all")):
            scopes[scope][group].append(values)

    def order(scope: tuple[str, str, str]) -> tuple[str, bool, str, int]:
        grader, student, k_text = scope
        return (grader, student != "all", student, int(k_text) if k_text != "all" else 10**9)

    rows = []
    for scope in sorted(scopes, key=order):
        grader, student, k_text = scope
        items = {
            g: AgreementItem(**asdict(agreement(values))) for g, values in scopes[scope].items()
        }
        k_value: int | str = int(k_text) if k_text != "all" else "all"
        rows.append(AgreementRow(grader=grader, student=student, k=k_value, items=items))
    return AgreementSection(
        grading_rounds=len(rounds_seen),
        groups=list(ITEM_GROUPS),
        rows=rows,
        note=(
            "percent = mean share of agreeing pairs of grading rounds; kappa = Fleiss' kappa "
            "(undefined when every verdict is the same); length = the grader's own verdict "
            "(the metrics use the computed sentence count instead)"
        ),
    )


# voted units (one per student, grader, k, generation round, combination) -----------------
@dataclass
class ReportAnswer:
    """One answer as the report shows it (student, grader, k, generation round, combination):
    its grading rounds, the points voted over them and its scores."""

    student: str
    grader: str
    k: int
    generation_round: int
    index: int
    topic: str
    skills: list[str]
    answer: str
    rounds: dict[int, GradeRecord] = field(default_factory=dict)
    voted: list[float] | None = None
    scores: dict[str, float] | None = None
    named: list[str] = field(default_factory=list)

    @property
    def column(self) -> tuple[str, str]:
        return (self.student, self.grader)

    def rank_key(self) -> tuple[float, float, float]:
        """Higher is better: full marks, then skill fraction, then total points."""
        if self.scores is None or self.voted is None:
            return (-1.0, -1.0, -1.0)
        return (self.scores["full_marks"], self.scores["skill_fraction"], sum(self.voted))


def voted_units(grades: Iterable[GradeRecord], options: MetricOptions) -> list[ReportAnswer]:
    """Per answer: its verdicts and their vote, from the method's ``vote_answers`` (the voting
    the metrics count), with what the report shows beside it (the skills the answer names)."""
    records = list(grades)
    detect = options.filter_explicit_name if options.filter_explicit_name != "off" else "word"
    units = []
    for voted in vote_answers([r.to_graded_answer() for r in records], options):
        rounds = {g: records[position] for g, position in sorted(voted.rounds.items())}
        r = next(iter(rounds.values()))
        unit = ReportAnswer(
            r.student, r.grader, r.k, r.generation_round, r.index, r.topic, list(r.skills), r.answer
        )
        unit.rounds = rounds
        unit.named = [s for s in unit.skills[: r.k] if names_skill(r.answer, s, detect)]
        unit.voted, unit.scores = voted.voted, voted.scores
        units.append(unit)
    return units


ITEM_UNIT = (
    "per answer (before generation rounds are combined), 1 minus its voted point, summed over "
    "the item group's rubric points and divided by their number, pooled over k: the k skills "
    "together, then on topic, makes sense and the length point (computed from the sentence "
    "count) each on its own"
)


def item_failure_section(
    units: Sequence[ReportAnswer], order: Sequence[tuple[str, str]] = ()
) -> ItemFailures | None:
    """Per model (leaderboard order first): which rubric item groups its answers miss, from
    the voted points the metrics count. None when no answer has a usable verdict."""
    voted: dict[tuple[str, str], list[tuple[int, list[float]]]] = defaultdict(list)
    for unit in units:
        if unit.voted is not None:
            voted[unit.column].append((unit.k, unit.voted))
    if not voted:
        return None
    rows = []
    for student, grader in _columns(set(voted), order):
        answers = voted[(student, grader)]
        failures = item_failures(answers)
        rows.append(
            ItemFailureRow(
                student=student,
                grader=grader,
                answers=len(answers),
                items={
                    g: ItemFailureCell(rate=f.rate, failed=f.failed, points=f.points)
                    for g, f in failures.items()
                },
                worst=worst_item(failures),
            )
        )
    return ItemFailures(groups=list(ITEM_GROUPS), unit=ITEM_UNIT, rows=rows)


def column_label(student: str, grader: str, graders: int) -> str:
    return student if graders <= 1 else f"{student} / {grader}"


def _columns(
    present: set[tuple[str, str]], order: Sequence[tuple[str, str]] = ()
) -> list[tuple[str, str]]:
    """Models in the given order (e.g. leaderboard rank), then any others sorted."""
    first = [c for c in order if c in present]
    return first + sorted(present - set(first))


MIN_N = 5  # cells with fewer combinations do not decide the "hardest first" order
SKILL_UNIT = (
    "per combination, the skill's voted point with generation rounds combined as the metrics "
    "combine them (best of G by default), averaged over the combinations that contain the "
    "skill, pooled over k"
)
TOPIC_UNIT = (
    "per combination, Full Marks with generation rounds combined (best of G by default), "
    "averaged over the combinations of the topic, pooled over k"
)
CATEGORY_UNIT = (
    "the per-skill unit pooled over every (combination, skill) pair whose skill is in the "
    "category, pooled over k"
)


def skill_rates(
    rows: Sequence[MetricRow],
    order: Sequence[tuple[str, str]] = (),
    categories: Mapping[str, str] | None = None,
    min_n: int = MIN_N,
) -> SkillRates:
    """Per skill and model (pooled over k), in the headline unit: per combination the skill's
    point after voting and combining generation rounds, averaged over combinations. Columns
    follow ``order`` (student, grader); ``categories`` maps skills to their catalog category."""
    sums = _new_sums()
    for skill, model, point in _skill_points(rows):
        sums[skill][model].append(point)
    head, table = _rate_table(sums, rows, order, min_n)
    cats = categories or {}
    return SkillRates(
        **head,
        unit=SKILL_UNIT,
        rows=[
            SkillRateRow(
                skill=name, values=values, n=counts, mean=mean, category=cats.get(name, "")
            )
            for name, values, counts, mean in table
        ],
    )


def _skill_points(rows: Sequence[MetricRow]) -> Iterator[tuple[str, tuple[str, str], float]]:
    """Every (skill, (student, grader), voted skill point) of the rows' combinations."""
    for row in rows:
        c = row.combinations
        for skills, points in zip(c.skills, c.skill_points, strict=True):
            for skill, point in zip(skills[: row.k], points, strict=False):
                yield skill, (row.student, row.grader), point


def category_rates(
    rows: Sequence[MetricRow],
    categories: Mapping[str, str],
    order: Sequence[tuple[str, str]] = (),
    min_n: int = MIN_N,
) -> CategoryRates:
    """Per skill category and model (pooled over k): the per-skill unit over every
    (combination, skill) pair of the category (n counts those pairs). Skills without a
    category are grouped as "uncategorised"."""
    sums = _new_sums()
    members: dict[str, set[str]] = defaultdict(set)
    for skill, model, point in _skill_points(rows):
        category = categories.get(skill) or "uncategorised"
        members[category].add(skill)
        sums[category][model].append(point)
    head, table = _rate_table(sums, rows, order, min_n)
    return CategoryRates(
        **head,
        unit=CATEGORY_UNIT,
        rows=[
            CategoryRateRow(
                category=name, skills=len(members[name]), values=values, n=counts, mean=mean
            )
            for name, values, counts, mean in table
        ],
    )


def topic_rates(
    rows: Sequence[MetricRow], order: Sequence[tuple[str, str]] = (), min_n: int = MIN_N
) -> TopicRates:
    """Per topic and model (pooled over k): the share of combinations with full marks (after
    combining generation rounds), as the metrics' per-topic rates are computed per k."""
    sums = _new_sums()
    for row in rows:
        c = row.combinations
        for topic, value in zip(c.topic, c.scores["full_marks"], strict=True):
            sums[topic][(row.student, row.grader)].append(float(value))
    head, table = _rate_table(sums, rows, order, min_n)
    return TopicRates(
        **head,
        unit=TOPIC_UNIT,
        rows=[
            TopicRateRow(topic=name, values=values, n=counts, mean=mean)
            for name, values, counts, mean in table
        ],
    )


_Sums = dict[str, dict[tuple[str, str], list[float]]]  # name -> (student, grader) -> values
_Rates = tuple[str, list[float | None], list[int], float | None]  # name, values, n, mean


def _new_sums() -> _Sums:
    return defaultdict(lambda: defaultdict(list))


def _rate_table(
    sums: _Sums, rows: Sequence[MetricRow], order: Sequence[tuple[str, str]], min_n: int
) -> tuple[dict[str, Any], list[_Rates]]:
    """A rate table's columns (the rows' models, in ``order`` first), its models and
    ``min_n``, and its (name, values, n, mean) rows, hardest first: sorted by the mean of the
    cells with at least ``min_n`` combinations (rows with none such come last, by name); the
    shown mean is over every cell present."""
    graders = len({r.grader for r in rows})
    columns = _columns({(r.student, r.grader) for r in rows}, order)
    labels = [column_label(s, g, graders) for s, g in columns]
    table: list[tuple[_Rates, float | None]] = []
    for name in sorted(sums):
        values = [(sum(v) / len(v)) if (v := sums[name].get(col)) else None for col in columns]
        counts = [len(sums[name].get(col, [])) for col in columns]
        present = [v for v in values if v is not None]
        sure = [v for v, n in zip(values, counts, strict=True) if v is not None and n >= min_n]
        key = sum(sure) / len(sure) if sure else None
        table.append(
            ((name, values, counts, sum(present) / len(present) if present else None), key)
        )
    table.sort(key=lambda r: (r[1] is None, r[1] if r[1] is not None else 0.0, r[0][0]))
    models = [ModelRef(student=s, grader=g) for s, g in columns]
    return {"columns": labels, "models": models, "min_n": min_n}, [r for r, _ in table]


def self_grading_warnings(experiment: Experiment) -> list[str]:
    """One line per student whose model id is also the grader's: a model grading its own
    answers may favour them."""
    grader = experiment.grader
    return [
        f"self-grading: student {student.name!r} is graded by the same model "
        f"({grader.backend}: {grader.model}); a model grading its own "
        "answers may favour them, so read its scores with care"
        for student in experiment.students
        if student.model == grader.model
    ]


# parse failures and retries ---------------------------------------------------------------
def quality_rows(
    generations: Iterable[GenerationRecord], grades: Iterable[GradeRecord]
) -> list[QualityRow]:
    """Per (student, k): failed generations, grading verdicts by status and parse status,
    verdicts that needed re-asks and how many extra grader requests they cost."""
    rows: dict[tuple[str, int], dict[str, int]] = defaultdict(
        lambda: {
            "generations": 0,
            "generation_failed": 0,
            "grades": 0,
            "grades_ok": 0,
            "grades_unparsed": 0,
            "grades_failed": 0,
            "wrong_count": 0,
            "empty": 0,
            "retried": 0,
            "extra_requests": 0,
        }
    )
    for g in generations:
        row = rows[(g.student, g.k)]
        row["generations"] += 1
        row["generation_failed"] += g.status == "failed"
    for r in grades:
        row = rows[(r.student, r.k)]
        row["grades"] += 1
        row[f"grades_{r.status}"] += 1
        if r.parse_status in ("wrong_count", "empty"):
            row[r.parse_status] += 1
        row["retried"] += r.attempts > 1
        row["extra_requests"] += max(0, r.attempts - 1)
    return [QualityRow(student=s, k=k, **rows[(s, k)]) for s, k in sorted(rows)]


# gallery ----------------------------------------------------------------------------------
def _clip(text: str | None, limit: int) -> str:
    if text is None:
        return ""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def example(unit: ReportAnswer, kind: str, options: MetricOptions) -> GalleryExample:
    rounds = [
        GalleryRound(
            grading_round=number,
            points=list(rec.points) if rec.points is not None else None,
            status=rec.status,
            parse_status=rec.parse_status,
            attempts=rec.attempts,
        )
        for number, rec in sorted(unit.rounds.items())
    ]
    first = unit.rounds[min(unit.rounds)]  # every round grades the unit's answer
    return GalleryExample(
        kind=kind,
        **answer_id(first),
        grader=unit.grader,
        answer=_clip(unit.answer, MAX_ANSWER_CHARS),
        rubric=rubric_labels(unit.skills, unit.k),
        rounds=rounds,
        points=unit.voted,
        scores=ItemScores(**unit.scores) if unit.scores is not None else None,
        named_skills=list(unit.named),
        named_filtered=bool(unit.named) and options.filter_explicit_name != "off",
        grader_reply=_clip(first.raw, MAX_GRADER_REPLY_CHARS),
    )


def select_examples(
    units: Sequence[ReportAnswer], options: MetricOptions, order: Sequence[tuple[str, str]] = ()
) -> list[GalleryExample]:
    """Per (student, grader, k): the best and the worst graded answer, then up to two answers
    that name one of their skills (explicit-name hits); each combination at most once (its
    other generation rounds are in the answer browser). Ties go
    to the lowest combination index, then generation round, so the choice is deterministic.
    Unreadable verdicts are never chosen as best or worst. Models follow ``order``."""
    groups: dict[tuple[str, str, int], list[ReportAnswer]] = defaultdict(list)
    for u in units:
        groups[(u.student, u.grader, u.k)].append(u)
    rank = {c: i for i, c in enumerate(_columns({(s, g) for s, g, _ in groups}, order))}
    out: list[GalleryExample] = []
    for key in sorted(groups, key=lambda key: (rank[(key[0], key[1])], key[2])):
        members = sorted(groups[key], key=lambda u: (u.index, u.generation_round))
        scored = [u for u in members if u.scores is not None]
        chosen: list[tuple[ReportAnswer, str]] = []
        if scored:
            best = max(scored, key=lambda u: u.rank_key())  # max keeps the first of ties
            # one card per combination: another generation round of the best one is skipped
            others = [u for u in scored if u.index != best.index]
            worst = min(others, key=lambda u: u.rank_key()) if others else best
            chosen.append((best, "best"))
            if worst is not best and worst.rank_key() < best.rank_key():
                chosen.append((worst, "worst"))
        seen = {u.index for u, _ in chosen}
        hits = []
        for u in members:
            if u.named and u.index not in seen:
                seen.add(u.index)
                hits.append(u)
        chosen += [(u, "explicit_name") for u in hits[:EXPLICIT_NAME_EXAMPLES]]
        out.extend(example(u, kind, options) for u, kind in chosen)
    return out
