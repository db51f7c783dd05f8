"""Everything a task needs, resolved once and stored in ``run.json``.

``run.json`` embeds the resolved experiment, the catalog's skills and topics and the prompt
templates, so a task in a Kubernetes pod reads one object and needs no local files. It holds
no secrets: backends name the environment variables that hold their keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from skillmix import __version__
from skillmix.artifacts import (
    RUN_JSON_ADAPTER,
    CatalogSkill,
    EvaluationRun,
    GradingPromptVersion,
    GradingTemplateJson,
    PromptTemplateJson,
    PromptVersion,
    PromptVersions,
    ReferenceImportRun,
    RunCatalog,
    RunPrompts,
    validate_artifact,
)
from skillmix.catalog import Catalog, Skill, load_catalog
from skillmix.config import MAX_PROMPT_CHARS, Experiment, ModelSpec
from skillmix.errors import SkillmixError
from skillmix.identity import ResultIdentity
from skillmix.method.prompts import (
    GradingStyle,
    PromptTemplate,
    infer_grading_style,
    make_template,
    render_generation_prompts,
    render_grading_prompt,
)
from skillmix.method.sampling import Combination, check_k, sample_combinations
from skillmix.promptset import load_prompt_version
from skillmix.store.base import ArtifactStore, join_key
from skillmix.store.layout import RunLayout
from skillmix.store.runs import RunStore, utc_now
from skillmix.store.uri import open_store
from skillmix.tasks.config import task_digest


@dataclass
class RunContext:
    experiment: Experiment
    catalog: Catalog
    generation_prompt: PromptTemplate
    grading_prompt: PromptTemplate
    run_id: str
    created_at: str = field(default_factory=utc_now)
    sharded: bool = False  # Kubernetes runs split generation by each student's replicas
    _combos: dict[int, list[Combination]] = field(default_factory=dict, init=False, repr=False)

    def shards(self, student: str) -> int:
        return self.experiment.student(student).replicas if self.sharded else 1

    @property
    def grading_style(self) -> GradingStyle:
        style = self.experiment.grader.style
        return infer_grading_style(self.grading_prompt) if style == "auto" else style

    def combinations(self, k: int) -> list[Combination]:
        """The M combinations for k (the same for every generation round, as in the reference)."""
        if k not in self._combos:
            e = self.experiment
            self._combos[k] = sample_combinations(
                self.catalog.skill_names,
                self.catalog.topics,
                k,
                e.combinations,
                seed=e.seed,
                order_seed=e.order_seed,
                mode=e.sampling,
            )
        return self._combos[k]

    def skills(self, names: list[str] | tuple[str, ...]) -> list[Skill]:
        return [self.catalog.skill(n) for n in names]

    def prompt_versions(self) -> PromptVersions:
        """Names and content hashes of the prompt versions (what reports and comparisons show)."""
        return PromptVersions(
            generation=PromptVersion(
                name=self.generation_prompt.name, hash=self.generation_prompt.content_hash()
            ),
            grading=GradingPromptVersion(
                name=self.grading_prompt.name,
                hash=self.grading_prompt.content_hash(),
                style=self.grading_style,
            ),
        )

    def model_specs(self) -> list[ModelSpec]:
        return [*self.experiment.students, self.experiment.grader]

    # run.json ------------------------------------------------------------------------------
    def to_run(self) -> EvaluationRun:
        return EvaluationRun(
            run_id=self.run_id,
            created_at=self.created_at,
            skillmix_version=__version__,
            sharded=self.sharded,
            experiment=self.experiment.stored(),
            catalog=RunCatalog(
                source=self.catalog.source,
                hash=self.catalog.content_hash(),
                skills=[
                    CatalogSkill(
                        name=s.name, category=s.category, definition=s.definition, example=s.example
                    )
                    for s in self.catalog.skills
                ],
                topics=list(self.catalog.topics),
            ),
            prompts=RunPrompts(
                generation=_template_json(self.generation_prompt),
                grading=GradingTemplateJson(
                    **_template_json(self.grading_prompt).model_dump(), style=self.grading_style
                ),
            ),
        )

    def to_run_json(self) -> dict[str, Any]:
        return self.to_run().model_dump(mode="json")

    @classmethod
    def from_run(
        cls, data: EvaluationRun | ReferenceImportRun, source: str = "run.json"
    ) -> RunContext:

        if not isinstance(data, EvaluationRun):
            raise SkillmixError(f"{source}: not an evaluation run (kind={data.kind!r})")
        experiment = data.experiment  # checked when run.json was read
        cat = data.catalog
        catalog = Catalog(
            skills=tuple(Skill(s.name, s.definition, s.example, s.category) for s in cat.skills),
            topics=tuple(cat.topics),
            source=cat.source if cat.source is not None else source,
        )
        prompts = data.prompts
        return cls(
            experiment=experiment,
            catalog=catalog,
            generation_prompt=make_template(
                prompts.generation.name, "generation", prompts.generation.turns, source
            ),
            grading_prompt=make_template(
                prompts.grading.name, "grading", prompts.grading.turns, source
            ),
            run_id=data.run_id,
            created_at=data.created_at or utc_now(),
            sharded=data.sharded,
        )

    @classmethod
    def from_run_json(cls, data: dict[str, Any], source: str = "run.json") -> RunContext:
        """From run.json's parsed content (a damaged or partial one is a SkillmixError)."""
        return cls.from_run(validate_artifact(RUN_JSON_ADAPTER, data, source), source)


