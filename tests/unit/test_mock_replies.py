"""The mock backend's pure reply functions and its rate limiter arithmetic."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest

from skillmix.backends.mock_config import MockServerConfig, parse_model_spec
from skillmix.backends.mock_faults import (
    Injection,
    InjectionRates,
    RateLimiter,
    format_reset,
    injection_for,
)
from skillmix.backends.mock_prompts import (
    GenerationTask,
    GradingTask,
    classify,
    normalize_messages,
    parse_generation_task,
    parse_grading_task,
)
from skillmix.backends.mock_replies import (
    _BASE_CLAUSES,
    _CUE_PHRASES,
    _NAME_PHRASES,
    _QUESTION_LEAD,
    _TOPIC_LEADS,
    CUE_WORDS,
    MockReply,
    ReplyParams,
    estimate_tokens,
    explicit_name,
    generation_reply,
    grading_reply,
    improved_quality,
    malformed_grading_reply,
    mock_replies,
    mock_reply,
    skill_cue,
)
from skillmix.catalog import Skill, builtin_catalog
from skillmix.errors import SkillmixError
from skillmix.method.grading import parse_grader_output
from skillmix.method.prompts import (
    GradingStyle,
    infer_grading_style,
    render_generation_prompts,
    render_grading_prompt,
)
from skillmix.method.text import count_sentences, extract_answer, sentence_limit
from skillmix.promptset import load_prompt_version

CATALOG = builtin_catalog()
GENERATION = load_prompt_version("generation", "two-turn-v1")
GRADERS = {
    "table": load_prompt_version("grading", "table-v1"),
    "points": load_prompt_version("grading", "points-v1"),
}


def combos(count: int, k: int, seed: int = 0) -> list[tuple[list[Skill], str]]:
    rng = random.Random(seed)
    return [(rng.sample(list(CATALOG.skills), k), rng.choice(CATALOG.topics)) for _ in range(count)]


def first_turn(skills: list[Skill], topic: str) -> list[tuple[str, str]]:
    return [("user", render_generation_prompts(GENERATION, skills, topic)[0])]


def student_answer(skills: list[Skill], topic: str, quality: float, seed: int = 0) -> str:
    """Both turns of the built-in generation prompt; the extracted answer of the last one."""
    turns = render_generation_prompts(GENERATION, skills, topic)
    params = ReplyParams(seed=seed, model="student", quality=quality)
    messages = [("system", "You are a helpful assistant."), ("user", turns[0])]
    first = mock_reply(messages, params).text
    messages += [("assistant", first), ("user", turns[1])]
    return extract_answer(mock_reply(messages, params).text)


def grading_messages(
    skills: list[Skill], topic: str, answer: str, style: GradingStyle
) -> list[tuple[str, str]]:
    return [("user", render_grading_prompt(GRADERS[style], skills, topic, answer))]


def awarded(reply: MockReply) -> tuple[int, ...]:
    """A grading reply's points (grading replies always carry them)."""
    assert reply.points is not None
    return reply.points


# ----------------------------------------------------------------------------- parsing


def test_generation_prompt_is_parsed() -> None:
    skills = [CATALOG.skill("red herring"), CATALOG.skill("metaphor")]
    task = parse_generation_task(first_turn(skills, "Beekeeping"))
    assert task == GenerationTask(skills=("red herring", "metaphor"), topic="Beekeeping", turn=0)
    assert classify(first_turn(skills, "Beekeeping")) == "generation"


def test_other_prompt_layouts_are_parsed() -> None:
    text = (
        "Write something in the context of Sewing that illustrates all of: a, b.\n"
        "Skill: Red Herring\nDefinition: x\nExample: y\nSkill: simile\nDefinition: x\nExample: y"
    )
    assert parse_generation_task([("user", text)]) == GenerationTask(
        skills=("Red Herring", "simile"), topic="Sewing"
    )
    plain = "Give a text in the context of Deep sea diving. Use **irony**: saying the opposite."
    task = parse_generation_task([("user", plain)])
    assert task.topic == "Deep sea diving"
    assert parse_generation_task([("user", "hello")]) == GenerationTask(
        skills=(), topic="the topic"
    )


