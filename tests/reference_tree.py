"""A small synthetic tree in the reference release's result format (SPEC 7), so that
`legacy.py` and `import-reference` are tested without the external reference folder.

Layout: ``k{K}_s{SEED}_vdefault_r{G}/{student}/records.csv`` (two generation turns) and
``.../graded/by_{grader}_on_text_1_{R}_gpt/records.csv`` (one graded row per generation row),
with the columns the reference writes.
"""

from __future__ import annotations

import csv
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

GEN_COLUMNS = [
    "k", "skills", "topic", "system prompt",
    "user_0", "assistant_0", "model_input_0", "text_0",
    "user_1", "assistant_1", "model_input_1", "text_1",
]  # fmt: skip
GRADE_COLUMNS = [
    "k", "skills", "topic", "system prompt", "user_0", "assistant_0", "model_input_0",
    "score_0", "score_extracted_0", "points_0", "num_sentences_manual_in_student_answer_0",
    "true_sentence_lim_pt_0", "num_sentences_extracted_eq_num_sentences_model_0",
]  # fmt: skip
SKILLS = ["metaphor", "red herring", "spatial reasoning", "modus ponens"]
TOPICS = ["Sewing", "Gardening", "Chess"]


@dataclass(frozen=True)
class Tree:
    root: Path
    ks: tuple[int, ...]
    students: tuple[str, ...]
    grader: str
    rows: int  # generations per (k, student)
    grading_rounds: int

    def points(self, k: int, student: str, index: int) -> list[float]:
        """The points the grader gave: every criterion met, except the first skill of odd
        rows for the second student."""
        points = [1.0] * (k + 3)
        if student == self.students[-1] and index % 2 == 1:
            points[0] = 0.0
        return points