def _template_json(t: PromptTemplate) -> PromptTemplateJson:
    return PromptTemplateJson(name=t.name, hash=t.content_hash(), turns=list(t.turns))


def resolve_context(experiment: Experiment) -> RunContext:
    """Load catalog and prompts, check sizes, and derive the run id: all input errors surface
    here, before anything is written."""
    c = experiment.catalog
    catalog = load_catalog(c.skills, c.topics)
    for k in experiment.ks:
        check_k(k, len(catalog.skills))
    p = experiment.prompts
    generation = load_prompt_version(
        "generation", p.generation, p.dir, encoding=p.template_encoding
    )
    grading = load_prompt_version("grading", p.grading, p.dir, encoding=p.template_encoding)
    for name in experiment.metrics.filter_skills:
        catalog.skill(name)
    check_prompt_sizes(experiment, catalog, generation, grading)
    if experiment.sampling == "distinct":
        for k in experiment.ks:  # fail now rather than in a task
            sample_combinations(
                catalog.skill_names,
                catalog.topics,
                k,
                experiment.combinations,
                seed=experiment.seed,
                mode="distinct",
            )
    hashes = {"generation": generation.content_hash(), "grading": grading.content_hash()}
    task_files = {t.name: task_digest(t, f"tasks.{i}") for i, t in enumerate(experiment.tasks)}
    if len(task_files) != len(experiment.tasks):
        raise SkillmixError("tasks: each task may be listed once", hint="remove the repeat")
    run_id = ResultIdentity(experiment, catalog.content_hash(), hashes, task_files).run_id()
    return RunContext(experiment, catalog, generation, grading, run_id)


def check_prompt_sizes(
    experiment: Experiment, catalog: Catalog, generation: PromptTemplate, grading: PromptTemplate
) -> None:
    """The longest prompt any combination can render (the k longest skills, the longest topic;
    grading without the answer) plus the system prompt stays within ``MAX_PROMPT_CHARS``."""
    skills = sorted(
        catalog.skills,
        key=lambda s: len(s.name) + len(s.definition) + len(s.example),
        reverse=True,
    )
    topic = max(catalog.topics, key=len)
    checks: list[tuple[str, PromptTemplate, list[ModelSpec]]] = [
        ("generation", generation, list(experiment.students)),
        ("grading", grading, [experiment.grader]),
    ]
    for kind, template, specs in checks:
        system = max(len(s.system_prompt or "") for s in specs)
        for k in experiment.ks:
            longest = skills[:k]
            if kind == "generation":
                turns = render_generation_prompts(template, longest, topic)
            else:
                turns = [render_grading_prompt(template, longest, topic, "")]
            size = system + max(len(t) for t in turns)
            if size > MAX_PROMPT_CHARS:
                raise SkillmixError(
                    f"prompts.{kind}: a k={k} {kind} prompt can reach {size} characters "
                    f"(system prompt included), over the limit of {MAX_PROMPT_CHARS}",
                    hint="shorten the system prompt, the prompt template or the longest skill "
                    "definitions and examples of the catalog",
                )


def parent_store(run_uri: str) -> ArtifactStore:
    """The store that holds a run folder (where the shared response cache lives)."""
    return open_store(RunLayout.cache_root(run_uri))


def open_run(uri: str) -> tuple[RunStore, RunContext]:
    """A run folder by URI, with its context from run.json."""
    run = RunStore(open_store(uri))
    data = run.read_run()
    if data is None:
        raise SkillmixError(
            f"{uri}: no run.json here",
            hint="pass a run folder created by `skillmix evaluate`/`launch`",
        )
    return run, RunContext.from_run(
        data, join_key(uri, "run.json") if "://" in uri else f"{uri}/run.json"
    )
