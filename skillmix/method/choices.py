"""Multiple-choice questions (GPQA): a seeded option order and SkyThought's answer letter.

SkyThought shuffles the four options with the global `random` state, so its letters cannot be
reproduced; here the order comes from (seed, question id) and is recorded with the question.
The answer is read as SkyThought's `get_multiple_choice_answer` reads it: the last standalone
letter A-D in the upper-cased response (so a trailing word "a" counts, as it does there).
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass

LETTERS = ("A", "B", "C", "D")


@dataclass(frozen=True)
class ShuffledChoices:
    """The options in shown order, the correct letter and the order (indexes into the input,
    0 being the correct answer) to record per question."""

    options: tuple[str, ...]
    correct_letter: str
    order: tuple[int, ...]

    def prompt_text(self) -> str:
        """SkyThought's option line: "A) x, B) y, C) z, D) w"."""
        return ", ".join(
            f"{letter}) {text}" for letter, text in zip(LETTERS, self.options, strict=True)
        )


def shuffle_choices(
    correct: str, incorrect: list[str], seed: int, key: str = ""
) -> ShuffledChoices:
    """The correct answer and the wrong ones in an order fixed by `seed` and `key` (the question
    id), the same on every machine and Python version."""
    answers = [correct, *incorrect]
    if len(answers) > len(LETTERS):
        raise ValueError(f"at most {len(LETTERS)} options, got {len(answers)}")
    digest = hashlib.sha256(f"{seed}\x00{key}".encode()).digest()
    order = list(range(len(answers)))
    random.Random(int.from_bytes(digest[:8], "big")).shuffle(order)
    options = tuple(answers[i] for i in order)
    return ShuffledChoices(options, LETTERS[order.index(0)], tuple(order))


def multiple_choice_answer(response: str) -> str:
    """The last standalone A-D in the response (case-insensitive), else the response trimmed."""
    letters = re.findall(r"\b(A|B|C|D)\b", response.upper())
    pred = letters[-1] if letters else response.strip().strip(".")
    return pred.rstrip(".").rstrip("/")


def choice_correct(response: str, correct_letter: str) -> bool:
    """SkyThought's GPQA verdict: the extracted letter equals the recorded correct letter."""
    return multiple_choice_answer(response) == correct_letter
