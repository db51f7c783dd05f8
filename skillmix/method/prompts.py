"""Prompt templates and their placeholders (SPEC 4 and 5).

A prompt version is an ordered list of user turns with ``str.format`` placeholders. Rendering
uses ``str.format`` itself so that the reference's own template files render byte for byte.
"""

from __future__ import annotations

import hashlib
import json
import string
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from skillmix.catalog import Skill
from skillmix.errors import SkillmixError
from skillmix.method.text import sentence_limit

PromptKind = Literal["generation", "grading"]
GradingStyle = Literal["table", "points"]

GENERATION_PLACEHOLDERS = frozenset(
    {
        "skills_str",
        "skills_defs_and_examples",
        "skills_defs_and_examples_simple",
        "skills_defs",
        "num_skills",
        "num_skills_str",
        "topic",
        "num_sentences",
        "num_sentences_str",
    }
)
GRADING_PLACEHOLDERS = GENERATION_PLACEHOLDERS | {"student_answer", "rubric_items"}
RUBRIC_VERBS: dict[GradingStyle, str] = {"table": "Correctly illustrates", "points": "Contains"}


@dataclass(frozen=True)
class PromptTemplate:
    """One prompt version: its name, kind and user turns (already validated)."""

    name: str
    kind: PromptKind
    turns: tuple[str, ...]
    source: str = ""

    def content_hash(self) -> str:
        blob = json.dumps(list(self.turns), ensure_ascii=False).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def allowed_placeholders(kind: PromptKind) -> frozenset[str]:
    return GRADING_PLACEHOLDERS if kind == "grading" else GENERATION_PLACEHOLDERS


def make_template(name: str, kind: PromptKind, turns: object, source: str = "") -> PromptTemplate:
    """Validate turns (a list of strings, known placeholders, balanced braces) into a template."""
    where = source or name
    if not isinstance(turns, list) or not turns or not all(isinstance(t, str) for t in turns):
        raise SkillmixError(
            f"{where}: a prompt version must be a non-empty JSON array of strings (one per user turn)"
        )
    if kind == "grading" and len(turns) != 1:
        raise SkillmixError(
            f"{where}: a grading prompt must have exactly one user turn (found {len(turns)})"
        )
    allowed = allowed_placeholders(kind)
    for number, turn in enumerate(turns, start=1):
        try:
            fields = [f for _, f, _, _ in string.Formatter().parse(turn) if f is not None]
        except ValueError as exc:
            raise SkillmixError(
                f"{where}: turn {number}: stray brace ({exc})",
                hint="write a literal brace as {{ or }}",
            ) from None
        for field in fields:
            if field not in allowed:
                raise SkillmixError(
                    f"{where}: turn {number}: unknown placeholder {{{field}}}",
                    hint=f"{kind} prompts may use: {', '.join(sorted(allowed))}",
                )
    return PromptTemplate(name=name, kind=kind, turns=tuple(turns), source=source)


def infer_grading_style(template: PromptTemplate) -> GradingStyle:
    """``points`` when the prompt asks for 'Point earned' lines (reference version ``llama``)."""
    text = " ".join(template.turns).lower()
    return "points" if "point earned" in text else "table"


@lru_cache(maxsize=1)
def _inflect_engine():
    import inflect  # deferred: ~1 s to import, and only plural skill names need it

    return inflect.engine()


# inflect's spelling of the numbers runs actually use (k, sentence limits): importing inflect
# costs about a second per process, which every task pod would pay. A test checks the table
# against inflect; larger numbers go to inflect itself.
_SMALL_NUMBER_WORDS = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
    "twenty",
]


def number_words(n: int) -> str:
    """English words for n as the ``inflect`` package spells them ("three", "twenty-one")."""
    if 0 <= n < len(_SMALL_NUMBER_WORDS):
        return _SMALL_NUMBER_WORDS[n]
    return str(_inflect_engine().number_to_words(n))


def num_sentences_str(limit: int) -> str:
    return f"{number_words(limit)} {'sentences' if limit > 1 else 'sentence'}"


def rubric_items(skill_names: Sequence[str], topic: str, style: GradingStyle) -> list[str]:
    """The k + 3 rubric items in order: one per skill, topic, sense, length."""
    verb = RUBRIC_VERBS[style]
    items = [f"{verb} {name.strip().lower()}" for name in skill_names]
    limit = sentence_limit(len(skill_names))
    return [
        *items,
        f"Pertains to {topic}",
        "Text makes sense",
        f"At most {num_sentences_str(limit)}",
    ]


def _placeholder_values(
    skills: Sequence[Skill], topic: str, names: Sequence[str]
) -> dict[str, object]:
    k = len(skills)
    limit = sentence_limit(k)
    return {
        "skills_str": ", ".join(names),
        "skills_defs_and_examples": "\n".join(
            f"Skill: {n}\nDefinition: {s.definition}\nExample: {s.example}"
            for n, s in zip(names, skills, strict=True)
        ),
        "skills_defs_and_examples_simple": "\n".join(
            f"**{n}**: {s.definition} For example, {s.example}"
            for n, s in zip(names, skills, strict=True)
        ),
        "skills_defs": "\n".join(
            f"**{n}**: {s.definition}" for n, s in zip(names, skills, strict=True)
        ),
        "num_skills": k,
        "num_skills_str": number_words(k),
        "topic": topic,
        "num_sentences": limit,
        "num_sentences_str": num_sentences_str(limit),
    }


def _check_kind(template: PromptTemplate, kind: PromptKind) -> None:
    if template.kind != kind:
        raise SkillmixError(
            f"prompt version {template.name!r} is a {template.kind} prompt, not {kind}"
        )


def render_generation_prompts(
    template: PromptTemplate, skills: Sequence[Skill], topic: str
) -> list[str]:
    """The user turns of a generation conversation, skills in presentation order."""
    _check_kind(template, "generation")
    values = _placeholder_values(skills, topic, [s.name for s in skills])
    return [turn.format(**values) for turn in template.turns]


def render_grading_prompt(
    template: PromptTemplate,
    skills: Sequence[Skill],
    topic: str,
    answer: str,
    style: GradingStyle | None = None,
) -> str:
    """The single grading turn. Skill names are stripped here, as the reference's grader does."""
    _check_kind(template, "grading")
    style = style or infer_grading_style(template)
    names = [s.name.strip() for s in skills]
    values = _placeholder_values(skills, topic, names)
    values["student_answer"] = answer
    values["rubric_items"] = ", ".join(rubric_items(names, topic, style))
    return template.turns[0].format(**values)
