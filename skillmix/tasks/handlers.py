"""From a dataset row to what a model is asked and what its answer is scored against, per
SkyThought handler: math (MATH500, AMC), aime (the question as ``{prompt}``), olympiadbench
(the first of the final answers), numina (the boxed answer of the reference solution) and
gpqa_diamond (four options shuffled from the run's seed, the order recorded)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from skillmix.errors import SkillmixError
from skillmix.method.choices import shuffle_choices
from skillmix.method.math_answers import extract_answer
from skillmix.tasks.config import TaskConfig

ScoreKind = Literal["math", "choice"]
GPQA_OPTIONS = ("Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3")


@dataclass(frozen=True)
class Problem:
    """One problem as the model sees it and as it is scored."""

    index: str  # the row's ``_index``, as results.json keys it
    row: dict[str, Any]  # the dataset row, with what the handler added (prompt, Answer, ...)
    user: str  # the user turn
    reference: str  # the answer a response must match (a letter for multiple choice)
    kind: ScoreKind
    options: list[str] = field(default_factory=list)  # multiple choice: the order shown


def prepare(task: TaskConfig, row: dict[str, Any], seed: int) -> Problem:
    """The problem of ``row`` (a KeyError on a missing column becomes one line)."""
    try:
        if task.handler == "gpqa_diamond":
            return _choice_problem(task, row, seed)
        return _math_problem(task, row)
    except KeyError as exc:
        raise SkillmixError(
            f"task {task.name}: row {row.get('_index')} has no column {exc.args[0]!r}",
            hint="check the task's question_key/answer_key against the dataset",
        ) from None


def _math_problem(task: TaskConfig, row: dict[str, Any]) -> Problem:
    question = row[task.question_key]
    if task.handler in ("aime", "numina"):
        user = task.template.format(prompt=question)
    else:
        user = task.template.format(**{**row, "prompt": question})
    return Problem(str(row["_index"]), dict(row), user, reference_of(task, row), "math")


def reference_of(task: TaskConfig, row: dict[str, Any]) -> str:
    """The answer a response is scored against, from a row of the dataset or of a run's
    results (where a multiple-choice row holds its shuffled correct letter)."""
    answer = row[task.answer_key]
    if task.handler == "olympiadbench_math":  # a list of final answers: the first
        answer = answer[0] if isinstance(answer, list) and answer else answer
    if task.handler == "numina":  # the reference is a worked solution: its boxed answer
        answer = extract_answer(str(answer))
    return str(answer)


def score_kind(task: TaskConfig) -> ScoreKind:
    return "choice" if task.handler == "gpqa_diamond" else "math"


def _choice_problem(task: TaskConfig, row: dict[str, Any], seed: int) -> Problem:
    index = str(row["_index"])
    correct, *wrong = (str(row[key]).strip() for key in GPQA_OPTIONS)
    choices = shuffle_choices(correct, wrong, seed, key=index)
    prompt = f"{row[task.question_key]}\n{choices.prompt_text()}"
    user = task.template.format(prompt=prompt)
    letter = choices.correct_letter
    added = {"prompt": prompt, task.answer_key: letter, "options_order": list(choices.order)}
    return Problem(index, {**row, **added}, user, letter, "choice", list(choices.options))


def conversation(
    problem: Problem,
    *,
    system_prompt: str | None,
    assistant_prefill: str | None,
    user_template: str | None = None,
) -> list[dict[str, str]]:
    """The messages sent: an optional system prompt, the user turn (inside the model's user
    template when it has one, as SkyThought does), an optional start of the assistant's reply
    (the model continues it)."""
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    user = user_template.format(problem.user) if user_template else problem.user
    messages.append({"role": "user", "content": user})
    if assistant_prefill:
        messages.append({"role": "assistant", "content": assistant_prefill})
    return messages
