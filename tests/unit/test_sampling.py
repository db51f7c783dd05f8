from __future__ import annotations

import json
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skillmix.errors import SkillmixError
from skillmix.method.sampling import sample_combinations
from tests.helpers import run_cli

SKILLS = [f"skill {i}" for i in range(10)]
TOPICS = [f"Topic {i}" for i in range(10)]


def replay_reference(skills, topics, k, n, seed, order_seed):
    """The reference sampler written out with the global random module, as SPEC 3 says."""
    state = random.getstate()
    try:
        random.seed(seed)
        pool, combos = list(skills), []
        for _ in range(n):
            random.shuffle(pool)
            combos.append(pool[:k])
        pool_t, chosen = list(topics), []
        for _ in combos:
            random.shuffle(pool_t)
            chosen.append(pool_t[0])
        random.seed(order_seed)
        for c in combos:
            random.shuffle(c)
        return [(t, tuple(c)) for t, c in zip(chosen, combos, strict=True)]
    finally:
        random.setstate(state)


@settings(max_examples=60, deadline=None)
@given(
    k=st.integers(1, 10),
    n=st.integers(1, 30),
    seed=st.integers(0, 2**32),
    order_seed=st.one_of(st.text(max_size=8), st.integers(0, 1000)),
)
def test_reference_mode_equals_global_random_replay(k, n, seed, order_seed) -> None:
    combos = sample_combinations(SKILLS, TOPICS, k, n, seed=seed, order_seed=order_seed)
    assert [(c.topic, c.skills) for c in combos] == replay_reference(
        SKILLS, TOPICS, k, n, seed, order_seed
    )
    assert [c.index for c in combos] == list(range(n))
    assert all(len(set(c.skills)) == k for c in combos)


def test_inputs_are_not_modified_and_results_are_deterministic() -> None:
    skills, topics = list(SKILLS), list(TOPICS)
    a = sample_combinations(skills, topics, 3, 5, seed=1)
    b = sample_combinations(skills, topics, 3, 5, seed=1)
    assert a == b
    assert skills == SKILLS and topics == TOPICS
    assert sample_combinations(skills, topics, 3, 5, seed=2) != a


def test_draws_for_different_k_are_nested() -> None:
    small = sample_combinations(SKILLS, TOPICS, 2, 20, seed=7)
    large = sample_combinations(SKILLS, TOPICS, 5, 20, seed=7)
    for s, big in zip(small, large, strict=True):
        assert set(s.skills) <= set(big.skills)
        assert s.topic == big.topic


def test_distinct_mode_never_repeats_a_skill_set() -> None:
    combos = sample_combinations(SKILLS, TOPICS, 2, math.comb(10, 2), seed=3, mode="distinct")
    sets = [frozenset(c.skills) for c in combos]
    assert len(set(sets)) == len(sets) == 45
    # the reference mode with the same seed does repeat sets at this size
    ref = sample_combinations(SKILLS, TOPICS, 2, 45, seed=3)
    assert len({frozenset(c.skills) for c in ref}) < 45


def test_distinct_mode_refuses_impossible_requests() -> None:
    with pytest.raises(SkillmixError, match="cannot draw 46 distinct"):
        sample_combinations(SKILLS, TOPICS, 2, 46, seed=3, mode="distinct")


@pytest.mark.parametrize(
    ("k", "n", "message"),
    [
        (11, 1, "larger than the number of active skills (10)"),
        (0, 1, "at least 1"),
        (2, 0, "at least 1"),
    ],
)
def test_bad_sizes(k: int, n: int, message: str) -> None:
    with pytest.raises(SkillmixError, match=message.replace("(", r"\(").replace(")", r"\)")):
        sample_combinations(SKILLS, TOPICS, k, n, seed=1)


def test_cli_sample_json_and_errors(tmp_path) -> None:
    result = run_cli("sample", "--k", "3", "--n", "4", "--seed", "5", "--format", "json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert len(data) == 4 and all(
        set(d) == {"topic", "skills"} and len(d["skills"]) == 3 for d in data
    )
    bad = run_cli("sample", "--k", "500", "--n", "4")
    assert bad.exit_code == 2
    assert bad.stderr.count("\n") == 1 and "k=500" in bad.stderr
    assert bad.stdout == ""


@pytest.mark.parametrize("n", ["100000000", "100001", "0", "-3"])
def test_cli_sample_caps_n_at_a_runs_limit(n: str) -> None:
    from skillmix.config import MAX_COMBINATIONS

    result = run_cli("sample", "--k", "2", "--n", n)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: --n: {n} is out of range")
    assert f"1 to {MAX_COMBINATIONS}" in result.stderr and result.stderr.count("\n") == 1
    assert result.stdout == ""


def test_cli_sample_help_states_the_cap() -> None:
    from skillmix.config import MAX_COMBINATIONS

    help_text = " ".join(run_cli("sample", "--help").stdout.split())
    assert f"1 to {MAX_COMBINATIONS}" in help_text
