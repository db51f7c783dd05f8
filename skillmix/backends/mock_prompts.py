"""How the mock reads a request: OpenAI chat messages, then the skillmix prompt inside them.

Kept apart from the reply composer (:mod:`skillmix.backends.mock_replies`) because this side
follows the prompt templates and the wire format, while the composer follows the statistical
model of students and graders. Pure: no I/O, no clocks.

A request is one of two kinds: **generation** (a student prompt that names skills and a topic)
or **grading** (the last user message holds a rubric: ``Pertains to ...``, ``Text makes
sense``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from skillmix.method.text import sentence_limit

RequestKind = Literal["generation", "grading", "reasoning"]
ReplyStyle = Literal["table", "points"]
Message = tuple[str, str]
"""A normalised chat message: (role, text)."""
FALLBACK_TOPIC = "the topic"
"""The topic a generation or grading task gets when its prompt names none."""

_BOLD_SKILL = re.compile(r"^\*\*(.+?)\*\*:", re.MULTILINE)
_SKILL_LINE = re.compile(r"^Skill: (.+?)\s*$", re.MULTILINE)
_TOPIC_PATTERNS = (
    re.compile(r"^Topic: (.+?)\s*$", re.MULTILINE),
    re.compile(r"in the context of (.+?) that illustrates"),
    re.compile(r"in the context of (.+?)\."),
)
_RUBRIC_TOPIC = re.compile(r"Pertains to (.+?), Text makes sense")
_RUBRIC_LENGTH = re.compile(r", (At most [\w\- ]*?sentences?)\b")
_ANSWER_PATTERNS = (
    re.compile(r"The student's answer was: \"(.*?)\"\n\n", re.DOTALL),
    re.compile(r"The student's passage:\n\"(.*?)\"\n\n", re.DOTALL),
)
_SKILL_VERBS = ("Correctly illustrates", "Contains")
_POINTS_MARKER = "Point earned"


@dataclass(frozen=True)
class GenerationTask:
    """A student request: skills in presentation order, topic, and how many answers came before."""

    skills: tuple[str, ...]
    topic: str
    turn: int = 0


@dataclass(frozen=True)
class GradingTask:
    """A grader request: the rubric items as written in the prompt and the answer to grade."""

    skill_items: tuple[str, ...]
    """Skill rubric items verbatim, e.g. ``Correctly illustrates red herring``."""
    skill_names: tuple[str, ...]
    """The skill part of each item (lower-cased in the prompt)."""
    topic: str
    length_item: str
    answer: str
    style: ReplyStyle

    @property
    def k(self) -> int:
        return len(self.skill_items)

    @property
    def items(self) -> tuple[str, ...]:
        """All k + 3 rubric items in order."""
        return (
            *self.skill_items,
            f"Pertains to {self.topic}",
            "Text makes sense",
            self.length_item,
        )


Task = GenerationTask | GradingTask


def message_text(content: Any) -> str:
    """The text of an OpenAI message content: a string or a list of text parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts: list[str] = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, Mapping) and isinstance(part.get("text"), str):
                parts.append(part["text"])
            else:
                raise ValueError("content parts must be strings or objects with a text field")
        return "\n".join(parts)
    raise ValueError("message content must be a string or a list of parts")


def normalize_messages(raw: Any) -> tuple[Message, ...]:
    """Validate OpenAI chat messages into (role, text) pairs; ValueError says what is wrong."""
    if not isinstance(raw, list) or not raw:
        raise ValueError("'messages' must be a non-empty array")
    out: list[Message] = []
    for index, message in enumerate(raw):
        if not isinstance(message, Mapping):
            raise ValueError(f"messages[{index}] must be an object")
        role = message.get("role")
        if not isinstance(role, str) or not role:
            raise ValueError(f"messages[{index}].role must be a string")
        try:
            text = message_text(message.get("content"))
        except ValueError as exc:
            raise ValueError(f"messages[{index}]: {exc}") from None
        out.append((role, text))
    return tuple(out)


def _user_texts(messages: Sequence[Message]) -> list[str]:
    return [text for role, text in messages if role == "user"]


def classify(messages: Sequence[Message]) -> RequestKind:
    """``grading`` when the last user message holds a rubric, else ``generation``."""
    users = _user_texts(messages)
    last = users[-1] if users else ""
    return "grading" if "Pertains to " in last and "Text makes sense" in last else "generation"


def parse_generation_task(messages: Sequence[Message]) -> GenerationTask:
    """Skills (``**name**:`` or ``Skill: name`` lines) and topic from the user turns."""
    users = _user_texts(messages)
    skills: tuple[str, ...] = ()
    for text in users:
        found = _BOLD_SKILL.findall(text) or _SKILL_LINE.findall(text)
        if found:
            skills = tuple(found)
            break
    topic = ""
    for text in users:
        for pattern in _TOPIC_PATTERNS:
            match = pattern.search(text)
            if match and match.group(1).strip():
                topic = match.group(1).strip()
                break
        if topic:
            break
    turn = sum(1 for role, _ in messages if role == "assistant")
    return GenerationTask(skills=skills, topic=topic or FALLBACK_TOPIC, turn=turn)


def _rubric_skill_items(line: str, end: int) -> list[tuple[str, str]]:
    """Walk back from the ``Pertains to`` item over ``<verb> <skill>, `` items on its line."""
    items: list[tuple[str, str]] = []
    rest = line[:end]
    while rest.endswith(", "):
        body = rest[:-2]
        best, verb_found = -1, ""
        for verb in _SKILL_VERBS:
            pos = body.rfind(verb + " ")
            if pos > best:
                best, verb_found = pos, verb
        if best < 0:
            break
        items.append((verb_found, body[best + len(verb_found) + 1 :]))
        rest = body[:best]
    items.reverse()
    return items


def _student_answer(text: str) -> str:
    for pattern in _ANSWER_PATTERNS:
        match = pattern.search(text)
        if match:
            return match.group(1)
    return text


def parse_grading_task(messages: Sequence[Message]) -> GradingTask:
    """Rubric items, topic, answer and reply style from the last user message."""
    users = _user_texts(messages)
    text = users[-1] if users else ""
    style: ReplyStyle = "points" if _POINTS_MARKER in text else "table"
    matches = list(_RUBRIC_TOPIC.finditer(text))
    topic_match = matches[-1] if matches else None  # the rubric follows the quoted answer
    skill_items: list[str] = []
    skill_names: list[str] = []
    topic = FALLBACK_TOPIC
    length_item = ""
    if topic_match is not None:
        topic = topic_match.group(1)
        line_start = text.rfind("\n", 0, topic_match.start()) + 1
        line = text[line_start : topic_match.start()]
        for verb, name in _rubric_skill_items(line, len(line)):
            skill_items.append(f"{verb} {name}")
            skill_names.append(name)
        length_match = _RUBRIC_LENGTH.match(text, topic_match.end())
        if length_match:
            length_item = length_match.group(1)
    limit = sentence_limit(len(skill_items))
    if not length_item:
        length_item = f"At most {limit} {'sentence' if limit == 1 else 'sentences'}"
    return GradingTask(
        skill_items=tuple(skill_items),
        skill_names=tuple(skill_names),
        topic=topic,
        length_item=length_item,
        answer=_student_answer(text),
        style=style,
    )


def parse_task(messages: Sequence[Message]) -> Task:
    """The request's generation or grading task (see :func:`classify`)."""
    if classify(messages) == "grading":
        return parse_grading_task(messages)
    return parse_generation_task(messages)