def test_grading_prompt_is_parsed_in_both_styles() -> None:
    skills = [CATALOG.skill("red herring"), CATALOG.skill("apostrophe (figure of speech)")]
    styles: tuple[tuple[GradingStyle, str], ...] = (
        ("table", "Correctly illustrates"),
        ("points", "Contains"),
    )
    for style, verb in styles:
        messages = grading_messages(skills, "Ancient Rome", "Rome was loud. It was big.", style)
        assert classify(messages) == "grading"
        task = parse_grading_task(messages)
        assert task.style == style
        assert task.skill_items == (
            f"{verb} red herring",
            f"{verb} apostrophe (figure of speech)",
        )
        assert task.topic == "Ancient Rome"
        assert task.length_item == "At most one sentence"
        assert task.answer == "Rome was loud. It was big."


def test_reference_prompts_are_understood(reference: Path) -> None:
    from skillmix.catalog import load_catalog

    catalog = load_catalog(reference / "skills.csv", reference / "topics.txt")
    prompts = reference / "prompts"
    skills = list(catalog.skills[:3])
    topic = catalog.topics[0]
    generation = load_prompt_version("generation", "default", prompts)
    turns = render_generation_prompts(generation, skills, topic)
    task = parse_generation_task([("user", turns[0])])
    assert task.skills == tuple(s.name for s in skills)
    assert task.topic == topic
    answer = extract_answer(mock_reply([("user", turns[0])], ReplyParams()).text)
    for version in ("gpt", "llama"):
        template = load_prompt_version("grading", version, prompts)
        style = infer_grading_style(template)
        prompt = render_grading_prompt(template, skills, topic, answer)
        grading = parse_grading_task([("user", prompt)])
        assert grading.style == style
        assert grading.answer == answer
        assert grading.k == 3
        reply = grading_reply(grading, 0.9, random.Random(1))
        parsed = parse_grader_output(reply.text, 3, style)
        assert parsed.ok, parsed.detail
        assert parsed.points == reply.points


def test_normalize_messages() -> None:
    raw = [
        {"role": "system", "content": "s"},
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {"role": "assistant", "content": None},
    ]
    assert normalize_messages(raw) == (("system", "s"), ("user", "a\nb"), ("assistant", ""))
    for bad in ([], "x", [{"content": "x"}], [{"role": "user", "content": 3}]):
        with pytest.raises(ValueError):
            normalize_messages(bad)


# ----------------------------------------------------------------------------- determinism


def test_same_request_same_reply_and_each_input_matters() -> None:
    skills, topic = combos(1, 3)[0]
    messages = first_turn(skills, topic)
    params = ReplyParams(seed=7, model="m", quality=0.6, temperature=0.7, max_tokens=512)
    reply = mock_reply(messages, params).text
    assert mock_reply(messages, params).text == reply
    variants = [
        ReplyParams(seed=8, model="m", quality=0.6, temperature=0.7, max_tokens=512),
        ReplyParams(seed=7, model="other", quality=0.6, temperature=0.7, max_tokens=512),
        ReplyParams(seed=7, model="m", quality=0.6, temperature=1.0, max_tokens=512),
        ReplyParams(seed=7, model="m", quality=0.6, temperature=0.7, request_seed=3),
    ]
    assert all(mock_reply(messages, v).text != reply for v in variants)
    assert mock_reply(messages, params, choice=1).text != reply


def test_choices_are_independent_samples() -> None:
    skills, topic = combos(1, 4, seed=3)[0]
    messages = first_turn(skills, topic)
    replies = mock_replies(messages, ReplyParams(), n=5)
    assert len({r.text for r in replies}) == 5
    assert [r.text for r in replies] == [r.text for r in mock_replies(messages, ReplyParams(), 5)]
    assert replies[2].text == mock_reply(messages, ReplyParams(), choice=2).text


