"""The public Python API of skillmix: the SKILL-MIX method as plain functions.

Everything here is pure (no network, no files) except :func:`load_catalog` and
:func:`load_prompt_version`, which read the files you name::

    from skillmix import api
    cat = api.load_catalog()                                   # built-in catalog
    combos = api.sample_combinations(cat.skill_names, cat.topics, k=3, n=5, seed=10)
    skills = [cat.skill(s) for s in combos[0].skills]
    gen = api.load_prompt_version("generation", "two-turn-v1")
    turns = api.render_generation_prompts(gen, skills, combos[0].topic)
    answer = api.extract_answer("Answer: Bees hum. Explanation: ...")
    grade = api.parse_grader_output(grader_reply, k=3, style="table")
    rows = api.aggregate(graded_answers, api.MetricOptions.reference())
"""

from skillmix.catalog import Catalog, Skill, load_catalog
from skillmix.method.grading import (
    ParsedGrade,
    parse_grader_output,
    parse_points_output,
    parse_table_output,
)
from skillmix.method.metrics import MetricRow, MetricValue, aggregate
from skillmix.method.points import GradedAnswer, MetricOptions, names_skill
from skillmix.method.prompts import (
    PromptTemplate,
    make_template,
    render_generation_prompts,
    render_grading_prompt,
    rubric_items,
)
from skillmix.method.sampling import Combination, sample_combinations
from skillmix.method.text import count_sentences, extract_answer, length_point, sentence_limit
from skillmix.promptset import load_prompt_version

__all__ = [
    "Catalog",
    "Combination",
    "GradedAnswer",
    "MetricOptions",
    "MetricRow",
    "MetricValue",
    "ParsedGrade",
    "PromptTemplate",
    "Skill",
    "aggregate",
    "count_sentences",
    "extract_answer",
    "length_point",
    "load_catalog",
    "load_prompt_version",
    "make_template",
    "names_skill",
    "parse_grader_output",
    "parse_points_output",
    "parse_table_output",
    "render_generation_prompts",
    "render_grading_prompt",
    "rubric_items",
    "sample_combinations",
    "sentence_limit",
]
