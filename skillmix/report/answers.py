"""Every answer of a run with its whole story: the conversation that produced it, each grading
round's reply and points, the vote and the grading prompt.

Two uses: the answer browser of ``report.html`` (the data travel inside the page, compact and
gzip-compressed, see :func:`browser_payload`) and the per-answer exports of ``report/``
(``answers.jsonl`` and ``scores.csv``) for people's own paired analyses. Points are voted with
the method's own functions (:func:`skillmix.report.analysis.voted_units`), so an answer's
scores are the very ones the metrics average. No I/O: the callers read the records.
"""

from __future__ import annotations

import base64
import csv
import gzip
import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from skillmix.method.points import MetricOptions
from skillmix.records import GenerationRecord, GradeRecord
from skillmix.report.analysis import ReportAnswer, rubric_labels, voted_units

# Stands for the answer inside a stored grading prompt (the browser puts the answer back):
# the prompt's remaining text is the same for every model of a combination, so it is stored once.
ANSWER_MARK = "\u0000"
SCORES_CSV_HEADER = (
    "run_id",
    "student",
    "model",
    "grader",
    "k",
    "generation_round",
    "index",
    "grading_round",
    "status",
    "points",
    "voted",
    "full_marks",
    "all_skills",
    "skill_fraction",
)


@dataclass(frozen=True)
class Answer:
    """One answer (student, grader, k, generation round, combination) with its generation."""

    unit: ReportAnswer
    generation: GenerationRecord | None
    model: str

    @property
    def graded(self) -> bool:
        """False for an answer whose grading has not finished yet (a partial run)."""
        return bool(self.unit.rounds)

    @property
    def key(self) -> tuple[str, str, int, int, int]:
        u = self.unit
        return (u.student, u.grader, u.k, u.generation_round, u.index)


@dataclass(frozen=True)
class AnswerSet:
    """Every answer of a run (graded, and not graded yet when asked for), in (student,
    grader, k, round, combination) order."""

    run_id: str
    answers: list[Answer]


def collect_answers(
    run_id: str,
    generations: Iterable[GenerationRecord],
    grades: Iterable[GradeRecord],
    options: MetricOptions,
    order: Sequence[tuple[str, str]] = (),
    *,
    grader: str | None = None,
) -> AnswerSet:
    """Join each graded answer with the generation record that produced it. With ``grader``
    (the run's grader), answers not graded yet (a partial run) are listed too, without
    verdicts (``Answer.graded`` is False). Answers follow ``order`` ((student, grader)
    pairs, e.g. the leaderboard's), then k, generation round and combination."""
    by_key: dict[tuple[str, int, int, int], GenerationRecord] = {}
    for g in generations:
        by_key[(g.student, g.k, g.generation_round, g.index)] = g
    units = voted_units(grades, options)
    if grader is not None:
        graded = {(u.student, u.k, u.generation_round, u.index) for u in units}
        units += [
            ReportAnswer(
                g.student,
                grader,
                g.k,
                g.generation_round,
                g.index,
                g.topic,
                list(g.skills),
                g.answer,
            )
            for key, g in by_key.items()
            if key not in graded
            and g.status == "ok"
            and g.answer is not None
            and not set(options.filter_skills).intersection(g.skills)
        ]
    rank = {pair: i for i, pair in enumerate(order)}
    units.sort(
        key=lambda u: (
            rank.get((u.student, u.grader), len(rank)),
            u.student,
            u.grader,
            u.k,
            u.generation_round,
            u.index,
        )
    )
    out = []
    for unit in units:
        gen = by_key.get((unit.student, unit.k, unit.generation_round, unit.index))
        out.append(Answer(unit, gen, gen.model if gen is not None and gen.model else ""))
    return AnswerSet(run_id, out)


# exports ----------------------------------------------------------------------------------
def _scores(unit: ReportAnswer) -> dict[str, float | None]:
    s = unit.scores or {}
    return {m: s.get(m) for m in ("full_marks", "all_skills", "skill_fraction")}