def test_grading_rounds_sometimes_disagree() -> None:
    skills, topic = combos(1, 3, seed=5)[0]
    messages = grading_messages(skills, topic, student_answer(skills, topic, 0.5), "table")
    points = {r.points for r in mock_replies(messages, ReplyParams(quality=0.8), n=30)}
    assert len(points) > 1


# ----------------------------------------------------------------------------- generation


def test_generation_reply_shape_and_topic() -> None:
    mentioned = 0
    for skills, topic in combos(60, 3, seed=11):
        reply = mock_reply(first_turn(skills, topic), ReplyParams(quality=0.7))
        assert reply.kind == "generation"
        assert reply.text.startswith("Answer: ")
        assert "\n\nExplanation:\n" in reply.text
        explanation = reply.text.split("Explanation:")[1].strip().splitlines()
        assert len(explanation) == 3
        answer = extract_answer(reply.text)
        assert answer and "Explanation" not in answer
        for sentence in re.split(r"(?<=[.!?]) ", answer):
            assert sentence[0].isupper() and sentence[-1] in ".!?"
        mentioned += topic.lower() in answer.lower()
    assert mentioned >= 50


def test_sentence_counts_vary_around_the_limit() -> None:
    within = over = 0
    for k in (2, 3, 4, 5):
        for skills, topic in combos(40, k, seed=k):
            answer = extract_answer(mock_reply(first_turn(skills, topic), ReplyParams()).text)
            count = count_sentences(answer)
            assert sentence_limit(k) <= count <= sentence_limit(k) + 2
            if count <= sentence_limit(k):
                within += 1
            else:
                over += 1
    assert within > over > 10


def test_cues_follow_quality_and_low_quality_names_skills() -> None:
    def stats(quality: float) -> tuple[int, int]:
        cues = named = 0
        for skills, topic in combos(100, 3, seed=2):
            reply = mock_reply(first_turn(skills, topic), ReplyParams(quality=quality))
            answer = extract_answer(reply.text).lower()
            cues += sum(skill_cue(s.name) in answer for s in skills)
            named += sum(explicit_name(s.name) in answer for s in skills)
        return cues, named

    good_cues, good_named = stats(0.95)
    poor_cues, poor_named = stats(0.2)
    assert good_cues > 250 > 100 > poor_cues
    assert poor_named > good_named
    assert poor_named > 0


def test_later_turns_improve() -> None:
    assert improved_quality(0.5, 0) == 0.5
    assert improved_quality(0.5, 1) == pytest.approx(0.65)
    skills, topic = combos(1, 3)[0]
    task0 = GenerationTask(skills=tuple(s.name for s in skills), topic=topic, turn=0)
    task1 = GenerationTask(skills=task0.skills, topic=topic, turn=1)
    rng_a, rng_b = random.Random(1), random.Random(1)
    assert generation_reply(task0, 1.0, rng_a).text == generation_reply(task1, 1.0, rng_b).text
    counts = [0, 0]
    for turn in (0, 1):
        for seed in range(200):
            task = GenerationTask(skills=task0.skills, topic=topic, turn=turn)
            counts[turn] += len(generation_reply(task, 0.4, random.Random(seed)).cues)
    assert counts[1] > counts[0]


def test_max_tokens_truncates() -> None:
    skills, topic = combos(1, 3)[0]
    reply = mock_reply(first_turn(skills, topic), ReplyParams(max_tokens=5))
    assert reply.finish_reason == "length"
    assert len(reply.text) == 20
    assert estimate_tokens("abcde") == 2
    assert estimate_tokens("") == 0


def test_filler_text_never_contains_a_cue() -> None:
    assert len(set(CUE_WORDS)) == len(CUE_WORDS) >= 80
    filler = " ".join(
        (*_BASE_CLAUSES, *_TOPIC_LEADS, *_CUE_PHRASES, *_NAME_PHRASES, _QUESTION_LEAD)
    )
    for cue in CUE_WORDS:
        assert re.fullmatch(r"[a-z]+", cue)
        assert not re.search(rf"\b{cue}\b", filler, re.IGNORECASE), cue
    assert skill_cue("Red  Herring ") == skill_cue("red herring")


