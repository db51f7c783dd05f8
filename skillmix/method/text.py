"""Answer extraction and the sentence counter (SPEC 4 and 5.3), exactly as the reference does them."""

from __future__ import annotations

import re

# In each pattern the dot is the regex wildcard (a reference quirk we keep); replacements are literal.
_TITLE_FIXES = tuple(
    (re.compile(pattern), replacement)
    for pattern, replacement in (
        ("Mr. ", "Mr."),
        ("Mrs. ", "Mrs."),
        ("Ms. ", "Ms."),
        ("Dr. ", "Dr."),
        ("Prof. ", "Prof."),
    )
)
_SENTENCE_BREAK = re.compile(r"[.!?]['\"]* ['\"]*[A-Z]")


def extract_answer(reply: str) -> str:
    """The text after the last ``Answer:`` and before the first ``Explanation``, stripped."""
    return reply.split("Answer:")[-1].split("Explanation")[0].strip()


def count_sentences(text: str) -> int:
    """Sentences as the reference counts them (an empty text counts as one)."""
    for pattern, replacement in _TITLE_FIXES:
        text = pattern.sub(replacement, text)  # no backslashes or groups: literal
    return len(_SENTENCE_BREAK.split(text))


def sentence_limit(k: int) -> int:
    """L = max(1, k - 1): the most sentences an answer combining k skills may have."""
    return max(1, k - 1)


def length_point(answer: str, k: int) -> int:
    """The computed last rubric point: 1 when the answer is within the sentence limit."""
    return 1 if count_sentences(answer) <= sentence_limit(k) else 0
