"""The mock's answers to reasoning problems (math, multiple choice): a boxed right answer at
the model's quality (its accuracy), a boxed wrong one otherwise, drawn per choice. The mock
cannot solve a problem: whoever starts it hands it the answer key, by problem (the SHA-256 of
the user turn), so demos and tests know what the numbers must be. Pure."""

from __future__ import annotations

import hashlib
import random
import re

_LETTERS = "ABCD"


def problem_key(user_text: str) -> str:
    """The key of a problem in the mock's answer key: the user turn's SHA-256 (hex)."""
    return hashlib.sha256(user_text.encode("utf-8")).hexdigest()


def wrong_answer(answer: str) -> str:
    """An answer that is surely not ``answer``: the next letter, the next integer, or text."""
    text = answer.strip()
    if len(text) == 1 and text.upper() in _LETTERS:
        return _LETTERS[(_LETTERS.index(text.upper()) + 1) % len(_LETTERS)]
    if re.fullmatch(r"-?\d+", text):
        return str(int(text) + 1)
    return r"\text{no answer}"


def reasoning_reply(answer: str, quality: float, rng: random.Random) -> tuple[str, bool]:
    """The reply text and whether it holds the right answer (at rate ``quality``)."""
    right = rng.random() < quality
    shown = answer.strip() if right else wrong_answer(answer)
    text = (
        "Let me work through the problem step by step.\n\n"
        "Checking the computation once more gives the same result.\n\n"
        f"Therefore, the final answer is $\\boxed{{{shown}}}$."
    )
    return text, right