# ----------------------------------------------------------------------------- grading


@pytest.mark.parametrize("style", ["table", "points"])
def test_grading_replies_parse_and_points_vary(style: GradingStyle) -> None:
    seen: dict[int, set[int]] = {}
    for skills, topic in combos(60, 3, seed=21):
        answer = student_answer(skills, topic, 0.6)
        messages = grading_messages(skills, topic, answer, style)
        for reply in mock_replies(messages, ReplyParams(model="grader", quality=0.9), n=2):
            parsed = parse_grader_output(reply.text, 3, style)
            assert parsed.ok, (parsed.detail, reply.text)
            assert parsed.points == reply.points
            assert parsed.total == sum(reply.points or ())
            for index, point in enumerate(reply.points or ()):
                seen.setdefault(index, set()).add(point)
        if style == "table":
            rows = [line for line in reply.text.splitlines() if line.startswith("| Correctly")]
            assert rows[0].startswith(f"| Correctly illustrates {skills[0].name.lower()} |")
    assert all(values == {0, 1} for values in seen.values())


def test_perfect_grader_awards_the_true_verdicts() -> None:
    skills = [CATALOG.skill("red herring"), CATALOG.skill("metaphor"), CATALOG.skill("simile")]
    cue = skill_cue("metaphor")
    answer = f"In Pottery, the wheel spins like a {cue}. Clay is patient."
    task = parse_grading_task(grading_messages(skills, "Pottery", answer, "points"))
    points = {awarded(grading_reply(task, 1.0, random.Random(s))) for s in range(50)}
    red, simile = skill_cue("red herring"), skill_cue("simile")
    expected_skills = (int(red == cue), 1, int(simile == cue))
    assert {p[:3] for p in points} == {expected_skills}
    assert {p[3] for p in points} == {1}  # topic mentioned
    assert {p[5] for p in points} == {1}  # two sentences, limit two
    assert {p[4] for p in points} == {0, 1}  # "makes sense" is right 95% of the time


@pytest.mark.parametrize("style", ["table", "points"])
def test_malformed_replies_do_not_parse(style: GradingStyle) -> None:
    skills, topic = combos(1, 4, seed=9)[0]
    messages = grading_messages(skills, topic, student_answer(skills, topic, 0.7), style)
    task = parse_grading_task(messages)
    points = grading_reply(task, 0.9, random.Random(0)).points or ()
    for variant in range(6):
        text = malformed_grading_reply(task, points, variant, random.Random(variant))
        assert not parse_grader_output(text, 4, style).ok, text
    bad = mock_replies(messages, ReplyParams(), n=2, malformed={1: 2})
    assert not bad[0].malformed and bad[1].malformed and bad[1].points is None
    assert not parse_grader_output(bad[1].text, 4, style).ok


def test_better_students_get_better_grades() -> None:
    def mean_points(quality: float) -> float:
        total = 0.0
        chosen = combos(200, 3, seed=99)
        for index, (skills, topic) in enumerate(chosen):
            answer = student_answer(skills, topic, quality, seed=index)
            messages = grading_messages(skills, topic, answer, "table")
            reply = mock_reply(messages, ReplyParams(model="grader", quality=0.95))
            total += sum(reply.points or ())
        return total / len(chosen)

    strong, weak = mean_points(0.9), mean_points(0.3)
    assert strong > weak + 0.5


def test_grading_task_items() -> None:
    task = GradingTask(
        skill_items=("Contains a",),
        skill_names=("a",),
        topic="T",
        length_item="At most one sentence",
        answer="x",
        style="points",
    )
    assert task.items == ("Contains a", "Pertains to T", "Text makes sense", "At most one sentence")


# ----------------------------------------------------------------------------- server pieces


