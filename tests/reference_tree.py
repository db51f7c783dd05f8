"""A small synthetic tree in the reference release's result format (SPEC 7), so that
`legacy.py` and `import-reference` are tested without the external reference folder.

Layout: ``k{K}_s{SEED}_vdefault_r{G}/{student}/records.csv`` (two generation turns) and
``.../graded/by_{grader}_on_text_1_{R}_gpt/records.csv`` (one graded row per generation row),
with the columns the reference writes.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

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


def write_tree(
    root: Path,
    *,
    ks: tuple[int, ...] = (2, 3),
    students: tuple[str, ...] = ("gpt-4", "llama-2"),
    grader: str = "gpt-4",
    rows: int = 4,
    grading_rounds: int = 2,
    seed: int = 10,
) -> Tree:
    tree = Tree(root, ks, students, grader, rows, grading_rounds)
    for k in ks:
        run = root / f"k{k}_s{seed}_vdefault_r1"
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
                            "assistant_0": f"Here's the grading table:\n\n{table}",
                            "model_input_0": "[]",
                            "score_0": f"{sum(points):.1f}",
                            "score_extracted_0": f"{sum(points):.1f}",
                            "points_0": ",".join(f"{p:.1f}" for p in points),
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
