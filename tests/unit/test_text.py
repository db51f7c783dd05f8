from __future__ import annotations

import pytest

from skillmix.method.text import count_sentences, extract_answer, length_point, sentence_limit


@pytest.mark.parametrize(
    ("reply", "answer"),
    [
        ("Answer: Bees hum. Explanation: it is short.", "Bees hum."),
        ("Answer: first\nAnswer:  second one \n\nExplanation: x", "second one"),
        ('Answer: "Quoted text." Explanations follow', '"Quoted text."'),
        ("no markers at all  ", "no markers at all"),
        ("Answer: keeps Answer-like words until Explanation", "keeps Answer-like words until"),
        ("", ""),
    ],
)
def test_extract_answer(reply: str, answer: str) -> None:
    assert extract_answer(reply) == answer


@pytest.mark.parametrize(
    ("text", "count"),
    [
        ("", 1),
        ("One sentence.", 1),
        ("One. Two. Three.", 3),
        ("Wait! Really? Yes.", 3),
        ('He said "Go." Then he left.', 2),
        ("Mr. Smith met Dr. Jones.", 1),
        ("Mrs. Brown and Prof. Green agreed.", 1),
        # the dots in the title patterns are regex wildcards (a reference quirk kept on purpose)
        ("MrX Smith waved. Then left.", 2),
        ("lower. case after a full stop", 1),
        ("Numbers like 3.5 Are odd.", 1),
        ("It costs 3. Apples are cheap.", 2),
    ],
)
def test_count_sentences(text: str, count: int) -> None:
    assert count_sentences(text) == count


def test_title_pattern_wildcard_merges_like_the_reference() -> None:
    # "Mr? " matches the pattern "Mr. " (dot = any char) and loses its space, so no split
    assert count_sentences("Is it Mr? Yes.") == 1
    assert count_sentences("Is it Mx? Yes.") == 2


@pytest.mark.parametrize(("k", "limit"), [(1, 1), (2, 1), (3, 2), (6, 5)])
def test_sentence_limit(k: int, limit: int) -> None:
    assert sentence_limit(k) == limit


def test_length_point() -> None:
    assert length_point("One. Two.", 3) == 1
    assert length_point("One. Two. Three.", 3) == 0
    assert length_point("One. Two.", 2) == 0
