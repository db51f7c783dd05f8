"""Deterministic replies of the mock backend: pure functions, no I/O, no clocks, no global state.

A reply depends only on the server seed, the model (name and quality), the conversation, the
sampling parameters that matter (temperature, max_tokens, seed) and the choice index. Every
random draw comes from a :class:`random.Random` seeded with the SHA-256 of a canonical JSON
document, so the same request always gets the same bytes back.

The mock understands two kinds of request:

* **generation** (a student): skills and topic are read from the prompt; the passage shows each
  skill through its *cue*, a word picked from :data:`CUE_WORDS` by hashing the skill name.
  A student of quality ``q`` includes each cue with probability ``q``, names a skill outright
  with probability ``(1 - q) * 0.25``, keeps to the sentence limit with probability ``q`` and
  mentions the topic with probability 0.97. Later turns (the conversation already has an
  assistant message) answer again with the quality raised by ``(1 - q) * 0.3``.
* **grading** (a grader): the last user message holds the rubric (``Pertains to ...``,
  ``Text makes sense``). The true verdict of a skill item is "its cue appears in the answer",
  the topic item "the topic appears", the sense item is 1 with probability 0.95 and the length
  item is the sentence count check. A grader of accuracy ``a`` flips each verdict with
  probability ``1 - a``. Replies follow the table or points style of the prompt and parse
  cleanly with :func:`skillmix.method.grading.parse_grader_output`; the malformed variants
  (:func:`malformed_grading_reply`) do not.

Reading the request (messages, prompt, rubric) lives in :mod:`skillmix.backends.mock_prompts`;
the server's seeded faults and rate limits in :mod:`skillmix.backends.mock_faults`.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from skillmix.backends.mock_prompts import (
    GenerationTask,
    GradingTask,
    Message,
    RequestKind,
    Task,
    parse_task,
)
from skillmix.backends.mock_reasoning import problem_key, reasoning_reply
from skillmix.method.text import count_sentences, extract_answer, sentence_limit

TOPIC_MENTION_RATE = 0.97
EXPLICIT_NAME_FACTOR = 0.25
IMPROVEMENT_FACTOR = 0.3
SENSE_RATE = 0.95
MALFORMED_VARIANTS = 3
"""How many kinds of malformed grading reply there are (see :func:`malformed_grading_reply`)."""

CUE_WORDS: tuple[str, ...] = (
    "lantern", "saffron", "compass", "harbor", "violin", "glacier", "teapot", "saddle",
    "banjo", "falcon", "telescope", "meadow", "anchor", "candle", "ember", "velvet",
    "thistle", "marble", "copper", "cathedral", "tapestry", "kettle", "hourglass", "sparrow",
    "granite", "canyon", "feather", "labyrinth", "oyster", "quill", "chandelier", "bonfire",
    "cinnamon", "lagoon", "walnut", "juniper", "parchment", "trumpet", "barometer",
    "cobblestone", "driftwood", "emerald", "fjord", "gondola", "hammock", "iceberg", "jasmine",
    "kaleidoscope", "lullaby", "pinecone", "nutmeg", "obelisk", "pelican", "quartz", "scarecrow",
    "tambourine", "umbrella", "volcano", "windmill", "xylophone", "zeppelin", "acorn",
    "blizzard", "carousel", "dandelion", "fountain", "gargoyle", "igloo", "jellyfish",
    "locomotive", "magnet", "nightingale", "seashell", "porcelain", "quarry", "riverboat",
    "sundial", "thunderstorm", "unicorn", "kingfisher", "waterfall", "accordion", "bagpipe",
    "cactus", "dolphin", "firefly", "harmonica", "tortoise",
)  # fmt: skip
"""The cue vocabulary: distinctive but natural nouns (one per skill, chosen by hashing)."""

# Sentence material. None of it contains a cue word, a sentence break or a rubric keyword.
_BASE_CLAUSES = (
    "the work rewards patience more than talent",
    "small details make all the difference",
    "every beginner learns this the hard way",
    "the best results come from steady practice",
    "nobody gets it right on the first try",
    "the old hands still argue about the basics",
    "there is always one more thing to learn",
    "a good plan matters more than good luck",
    "the quiet moments teach the most",
    "experience slowly turns mistakes into habits",
    "the simplest approach often works best",
    "timing matters more than anyone admits",
    "what looks easy takes years to master",
    "each season brings its own surprises",
    "care is what separates good from great",
    "people remember the stories more than the rules",
)
_TOPIC_LEADS = (
    "In {topic}, ",
    "When it comes to {topic}, ",
    "Anyone who has tried {topic} knows that ",
    "Ask anyone who loves {topic} and they will say ",
)
_CUE_PHRASES = (
    "much like {a} {cue} left out in the rain",
    "as steady as {a} {cue}",
    "the way {a} {cue} catches the morning light",
    "with {a} {cue} never far from mind",
    "as if guided by {a} {cue}",
    "like {a} {cue} in a quiet room",
    "with all the charm of {a} {cue}",
    "as patient as {a} {cue} at dusk",
)
_NAME_PHRASES = (
    "a textbook case of {name}",
    "which some would simply call {name}",
    "in a clear bit of {name}",
)
_QUESTION_LEAD = "Who would have guessed that "


@dataclass(frozen=True)
class ReplyParams:
    """What, besides the conversation, a reply depends on."""

    seed: int = 0
    model: str = "mock"
    quality: float = 0.7
    temperature: float | None = None
    max_tokens: int | None = None
    request_seed: int | None = None


@dataclass(frozen=True)
class MockReply:
    """One choice: its text, why it stopped, and (grading) the points it awards."""

    text: str
    kind: RequestKind
    finish_reason: Literal["stop", "length"] = "stop"
    points: tuple[int, ...] | None = None
    """Grading replies: the awarded points in rubric order (what a parser should read)."""
    cues: tuple[str, ...] = ()
    """Generation replies: the cue words the passage contains."""
    malformed: bool = False


# ----------------------------------------------------------------------------- helpers


def estimate_tokens(text: str) -> int:
    """The mock's token estimate: ceil(characters / 4)."""
    return math.ceil(len(text) / 4)


