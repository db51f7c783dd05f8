"""Percent agreement and Fleiss' kappa against hand-computed values."""

from __future__ import annotations

from dataclasses import asdict
from fractions import Fraction

import pytest

from skillmix.method.agreement import (
    agreement,
    count_table,
    expected_agreement,
    fleiss_kappa,
    percent_agreement,
    subject_agreement,
)

# Fleiss (1971) style example: 10 subjects, 14 raters, 5 categories (the table used in most
# textbook presentations). By hand: column totals 20, 28, 39, 21, 32 of 140 ratings; the
# subjects' agreeing-pair counts sum to 688 of 10 * 14 * 13 = 1820 pairs.
FLEISS_TABLE = [
    [0, 0, 0, 0, 14],
    [0, 2, 6, 4, 2],
    [0, 0, 3, 5, 6],
    [0, 3, 9, 2, 0],
    [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0],
    [3, 2, 6, 3, 0],
    [2, 5, 3, 2, 2],
    [6, 5, 2, 1, 0],
    [0, 2, 2, 3, 7],
]


def test_fleiss_1971_example() -> None:
    p_bar = Fraction(688, 1820)
    p_e = Fraction(20**2 + 28**2 + 39**2 + 21**2 + 32**2, 140**2)
    assert percent_agreement(FLEISS_TABLE) == pytest.approx(float(p_bar))
    assert expected_agreement(FLEISS_TABLE) == pytest.approx(float(p_e))
    assert fleiss_kappa(FLEISS_TABLE) == pytest.approx(float((p_bar - p_e) / (1 - p_e)))
    assert fleiss_kappa(FLEISS_TABLE) == pytest.approx(0.210, abs=5e-4)
    assert percent_agreement(FLEISS_TABLE) == pytest.approx(0.378, abs=5e-4)


def test_small_table_by_hand() -> None:
    # Three answers graded three times, points 1/0. Subject agreements 1, 1 and 1/3 (one
    # agreeing pair of three), so P-bar = 7/9; pooled shares 5/9 and 4/9, so P_e = 41/81
    # and kappa = (63/81 - 41/81) / (40/81) = 22/40.
    table = [[3, 0], [0, 3], [2, 1]]
    assert subject_agreement([2, 1]) == pytest.approx(1 / 3)
    assert percent_agreement(table) == pytest.approx(7 / 9)
    assert expected_agreement(table) == pytest.approx(41 / 81)
    assert fleiss_kappa(table) == pytest.approx(0.55)


def test_perfect_agreement_is_one() -> None:
    result = agreement([[1, 1, 1], [0, 0, 0], [1, 1, 1]])
    assert result.percent == 1.0
    assert result.unanimous == 1.0
    assert result.kappa == pytest.approx(1.0)


def test_systematic_disagreement_is_minus_one() -> None:
    # Two rounds that always disagree on a balanced binary item.
    result = agreement([[1, 0], [0, 1]])
    assert result.percent == 0.0
    assert result.unanimous == 0.0
    assert result.kappa == pytest.approx(-1.0)


def test_single_category_has_no_kappa_and_no_division_by_zero() -> None:
    result = agreement([[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]])
    assert result.percent == 1.0
    assert result.expected == 1.0
    assert result.kappa is None
    assert fleiss_kappa([[3], [3]]) is None


def test_empty_and_single_rating_subjects() -> None:
    empty = agreement([])
    assert (empty.subjects, empty.percent, empty.kappa, empty.unanimous) == (0, None, None, None)
    only_singles = agreement([[1], [0]])
    assert only_singles.subjects == 0 and only_singles.kappa is None
    # Subjects with one rating are ignored; the others count with their own number of ratings.
    mixed = agreement([[1], [1, 1, 1], [0, 0, 1]])
    assert mixed.subjects == 2
    assert mixed.ratings == 6
    assert mixed.percent == pytest.approx((1 + 1 / 3) / 2)
    with pytest.raises(ValueError):
        subject_agreement([1, 0])


def test_variable_rating_counts_generalise_fleiss() -> None:
    # A subject rated twice (agreeing) and one rated three times (split 2/1).
    table = [[2, 0], [1, 2]]
    assert percent_agreement(table) == pytest.approx((1 + 1 / 3) / 2)
    assert expected_agreement(table) == pytest.approx((3 / 5) ** 2 + (2 / 5) ** 2)


def test_count_table_orders_categories() -> None:
    assert count_table([[1.0, 0.0, 1.0], [0.5, 0.0]]) == [[1, 0, 2], [1, 1, 0]]
    # Unorderable categories keep their order of appearance.
    assert count_table([["a", 1], [1, 1]]) == [[1, 1], [0, 2]]


def test_as_dict_is_json_ready() -> None:
    data = asdict(agreement([[1, 1], [0, 1]]))
    assert set(data) == {"subjects", "ratings", "percent", "unanimous", "expected", "kappa"}
    assert data["subjects"] == 2 and data["ratings"] == 4
