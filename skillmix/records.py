"""The run format: one JSON line per generation and per grading verdict (schema version 1).

Records carry every input needed to re-grade or re-parse them, so metrics can be recomputed
from a run folder alone. They are pydantic models because they cross process and storage
boundaries; unknown fields are rejected so that a schema change is noticed, not guessed at.
"""

from __future__ import annotations

from typing import Annotated, Literal, TypedDict

from pydantic import BaseModel, ConfigDict, Field

from skillmix.method.points import GradedAnswer
from skillmix.method.prompts import GradingStyle

GradeStatus = Literal["ok", "unparsed", "failed"]


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _RunRecord(_Record):
    """A line of the run format (its version first)."""

    schema_version: Literal[1] = Field(1, description="Version of the run format.")


# the combination an answer is to, as every record of the answer describes it
SkillsPerCombination = Annotated[int, Field(description="Skills per combination.")]
IndexInRound = Annotated[int, Field(description="0-based combination index within (k, round).")]
CombinationTopic = Annotated[str, Field(description="The combination's topic.")]
CombinationSkills = Annotated[list[str], Field(description="Skill names in presentation order.")]


class Usage(_Record):
    """Tokens the backend reported for the requests behind one record."""

    prompt_tokens: int = Field(0, description="Prompt tokens the backend reported.")
    completion_tokens: int = Field(0, description="Completion tokens the backend reported.")
    cached: bool = Field(False, description="True when the reply came from the response cache.")

    def plus(self, prompt_tokens: int, completion_tokens: int, cached: bool) -> Usage:
        """These tokens and one more request's; cached only while every request was."""
        return Usage(
            prompt_tokens=self.prompt_tokens + prompt_tokens,
            completion_tokens=self.completion_tokens + completion_tokens,
            cached=self.cached and cached,
        )


class Turn(_Record):
    user: str = Field(description="The rendered user turn.")
    assistant: str = Field(description="The model's raw reply to it.")


class GenerationRecord(_RunRecord):
    """A student's conversation for one combination in one generation round."""

    student: str = Field(description="Student name from the experiment (path-safe id).")
    model: str = Field("", description="Model id sent to the backend.")
    k: SkillsPerCombination
    generation_round: int = Field(description="1-based generation round g.")
    index: IndexInRound
    topic: CombinationTopic
    skills: CombinationSkills
    prompt_version: str = Field(description="Generation prompt version.")
    system_prompt: str | None = Field(None, description="System message sent, if any.")
    turns: list[Turn] = Field(
        default_factory=list, description="The conversation: user turns and the model's replies."
    )
    answer: str | None = Field(description="Answer extracted from the last reply; None if failed.")
    status: Literal["ok", "failed"] = Field(
        "ok", description="failed: no answer (the unit is redone by --resume or a relaunch)."
    )
    error: str | None = Field(None, description="Why the generation failed (one line).")
    usage: Usage = Field(Usage(), description="Tokens of the generation's requests.")


class GradeRecord(_RunRecord):
    """One grader verdict (one grading round) on one student answer."""

    student: str = Field(description="Name of the student whose answer is graded.")
    grader: str = Field(description="Grader name (path-safe id).")
    k: SkillsPerCombination
    generation_round: int = Field(description="1-based generation round g of the answer.")
    grading_round: int = Field(description="1-based grading round r.")
    index: IndexInRound
    topic: CombinationTopic
    skills: CombinationSkills
    answer: str = Field(description="The graded text (extracted answer of the last turn).")
    prompt_version: str = Field(description="Grading prompt version.")
    style: GradingStyle = Field(description="How the reply was read: table or points.")
    prompt: str = Field("", description="The full grading prompt sent to the grader.")
    raw: str | None = Field(None, description="The grader's raw reply, kept for re-parsing.")
    points: list[float] | None = Field(None, description="Rubric points as read from `raw`.")
    total: float | None = Field(None, description="The grader's own total, if it gave one.")
    parse_status: Literal["ok", "wrong_count", "empty", "none"] = Field(
        "none",
        description=(
            "ok, wrong_count (not k + 3 points), empty (no points found), "
            "none (not parsed: the request failed)."
        ),
    )
    parse_detail: str = Field("", description="What the parser found wrong, if anything.")
    attempts: int = Field(
        1, description="Grader requests made for this verdict (re-asks included)."
    )
    status: GradeStatus = Field(
        "ok",
        description=(
            "ok, unparsed (no readable verdict after the re-asks) or failed (the request failed)."
        ),
    )
    error: str | None = Field(None, description="Why grading failed (one line).")
    usage: Usage = Field(Usage(), description="Tokens of the verdict's requests.")

    def to_graded_answer(self, points: tuple[float, ...] | None = None) -> GradedAnswer:
        """The metric input; ``points`` overrides the stored points (used by ``--reparse``)."""
        stored = tuple(self.points) if self.points is not None else None
        return GradedAnswer(
            **answer_id(self),
            grader=self.grader,
            grading_round=self.grading_round,
            answer=self.answer,
            points=points if points is not None else stored,
        )


class TaskResponseRecord(_RunRecord):
    """A student's responses to one problem of a reasoning task: one request for n responses
    (scored when the run is aggregated, so a scorer change needs no new request)."""

    task: str = Field(description="Task name.")
    student: str = Field(description="Student name from the experiment.")
    model: str = Field(description="Model id sent to the backend.")
    index: str = Field(description="The problem's _index (results.json's key).")
    responses: list[str] = Field(default_factory=list, description="The n responses.")
    prompt_tokens: int = Field(0, description="Prompt tokens of the request.")
    completion_tokens: int = Field(0, description="Completion tokens of the n responses.")
    status: Literal["ok", "failed"] = Field("ok", description="failed: redone on --resume.")
    error: str | None = Field(None, description="Why the request failed (one line).")


class AnswerId(TypedDict):
    """The fields that name one student answer: the student's answer to combination ``index``
    (its topic and skills) of k skills in one generation round. The answer's generation, its
    verdicts and the views of them all carry these; pass them on as keywords
    (``GradeRecord(**answer_id(generation), ...)``)."""

    student: str
    k: int
    generation_round: int
    index: int
    topic: str
    skills: tuple[str, ...]


def answer_id(record: GenerationRecord | GradeRecord) -> AnswerId:
    """The answer ``record`` holds (a generation) or grades (a verdict)."""
    return AnswerId(
        student=record.student,
        k=record.k,
        generation_round=record.generation_round,
        index=record.index,
        topic=record.topic,
        skills=tuple(record.skills),
    )