def answers_jsonl(data: AnswerSet) -> str:
    """One JSON object per answer: its identity, every grading round's points, the vote and
    the three metric items (what the metrics average), without the long texts. Graded
    answers only."""
    lines = []
    for a in data.answers:
        if not a.graded:
            continue
        u = a.unit
        lines.append(
            json.dumps(
                {
                    "run_id": data.run_id,
                    "student": u.student,
                    "model": a.model,
                    "grader": u.grader,
                    "k": u.k,
                    "generation_round": u.generation_round,
                    "index": u.index,
                    "topic": u.topic,
                    "skills": u.skills,
                    "rounds": [
                        {
                            "grading_round": r,
                            "status": rec.status,
                            "points": rec.points,
                        }
                        for r, rec in sorted(u.rounds.items())
                    ],
                    "voted": u.voted,
                    **_scores(u),
                    "named_skills": u.named,
                },
                ensure_ascii=False,
            )
        )
    return "".join(line + "\n" for line in lines)


def _num_list(points: Sequence[float] | None) -> str:
    return "" if points is None else " ".join(f"{p:g}" for p in points)


def _num(x: float | None) -> str:
    return "" if x is None else f"{x:g}"


def scores_csv(data: AnswerSet) -> str:
    """One row per grading verdict (answer x grading round), with the answer's vote and metric
    items repeated on each of its rows; points space-separated in rubric order."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(SCORES_CSV_HEADER)
    for a in data.answers:
        u = a.unit
        scores = _scores(u)
        for r, rec in sorted(u.rounds.items()):
            writer.writerow(
                [
                    data.run_id,
                    u.student,
                    a.model,
                    u.grader,
                    u.k,
                    u.generation_round,
                    u.index,
                    r,
                    rec.status,
                    _num_list(rec.points),
                    _num_list(u.voted),
                    *[_num(scores[m]) for m in ("full_marks", "all_skills", "skill_fraction")],
                ]
            )
    return buf.getvalue()


# the answer browser's data ----------------------------------------------------------------
class _Strings:
    """A string table: each distinct text stored once, referred to by its position."""

    def __init__(self) -> None:
        self.items: list[str] = []
        self.index: dict[str, int] = {}

    def __call__(self, text: str | None) -> int | None:
        if text is None:
            return None
        i = self.index.get(text)
        if i is None:
            i = self.index[text] = len(self.items)
            self.items.append(text)
        return i


def _prompt_template(prompt: str, answer: str) -> str:
    return prompt.replace(answer, ANSWER_MARK) if answer and answer in prompt else prompt


def browser_rows(data: AnswerSet) -> dict[str, Any]:
    """The answer browser's data: a string table and one compact list per answer.

    Each answer: [student, grader, k, generation round, combination, topic, [skills],
    answer, [voted points] | null, [full marks, all skills, skill fraction] | null,
    [named skills], system prompt, [[user, assistant], ...], [[grading round, status,
    [points] | null, raw reply, grading prompt, attempts], ...], model, [rubric labels]]; texts are
    positions in ``strings`` (the grading prompt with the answer replaced by
    :data:`ANSWER_MARK`)."""
    s = _Strings()
    rows = []
    for a in data.answers:
        u = a.unit
        gen = a.generation
        scores = u.scores
        rows.append(
            [
                s(u.student),
                s(u.grader),
                u.k,
                u.generation_round,
                u.index,
                s(u.topic),
                [s(x) for x in u.skills],
                s(u.answer),
                u.voted,
                None
                if scores is None
                else [scores["full_marks"], scores["all_skills"], scores["skill_fraction"]],
                [s(x) for x in u.named],
                s(gen.system_prompt) if gen is not None else None,
                [[s(t.user), s(t.assistant)] for t in gen.turns] if gen is not None else [],
                [
                    [
                        r,
                        rec.status,
                        rec.points,
                        s(rec.raw),
                        s(_prompt_template(rec.prompt, u.answer)),
                        rec.attempts,
                    ]
                    for r, rec in sorted(u.rounds.items())
                ],
                s(a.model),
                [s(x) for x in rubric_labels(u.skills, u.k)],
            ]
        )
    return {"strings": s.items, "answers": rows}


def browser_payload(data: AnswerSet) -> str:
    """:func:`browser_rows` as gzip-compressed JSON in base64 (what the page embeds: the
    browser inflates it with ``DecompressionStream``; base64 cannot close the script tag)."""
    raw = json.dumps(browser_rows(data), ensure_ascii=False, separators=(",", ":")).encode()
    return base64.b64encode(gzip.compress(raw, compresslevel=9, mtime=0)).decode("ascii")