def _write(path: Path, columns: list[str], rows: list[dict[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


PointsCell = Callable[[int, str, int, int, int], str]  # (k, student, index, g, r) -> points_0


def write_tree(
    root: Path,
    *,
    ks: tuple[int, ...] = (2, 3),
    students: tuple[str, ...] = ("gpt-4", "llama-2"),
    grader: str = "gpt-4",
    rows: int = 4,
    grading_rounds: int = 2,
    generation_rounds: int = 1,
    seed: int = 10,
    points_cell: PointsCell | None = None,
    identical_rounds: bool = False,
) -> Tree:
    """The tree; ``points_cell`` overrides the ``points_0`` cell of each graded row (malformed
    lists, fractions), else every row holds :meth:`Tree.points`. The grading rounds' replies
    differ, unless ``identical_rounds`` (as the reference's ``grade.py --nruns`` writes them)."""
    tree = Tree(root, ks, students, grader, rows, grading_rounds)
    for k, g in ((k, g) for k in ks for g in range(1, generation_rounds + 1)):
        run = root / f"k{k}_s{seed}_vdefault_r{g}"
        for student in students:
            generations: list[dict[str, str]] = []
            gradeds: dict[int, list[dict[str, str]]] = {r: [] for r in range(1, grading_rounds + 1)}
            for i in range(rows):
                skills = [SKILLS[(i + j) % len(SKILLS)] for j in range(k)]
                topic = TOPICS[i % len(TOPICS)]
                cell = ", \n".join(skills)
                answers = [f"{topic} draft {i} of {student}.", f"{topic} answer {i} of {student}."]
                generations.append(
                    {
                        "k": str(k),
                        "skills": cell,
                        "topic": topic,
                        "system prompt": "You are a helpful assistant.",
                        "user_0": f"Please write about {topic} with {', '.join(skills)}.",
                        "assistant_0": f"Answer: {answers[0]}\n\nExplanation: it does.",
                        "model_input_0": "[]",
                        "text_0": answers[0],
                        "user_1": "Thanks very much. Could you please improve it?",
                        "assistant_1": f"Answer: {answers[1]}\n\nExplanation: better.",
                        "model_input_1": "[]",
                        "text_1": answers[1],
                    }
                )
                points = tree.points(k, student, i)
                table = "\n".join(
                    ["| Criteria | Points Earned |", "|---|---|"]
                    + [
                        f"| Correctly illustrates {s} | {p:g} |"
                        for s, p in zip(skills, points[:k], strict=True)
                    ]
                    + [
                        f"| Pertains to {topic} | 1 |",
                        "| Up to one sentence | 1 |",
                        "| Total | - |",
                    ]
                )
                for r in gradeds:
                    gradeds[r].append(
                        {
                            "k": str(k),
                            "skills": ",  \n".join(skills),  # graded files add a space
                            "topic": topic,
                            "system prompt": "You are a helpful assistant.",
                            "user_0": f"Please grade the student's answer about {topic}.",
                            "assistant_0": f"Here's the grading table{'' if identical_rounds else f' (sample {r})'}:\n\n{table}",
                            "model_input_0": "[]",
                            "score_0": f"{sum(points):.1f}",
                            "score_extracted_0": f"{sum(points):.1f}",
                            "points_0": points_cell(k, student, i, g, r)
                            if points_cell
                            else ",".join(f"{p:.1f}" for p in points),
                            "num_sentences_manual_in_student_answer_0": "1",
                            "true_sentence_lim_pt_0": "1.0",
                            "num_sentences_extracted_eq_num_sentences_model_0": "True",
                        }
                    )
            _write(run / student / "records.csv", GEN_COLUMNS, generations)
            for r, graded in gradeds.items():
                folder = run / student / "graded" / f"by_{grader}_on_text_1_{r}_gpt"
                _write(folder / "records.csv", GRADE_COLUMNS, graded)
    return tree


def reference_prints(
    runs: Path,
    student: str,
    *,
    k: int,
    seed: int,
    grader: str = "gpt-4",
    generation_version: str = "default",
    grading_version: str = "gpt",
    generation_rounds: int,
    grading_rounds: int,
    vote: str = "majority",
    gen: str = "max",
    filter_name: bool = False,
    filter_skills: Sequence[str] = (),
    dtype: type[np.floating] = np.float32,
) -> str:
    """What the reference's aggregator prints for one (student, k): ``mean ± stderr`` of Full
    Marks, All Skills and Skill Fraction, space-separated. Its steps, read straight from the
    CSV files (an independent check of the importer and the aggregator): points cells as
    strings (padded with 0, truncated), the stored length point, one array converted with
    ``astype(np.float32)``, np.rint of the round mean, int64 0/1 items for Full Marks and All
    Skills, a float32 Skill Fraction, ``std(ddof=1) / np.sqrt(n)``. ``dtype=np.float64``
    gives the same steps in float64 (what the reference would print in double precision)."""
    size = k + 3
    score: list[list[list[object]]] = []
    valid: list[int] = []
    for g in range(1, generation_rounds + 1):
        for r in range(1, grading_rounds + 1):
            folder = (
                runs
                / f"k{k}_s{seed}_v{generation_version}_r{g}"
                / student
                / "graded"
                / f"by_{grader}_on_text_1_{r}_{grading_version}"
            )
            csv.field_size_limit(2**31 - 1)
            with (folder / "records.csv").open(encoding="utf-8", newline="") as fh:
                rows = list(csv.DictReader(fh))
            current: list[list[object]] = []
            valid = []
            for idx, row in enumerate(rows):
                points: list[object] = list(row["points_0"].split(",")) if row["points_0"] else []
                if len(points) != size:
                    points = (points + [0] * size)[:size] if points else [0] * size
                points[-1] = float(row["true_sentence_lim_pt_0"])
                if filter_name:
                    text = row["user_0"].split(
                        "For reference, here are the definitions for the skills"
                    )[0]
                    text = text.split("The student's answer was: ")[1].strip().lower()
                    names = [s.split("(")[0].strip().lower() for s in row["skills"].split(",")]
                    for j, name in enumerate(names):
                        if name in text:
                            points[j] = 0
                if not any(s.strip() in filter_skills for s in row["skills"].split(",")):
                    valid.append(idx)
                current.append(points)
            score.append(current)
    arr = np.array(score).astype(dtype).reshape(generation_rounds, grading_rounds, -1, size)
    arr = np.rint(arr.mean(axis=1)) if vote == "majority" else arr.mean(axis=1)
    s, o = arr[:, :, :k].sum(axis=2), arr[:, :, k:size].sum(axis=2)
    metrics = [
        np.where(arr.sum(axis=2) == size, 1, 0),
        np.where(s == k, 1, 0) * np.where(o >= 2, 1, 0),
        np.where(o == 3, s / k, 0),
    ]
    out = []
    n = len(valid)
    for m in metrics:
        m = m[:, valid]
        m = m.max(axis=0) if gen == "max" else m.mean(axis=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # the reference prints nan for n = 1
            out.append(f"{m.mean():.2f} ± {m.std(ddof=1) / np.sqrt(n):.3f}")
    return " ".join(out)