def test_rate_limiter_requests_window() -> None:
    limiter = RateLimiter(rpm=2, window=60.0)
    first = limiter.acquire(10, now=100.0)
    assert first.allowed and first.remaining_requests == 1 and first.reset_requests == 60.0
    assert limiter.acquire(10, now=110.0).remaining_requests == 0
    third = limiter.acquire(10, now=115.0)
    assert not third.allowed and third.reason == "requests"
    assert third.retry_after == pytest.approx(45.0)
    headers = third.headers()
    assert headers["Retry-After"] == "45"
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert headers["x-ratelimit-reset-requests"] == "45s"
    assert "x-ratelimit-limit-tokens" not in headers
    assert limiter.acquire(10, now=160.0).allowed  # the first one left the window
    assert not limiter.acquire(10, now=169.9).allowed
    assert limiter.acquire(10, now=170.0).allowed


def test_rate_limiter_tokens_window() -> None:
    limiter = RateLimiter(tpm=1000)
    assert limiter.acquire(400, now=0.0).allowed
    assert limiter.acquire(400, now=10.0).remaining_tokens == 200
    refused = limiter.acquire(500, now=20.0)
    assert not refused.allowed and refused.reason == "tokens"
    assert refused.retry_after == pytest.approx(40.0)  # the first 400 leave at t=60
    assert refused.headers()["x-ratelimit-remaining-tokens"] == "200"
    assert limiter.acquire(200, now=20.0).allowed  # a smaller request still fits
    too_big = limiter.acquire(5000, now=30.0)
    assert not too_big.allowed and too_big.too_large
    assert not limiter.acquire(500, now=60.0).allowed  # 400 + 200 still in the window
    assert limiter.acquire(400, now=60.0).allowed


def test_rate_limiter_retry_after_is_at_least_one_second() -> None:
    limiter = RateLimiter(rpm=1)
    limiter.acquire(1, now=0.0)
    refused = limiter.acquire(1, now=59.95)
    assert refused.headers()["Retry-After"] == "1"
    assert refused.headers()["x-ratelimit-reset-requests"] == "0.05s"
    assert RateLimiter().acquire(10**9, now=0.0).headers() == {}


def test_format_reset() -> None:
    assert format_reset(1.2) == "1.2s"
    assert format_reset(0) == "0s"
    assert format_reset(-1) == "0s"
    assert format_reset(59.9999) == "60s"


def test_model_specs_and_config_validation() -> None:
    assert parse_model_spec("llama-3") == ("llama-3", 0.7)
    assert parse_model_spec("org/m=0.25") == ("org/m", 0.25)
    for bad in ("=0.5", "m=1.5", "m=high"):
        with pytest.raises(SkillmixError):
            parse_model_spec(bad)
    assert MockServerConfig(models={"a": 0.2}).quality_of("b") is None
    assert MockServerConfig().quality_of("anything") == 0.7
    for bad_config in (
        MockServerConfig(fail_rate=1.5),
        MockServerConfig(latency_ms=-1),
        MockServerConfig(rpm=-3),
        MockServerConfig(port=70000),
        MockServerConfig(api_key=" "),
    ):
        with pytest.raises(SkillmixError):
            bad_config.validate()


def test_injection_is_a_pure_function_of_seed_request_and_try() -> None:
    rates = InjectionRates(drop=0.2, fail=0.3, stall=0.1, malformed=0.5)
    draws = [injection_for(7, "req", t, 4, rates) for t in range(40)]
    assert draws == [injection_for(7, "req", t, 4, rates) for t in range(40)]
    # later tries draw afresh (a retry can succeed), and other seeds or requests differ
    assert len({(d.fail, d.drop, d.stall, tuple(d.malformed.items())) for d in draws}) > 1
    assert any(not (d.fail or d.drop or d.stall) for d in draws)
    assert draws != [injection_for(8, "req", t, 4, rates) for t in range(40)]
    assert draws != [injection_for(7, "other", t, 4, rates) for t in range(40)]
    assert all(set(d.malformed) <= set(range(4)) for d in draws)
    everything = injection_for(1, "r", 0, 3, InjectionRates(1.0, 1.0, 1.0, 1.0))
    assert everything.drop and everything.fail and everything.stall
    assert set(everything.malformed) == {0, 1, 2}
    assert injection_for(1, "r", 0, 3, InjectionRates()) == Injection(jitter=everything.jitter)