def normalize_skill_name(name: str) -> str:
    return " ".join(name.lower().split())


def skill_cue(name: str) -> str:
    """The cue word of a skill: a hash of its normalised name picks one of :data:`CUE_WORDS`."""
    digest = hashlib.sha256(normalize_skill_name(name).encode("utf-8")).digest()
    return CUE_WORDS[int.from_bytes(digest[:8], "big") % len(CUE_WORDS)]


def _cue_pattern(cue: str) -> re.Pattern[str]:
    return re.compile(rf"\b{re.escape(cue)}\b", re.IGNORECASE)


def contains_cue(text: str, cue: str) -> bool:
    """Whether ``cue`` appears in ``text`` as a word (case-insensitive)."""
    return _cue_pattern(cue).search(text) is not None


def explicit_name(name: str) -> str:
    """How a passage names a skill: cut at the first ``(``, stripped, lower-cased."""
    return " ".join(name.split("(")[0].split()).lower()


def _canonical(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def rng_from(data: Any) -> random.Random:
    """A Random seeded by the first 8 bytes of the SHA-256 of ``data`` as canonical JSON."""
    digest = hashlib.sha256(_canonical(data)).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def request_digest(messages: Sequence[Message], params: ReplyParams) -> str:
    """Hex SHA-256 of everything a reply depends on except the choice index."""
    doc = {
        "v": 1,
        "seed": params.seed,
        "model": params.model,
        "quality": params.quality,
        "messages": [list(m) for m in messages],
        "temperature": None if params.temperature is None else float(params.temperature),
        "max_tokens": params.max_tokens,
        "request_seed": params.request_seed,
    }
    return hashlib.sha256(_canonical(doc)).hexdigest()


def choice_rng(digest: str, choice: int, stream: str = "reply") -> random.Random:
    """The RNG of one choice (each choice index and stream is independent)."""
    return rng_from({"digest": digest, "choice": choice, "stream": stream})


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


# ----------------------------------------------------------------------------- generation


def improved_quality(quality: float, turn: int) -> float:
    """Quality after ``turn`` rounds of self-improvement: each closes 30% of the gap to 1."""
    for _ in range(turn):
        quality += (1.0 - quality) * IMPROVEMENT_FACTOR
    return quality


def _sentence(rng: random.Random, base: str, lead: str, extras: Sequence[str]) -> str:
    body = lead + base if lead else base
    if len(extras) == 1:
        body += ", " + extras[0]
    elif extras:
        body += ", " + ", ".join(extras[:-1]) + ", and " + extras[-1]
    draw = rng.random()
    if draw < 0.08:
        return _QUESTION_LEAD + body[0].lower() + body[1:] + "?"
    end = "!" if draw < 0.2 else "."
    return body[0].upper() + body[1:] + end


def generation_reply(task: GenerationTask, quality: float, rng: random.Random) -> MockReply:
    """A student's answer: ``Answer: <passage>\\n\\nExplanation:\\n- <skill>: ...`` lines."""
    q = min(1.0, max(0.0, improved_quality(quality, task.turn)))
    limit = sentence_limit(len(task.skills))
    fragments: list[str] = []
    shown: list[bool] = []
    cues: list[str] = []
    for name in task.skills:
        cue = skill_cue(name)
        include = rng.random() < q
        shown.append(include)
        if include:
            cues.append(cue)
            phrase = rng.choice(_CUE_PHRASES)
            fragments.append(phrase.format(a=_article(cue), cue=cue))
        if rng.random() < (1.0 - q) * EXPLICIT_NAME_FACTOR and explicit_name(name):
            fragments.append(rng.choice(_NAME_PHRASES).format(name=explicit_name(name)))
    rng.shuffle(fragments)
    count = limit if rng.random() < q else limit + (1 if rng.random() < 0.5 else 2)
    mention_topic = rng.random() < TOPIC_MENTION_RATE
    topic_at = rng.randrange(count)
    if count <= len(_BASE_CLAUSES):
        bases = rng.sample(_BASE_CLAUSES, count)
    else:
        bases = [rng.choice(_BASE_CLAUSES) for _ in range(count)]
    per_sentence: list[list[str]] = [[] for _ in range(count)]
    for index, fragment in enumerate(fragments):
        per_sentence[index % count].append(fragment)
    sentences = []
    for index in range(count):
        lead = ""
        if mention_topic and index == topic_at:
            lead = rng.choice(_TOPIC_LEADS).format(topic=task.topic)
        sentences.append(_sentence(rng, bases[index], lead, per_sentence[index]))
    passage = " ".join(sentences)
    lines = []
    for name, include in zip(task.skills, shown, strict=True):
        label = " ".join(name.split())
        if include:
            lines.append(
                f"- {label}: the image of {_article(skill_cue(name))} {skill_cue(name)} carries it."
            )
        else:
            lines.append(f"- {label}: it is implied by the overall framing.")
    if not lines:
        lines.append("- The passage keeps to the topic in plain words.")
    text = f"Answer: {passage}\n\nExplanation:\n" + "\n".join(lines)
    return MockReply(text=text, kind="generation", cues=tuple(cues))


# ----------------------------------------------------------------------------- grading


def true_verdicts(task: GradingTask, rng: random.Random) -> tuple[int, ...]:
    """What an ideal grader awards (the sense item is 1 with probability 0.95)."""
    answer = task.answer
    skills = [1 if contains_cue(answer, skill_cue(name)) else 0 for name in task.skill_names]
    on_topic = 1 if task.topic.lower() in answer.lower() else 0
    sense = 1 if rng.random() < SENSE_RATE else 0
    length = 1 if count_sentences(answer) <= sentence_limit(task.k) else 0
    return (*skills, on_topic, sense, length)


def grade_points(task: GradingTask, accuracy: float, rng: random.Random) -> tuple[int, ...]:
    """The true verdicts, each flipped with probability ``1 - accuracy``."""
    truth = true_verdicts(task, rng)
    return tuple(1 - v if rng.random() >= accuracy else v for v in truth)


def _reason(task: GradingTask, index: int, point: int) -> str:
    k = task.k
    if index < k:
        return "the skill is clearly used" if point else "the skill is not clearly shown"
    if index == k:
        return f"the passage is about {task.topic}" if point else "the passage drifts off topic"
    if index == k + 1:
        return "it reads naturally" if point else "parts of it do not hang together"
    n = count_sentences(task.answer)
    return f"the passage has {n} sentence{'s' if n != 1 else ''}"


def render_table(
    task: GradingTask, points: Sequence[int], rows: Sequence[str] | None = None
) -> str:
    """A table-style reply; ``rows`` overrides the cell text of the points column."""
    cells = [str(p) for p in points] if rows is None else list(rows)
    lines = ["Here's the grading table:", "", "| Criteria | Points Earned |", "|---|---|"]
    lines += [f"| {item} | {cell} |" for item, cell in zip(task.items, cells, strict=True)]
    lines.append(f"| Total Points Earned | {sum(points)} |")
    reasons = [
        f"{item}: {_reason(task, i, p)}."
        for i, (item, p) in enumerate(zip(task.items, points, strict=True))
    ]
    return "\n".join(lines) + "\n\nExplanation: " + " ".join(reasons)


def render_points(task: GradingTask, points: Sequence[int]) -> str:
    """A points-style reply: ``<item>: <reason>. Point earned: N`` lines and ``Grade: total``."""
    lines = [
        f"{item}: {_reason(task, i, p)}. Point earned: {p}"
        for i, (item, p) in enumerate(zip(task.items, points, strict=True))
    ]
    return "\n".join(lines) + f"\n\nGrade: {sum(points)}"


def malformed_grading_reply(
    task: GradingTask, points: Sequence[int], variant: int, rng: random.Random
) -> str:
    """A reply the project's parser reports as not ok (variant taken modulo 3).

    0: prose without any points; 1: one rubric row/line missing; 2: table with words in the
    points column, or (points style) a reply cut off half way.
    """
    variant %= MALFORMED_VARIANTS
    if variant == 0:
        return (
            "The passage is an interesting attempt, but I would need more context about the "
            "assignment before I could grade it fairly."
        )
    if task.style == "table":
        if variant == 1:
            lines = render_table(task, points).split("\n")
            del lines[4 + rng.randrange(len(points))]  # after the intro, blank, header, rule
            return "\n".join(lines)
        words = ["Yes" if p else "No" for p in points]
        return render_table(task, points, rows=words)
    lines = render_points(task, points).split("\n")
    if variant == 1:
        del lines[rng.randrange(len(points))]
        return "\n".join(lines)
    return "\n".join(lines[: len(points) // 2])


def grading_reply(task: GradingTask, accuracy: float, rng: random.Random) -> MockReply:
    points = grade_points(task, accuracy, rng)
    text = render_points(task, points) if task.style == "points" else render_table(task, points)
    return MockReply(text=text, kind="grading", points=points)


# ----------------------------------------------------------------------------- entry points


def _truncate(reply: MockReply, max_tokens: int | None) -> MockReply:
    if max_tokens is None or estimate_tokens(reply.text) <= max_tokens:
        return reply
    return MockReply(
        text=reply.text[: max_tokens * 4],
        kind=reply.kind,
        finish_reason="length",
        points=reply.points,
        cues=reply.cues,
        malformed=reply.malformed,
    )


def reply_for_task(
    task: Task,
    digest: str,
    params: ReplyParams,
    choice: int,
    *,
    malformed_variant: int | None = None,
) -> MockReply:
    """One choice for an already parsed request (``digest`` from :func:`request_digest`)."""
    rng = choice_rng(digest, choice)
    if isinstance(task, GenerationTask):
        reply = generation_reply(task, params.quality, rng)
    else:
        reply = grading_reply(task, params.quality, rng)
        if malformed_variant is not None:
            text = malformed_grading_reply(
                task, reply.points or (), malformed_variant, choice_rng(digest, choice, "bad")
            )
            reply = MockReply(text=text, kind="grading", points=None, malformed=True)
    return _truncate(reply, params.max_tokens)


def mock_replies(
    messages: Sequence[Message],
    params: ReplyParams,
    n: int = 1,
    *,
    malformed: Mapping[int, int] | None = None,
    answers: Mapping[str, str] | None = None,
) -> list[MockReply]:
    """The ``n`` choices for a request; ``malformed`` maps choice index -> malformed variant
    (applied to grading requests only); ``answers``: the answer key of reasoning problems
    (see :mod:`mock_reasoning`)."""
    digest = request_digest(messages, params)
    answer = _known_answer(messages, answers)
    if answer is not None:  # a reasoning problem whose answer key the mock was given
        return [_reasoning(answer, digest, params, i) for i in range(n)]
    task = parse_task(messages)
    bad = malformed or {}
    return [reply_for_task(task, digest, params, i, malformed_variant=bad.get(i)) for i in range(n)]


def _known_answer(messages: Sequence[Message], answers: Mapping[str, str] | None) -> str | None:
    users = [text for role, text in messages if role == "user"]
    if not answers or not users:
        return None
    return answers.get(problem_key(users[-1]))


def _reasoning(answer: str, digest: str, params: ReplyParams, choice: int) -> MockReply:
    text, _right = reasoning_reply(answer, params.quality, choice_rng(digest, choice))
    return _truncate(MockReply(text=text, kind="reasoning"), params.max_tokens)


def mock_reply(messages: Sequence[Message], params: ReplyParams, choice: int = 0) -> MockReply:
    """Choice ``choice`` of a request."""
    task = parse_task(messages)
    return reply_for_task(task, request_digest(messages, params), params, choice)


def graded_answer(reply_text: str) -> str:
    """The passage a grader would see for a student reply (SPEC 4 answer extraction)."""
    return extract_answer(reply_text)
