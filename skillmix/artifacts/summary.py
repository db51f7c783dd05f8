"""``report/summary.json``: the machine-readable report every other report file comes from."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from skillmix.artifacts.base import (
    Artifact,
    CatalogSource,
    CombinationIndex,
    GenerationRound,
    GraderName,
    GradingPromptVersion,
    NumberOfSkills,
    OmitsAbsent,
    PromptVersion,
    StudentName,
    Versioned,
)
from skillmix.config import Experiment


class SummaryCatalog(CatalogSource):
    skills: int = Field(description="Number of skills.")
    topics: int = Field(description="Number of topics.")


class PromptVersions(Artifact):
    generation: PromptVersion = Field(description="The student prompt version.")
    grading: GradingPromptVersion = Field(description="The grader prompt version.")


class Counts(Artifact):
    planned_generations: int = Field(description="Generations the plan asks for.")
    generations: int = Field(description="Generation records found.")
    planned_grades: int = Field(description="Verdicts due for the successful generations.")
    grades: int = Field(description="Grade records found.")


class PhaseProgress(Artifact):
    """One student's planned and finished work in one phase (``generate``: its answers;
    ``grade``: the verdicts of its answers, grading rounds x planned answers)."""

    student: StudentName
    phase: str = Field(description="generate or grade.")
    planned: int = Field(description="Records the plan asks for.")
    done: int = Field(
        description="Records finished: answers with text; verdicts answered (unparsed included)."
    )
    failed: int = Field(description="Records that failed after retries.")
    missing: int = Field(
        description="Planned records not done and not failed (unfinished units, or verdicts "
        "of answers that failed)."
    )


class MetricSettings(Artifact):
    mode: str = Field(description="Metric mode: strict or reference.")
    generation_agg: str = Field(description="How generation rounds combine (max, mean).")
    vote: str = Field(description="How grading rounds combine (majority, mean).")
    filter_explicit_name: str = Field(description="Explicit skill-name filter rule.")
    filter_skills: list[str] = Field(description="Skills left out of the metrics.")
    bootstrap_samples: int = Field(
        description="Bootstrap resamples for the paired-difference intervals."
    )
    bootstrap_seed: int = Field(description="Bootstrap seed.")
    reparse: bool = Field(False, description="Points re-read from the raw grader replies.")
    run: str = Field("", description="The run folder the metrics come from.")
    interval_method: str = Field(
        "95% percentile bootstrap interval over combinations",  # what files before it used
        description="How ci95 is computed, in one sentence.",
    )
    paired_method: str = Field(
        "", description="How adjacent leaderboard rows are compared, in one sentence."
    )


class MetricValueJson(Artifact):
    """One metric of one row (``MetricValue.as_dict()``); NaN is written as null."""

    mean: float | None = Field(description="Mean over combinations; None when undefined.")
    stderr: float | None = Field(description="Standard error of the mean; None when undefined.")
    ci95: list[float | None] | None = Field(
        description="95% interval [low, high] (settings.interval_method); None without data."
    )
    exact: str | None = Field(
        None, description="The mean as an exact fraction 'p/q'; ranks compare these."
    )


class CombinationScores(Artifact):
    """Per-combination values of a row (generation rounds combined): what paired tests pair."""

    index: list[int] = Field(description="Combination indices.")
    full_marks: list[float] = Field(description="Full Marks per combination.")
    all_skills: list[float] = Field(description="All Skills per combination.")
    skill_fraction: list[float] = Field(description="Skill Fraction per combination.")

    def values(self, name: str) -> list[float]:
        out: list[float] = getattr(self, name)
        return out


class MetricRowJson(OmitsAbsent):
    """One metric row (``MetricRow.as_dict()``): the rates only with ``details``."""

    _OMITTED_WHEN_NONE = ("per_skill", "per_topic", "combinations")

    student: StudentName
    grader: GraderName
    k: NumberOfSkills
    n: int = Field(description="Combinations with at least one usable verdict.")
    unparsed: int = Field(description="Verdicts left out (strict mode) for unusable points.")
    full_marks: MetricValueJson = Field(description="Ratio of Full Marks.")
    all_skills: MetricValueJson = Field(description="Ratio of All Skills.")
    skill_fraction: MetricValueJson = Field(description="Skill Fraction.")
    per_skill: dict[str, float | None] | None = Field(
        None,
        description="Per skill: its voted point per combination, generation rounds combined "
        "as the metrics combine them, averaged over combinations (details only).",
    )
    per_topic: dict[str, float | None] | None = Field(
        None, description="Ratio of Full Marks per topic (details only)."
    )
    combinations: CombinationScores | None = Field(
        None, description="Per-combination values (details only)."
    )

    def metric(self, name: str) -> MetricValueJson:
        """One of the three metrics by name (``METRIC_NAMES``)."""
        value: MetricValueJson = getattr(self, name)
        return value


class MetricsSection(Artifact):
    rows: list[MetricRowJson] = Field(
        description="One row per (student, grader, k): n, unparsed, the three metrics."
    )
    settings: MetricSettings = Field(description="The options that produced the rows.")


class UsageRow(Artifact):
    model: str = Field(description="Model name from the experiment.")
    model_id: str = Field(description="Model id sent to the backend.")
    role: str = Field(description="student or grader.")
    phase: str = Field(description="generate or grade.")
    records: int = Field(description="Records of this model in this phase.")
    cached_records: int = Field(description="Records answered from the response cache.")
    prompt_tokens: int = Field(description="Prompt tokens, cached replies included.")
    completion_tokens: int = Field(description="Completion tokens, cached replies included.")
    cost_usd: float | None = Field(description="Billed cost; None without a price.")
    cost_usd_including_cached: float | None = Field(
        description="Cost had no reply come from the cache."
    )


class GpuTime(Artifact):
    """GPU time of one student's generation pods (or of all of them), beside the estimate."""

    pods: int = Field(description="Generation pods whose GPU time was recorded.")
    gpu_seconds: float = Field(
        description="Measured GPU-seconds: each pod's GPUs (a MIG slice as its share of a GPU) "
        "times the seconds from its start to its end, failed and deleted pods included."
    )
    gpu_hours: float = Field(description="gpu_seconds / 3600.")
    failed_or_deleted_pods: int = Field(
        description="Pods that ended Failed or were Deleted (paid for, no result)."
    )
    failed_or_deleted_gpu_seconds: float = Field(
        description="The GPU-seconds of those pods (part of gpu_seconds)."
    )
    estimated_gpu_hours: float | None = Field(
        description="The launch plans' estimate, summed over the measured launch attempts; "
        "None when no plan estimated it."
    )
    measured_over_estimate: float | None = Field(
        description="gpu_hours / estimated_gpu_hours; None without a positive estimate."
    )


class GpuUsageSection(Artifact):
    """GPU time measured from the generation pods of a Kubernetes run (``usage/pods/``)."""

    students: dict[str, GpuTime] = Field(description="Per student, in the experiment's order.")
    total: GpuTime = Field(description="Every student together.")
    attempts: list[int] = Field(description="Launch attempts with GPU time recorded.")
    unmeasured_attempts: list[int] = Field(
        default_factory=list,
        description="Launch attempts that planned GPU time but recorded none (e.g. without "
        "the coordinator); their estimate is left out.",
    )
    note: str = Field(description="Where the numbers come from, in words.")
    warnings: list[str] = Field(
        default_factory=list, description="Usage or launch records that could not be read."
    )


class _Generated(Artifact):
    student: StudentName
    k: NumberOfSkills
    generation_round: GenerationRound


class FailedGeneration(_Generated):
    index: CombinationIndex
    reason: str | None = Field(description="The error.")


class FailedGrade(_Generated):
    grading_round: int = Field(description="Grading round.")
    index: CombinationIndex
    status: str = Field(description="failed or unparsed.")
    reason: str | None = Field(description="The error or the parse problem.")


class Failures(Artifact):
    generation_failed: int = Field(description="Generations that failed after retries.")
    grading_failed: int = Field(description="Verdicts that failed after retries.")
    grading_unparsed: int = Field(description="Verdicts without usable points.")
    grading_retried: int = Field(description="Verdicts that needed a re-ask.")
    generation: list[FailedGeneration] = Field(description="Failed generations (capped).")
    grading: list[FailedGrade] = Field(description="Failed or unparsed verdicts (capped).")


class LeaderboardCell(MetricValueJson):
    """A metric row's value for one k, with the row's counts."""

    n: int = Field(description="Combinations with at least one usable verdict.")
    unparsed: int = Field(description="Verdicts left out for unusable points.")


class LeaderboardRow(OmitsAbsent):
    """One ranked model; the run keys only in ``skillmix compare``."""

    _OMITTED_WHEN_NONE = (
        "run",
        "run_id",
        "run_label",
        "model",
        "own_score",
        "excluded",
        "score_ci95",
        "letters",
    )

    rank: int | None = Field(description="Competition rank; None without a score.")
    student: StudentName
    grader: GraderName
    ks: list[int] = Field(description="k values the model has rows for.")
    run: int | None = Field(None, description="1-based run position (compare only).")
    run_id: str | None = Field(None, description="The run id (compare only).")
    run_label: str | None = Field(None, description="'#position run id' (compare only).")
    model: str | None = Field(
        None, description="Student name, with its run when names clash (compare only)."
    )
    score: float | None = Field(description="Mean of the per-k means over the ranked ks.")
    exact_score: str | None = Field(
        None, description="The score as an exact fraction 'p/q' (what ranks compare)."
    )
    score_ci95: list[float] | None = Field(
        None,
        description="95% percentile bootstrap interval of the score (combinations resampled "
        "within each k); None without per-combination values or resamples.",
    )
    own_score: float | None = Field(
        None,
        description="Mean over the model's own ks, when they differ from the ranked ks (a "
        "score that no other run changes).",
    )
    tie_group: int | None = Field(
        None,
        description="Rows with the same group are statistically tied (no adjacent pair "
        "significantly different, and none significantly below the group's top row); None "
        "without a score.",
    )
    tied: bool = Field(
        False, description="Whether the paired test with a neighbouring row is not significant."
    )
    letters: str | None = Field(
        None,
        description="Compact letter display: rows that share a letter do not differ "
        "significantly (Holm-adjusted paired tests over every pair of ranked rows); rows with no "
        "letter in common do. None without a rank, and in files written before it existed.",
    )
    excluded: str | None = Field(
        None,
        description="Why the model is not ranked (planned work missing or failed); None when "
        "it is ranked or has no score.",
    )
    model_id: str | None = Field(None, description="Student model id sent to the backend.")
    backend: str | None = Field(None, description="Student backend.")
    sampling: dict[str, Any] | None = Field(None, description="Student sampling settings.")
    grader_model_id: str | None = Field(None, description="Grader model id.")
    cells: dict[str, LeaderboardCell | None] = Field(
        description="The metric per k (as text); None where the model has no row."
    )


class PairwiseResult(OmitsAbsent):
    """A paired comparison of two adjacent leaderboard rows (a ranked above b)."""

    _OMITTED_WHEN_NONE = ("p_adjusted",)

    a: str = Field(description="The upper row's model label.")
    b: str = Field(description="The lower row's model label.")
    a_rank: int | None = Field(description="Rank of a.")
    b_rank: int | None = Field(description="Rank of b.")
    diff: float | None = Field(description="score(a) - score(b) over the shared pairs.")
    ci95: list[float] | None = Field(description="95% paired bootstrap interval of diff.")
    p_value: float | None = Field(
        description="Exact two-sided sign test, unadjusted (raw); None: not tested."
    )
    significant: bool = Field(
        description="Whether a is significantly better: the Holm-adjusted p < 0.05 and the "
        "interval excludes 0 (the raw p in files without p_adjusted)."
    )
    pairs: int = Field(description="Shared (k, combination) pairs.")
    wins: int = Field(description="Pairs where a scores higher.")
    losses: int = Field(description="Pairs where b scores higher.")
    method: str = Field(description="The test, in words (or why there is none).")
    p_adjusted: float | None = Field(
        None,
        description="The p-value Holm-adjusted over every tested pair of ranked rows; None when "
        "not tested, and in files written before it existed.",
    )


class Leaderboard(Artifact):
    metric: str = Field(description="Metric name (full_marks, all_skills, skill_fraction).")
    title: str = Field(description="Metric title.")
    ranked_over_ks: list[int] = Field(description="k values every entry has (the ranking's).")
    ks: list[int] = Field(description="Every k value shown.")
    score_label: str = Field("mean over k", description="What the score is, naming its k values.")
    ranking_note: str = Field(
        "", description="Why scores are over fewer ks than some models have (else empty)."
    )
    rows: list[LeaderboardRow] = Field(description="Entries in rank order.")
    pairwise: list[PairwiseResult] = Field(
        default_factory=list, description="Paired tests of adjacent rows, top down."
    )


class QualityRow(Artifact):
    student: StudentName
    k: NumberOfSkills
    generations: int = Field(description="Generation records.")
    generation_failed: int = Field(description="Failed generations.")
    grades: int = Field(description="Grade records.")
    grades_ok: int = Field(description="Verdicts with usable points.")
    grades_unparsed: int = Field(description="Verdicts without usable points.")
    grades_failed: int = Field(description="Verdicts that failed after retries.")
    wrong_count: int = Field(description="Verdicts with the wrong number of points.")
    empty: int = Field(description="Verdicts where no points were found.")
    retried: int = Field(description="Verdicts that needed a re-ask.")
    extra_requests: int = Field(description="Extra grader requests the re-asks cost.")


class AgreementItem(Artifact):
    """``method.agreement.Agreement`` of one rubric item group."""

    subjects: int = Field(description="Items rated in at least two rounds.")
    ratings: int = Field(description="Ratings of those items.")
    percent: float | None = Field(description="Mean share of agreeing pairs of rounds.")
    unanimous: float | None = Field(description="Share of items rated the same in every round.")
    expected: float | None = Field(description="Chance agreement.")
    kappa: float | None = Field(description="Fleiss' kappa; None when undefined.")


class AgreementRow(Artifact):
    grader: GraderName
    student: str = Field(description="Student name, or 'all'.")
    k: int | str = Field(description="Number of skills, or 'all'.")
    items: dict[str, AgreementItem] = Field(description="Agreement per rubric item group.")


class AgreementSection(Artifact):
    grading_rounds: int = Field(description="Grading rounds seen.")
    groups: list[str] = Field(description="Rubric item groups, in order.")
    rows: list[AgreementRow] = Field(description="Per (grader, k), grader, (grader, student).")
    note: str = Field(description="How to read the numbers.")
    warnings: list[str] = Field(
        default_factory=list,
        description="Why the numbers may mean nothing (e.g. byte-identical grading rounds).",
    )


class ItemFailureCell(Artifact):
    """``method.items.ItemFailure`` of one rubric item group."""

    rate: float | None = Field(description="Share of the group's rubric points missed.")
    failed: float = Field(description="Points missed (1 - voted point, summed).")
    points: int = Field(description="Rubric points counted.")


class ItemFailureRow(Artifact):
    student: StudentName
    grader: GraderName
    answers: int = Field(description="Answers with a usable verdict.")
    items: dict[str, ItemFailureCell] = Field(description="Failure per rubric item group.")
    worst: str | None = Field(description="The group that fails most; None if none fails.")


class ItemFailures(Artifact):
    """Which rubric items fail most, per model, pooled over k."""

    groups: list[str] = Field(description="Rubric item groups, in order.")
    unit: str = Field(description="What a failure rate is, in words.")
    rows: list[ItemFailureRow] = Field(description="One row per model, leaderboard order.")


class ModelRef(Artifact):
    student: StudentName
    grader: GraderName


class SkillRateRow(Artifact):
    skill: str = Field(description="Skill name.")
    values: list[float | None] = Field(description="Rate per model column; None: not sampled.")
    n: list[int] = Field(description="Combinations per model column.")
    mean: float | None = Field(description="Mean of the rates present.")
    category: str = Field("", description="Skill category from the catalog.")


class TopicRateRow(Artifact):
    topic: str = Field(description="Topic.")
    values: list[float | None] = Field(description="Rate per model column; None: not sampled.")
    n: list[int] = Field(description="Combinations per model column.")
    mean: float | None = Field(description="Mean of the rates present.")


class CategoryRateRow(Artifact):
    category: str = Field(description="Skill category from the catalog.")
    skills: int = Field(description="Skills of the category that were sampled.")
    values: list[float | None] = Field(description="Rate per model column; None: not sampled.")
    n: list[int] = Field(description="(combination, skill) pairs per model column.")
    mean: float | None = Field(description="Mean of the rates present.")


class _RateTable(Artifact):
    columns: list[str] = Field(description="Model column labels.")
    models: list[ModelRef] = Field(description="The (student, grader) of each column.")
    unit: str = Field("", description="What a rate is, in words.")
    min_n: int = Field(
        0, description="Cells with fewer combinations do not count for the sort order."
    )


class SkillRates(_RateTable):
    rows: list[SkillRateRow] = Field(description="One row per skill, hardest first.")


class TopicRates(_RateTable):
    rows: list[TopicRateRow] = Field(description="One row per topic, hardest first.")


class CategoryRates(_RateTable):
    rows: list[CategoryRateRow] = Field(description="One row per skill category, hardest first.")


class ItemScores(Artifact):
    full_marks: float = Field(description="1 with every point, else 0.")
    all_skills: float = Field(description="1 with every skill point and 2 others, else 0.")
    skill_fraction: float = Field(description="Share of skill points (0 unless all 3 others).")


class GalleryRound(Artifact):
    grading_round: int = Field(description="Grading round.")
    points: list[float] | None = Field(description="Points as the grader gave them.")
    status: str = Field(description="ok, unparsed or failed.")
    parse_status: str = Field(description="How the reply was read.")
    attempts: int = Field(description="Grader requests for this verdict.")


class GalleryExample(Artifact):
    kind: str = Field(description="best, worst or explicit_name.")
    student: StudentName
    grader: GraderName
    k: NumberOfSkills
    generation_round: GenerationRound
    index: CombinationIndex
    topic: str = Field(description="Topic.")
    skills: list[str] = Field(description="Skills of the combination.")
    answer: str = Field(description="The answer (clipped).")
    rubric: list[str] = Field(description="Rubric item labels.")
    rounds: list[GalleryRound] = Field(description="Each grading round's verdict.")
    points: list[float] | None = Field(description="Voted points; None without a usable verdict.")
    scores: ItemScores | None = Field(description="The metric items of the voted points.")
    named_skills: list[str] = Field(description="Skills the answer names outright.")
    named_filtered: bool = Field(description="Whether those points were set to 0.")
    grader_reply: str = Field(description="First grading round's reply (clipped).")


class Reproduction(Artifact):
    """How to get these numbers again, and how to cite them."""

    commands: list[str] = Field(description="The commands that rebuild the run and its report.")
    revision: str | None = Field(
        description="The git revision of the skillmix that built the report (SKILLMIX_REVISION, "
        "as `skillmix version` prints it); None outside the image."
    )
    citation: list[str] = Field(description="Citation lines: SKILL-MIX, then the tool.")


class Summary(Versioned, OmitsAbsent):
    """``report/summary.json``: the machine-readable report every other report file comes from."""

    _OMITTED_WHEN_NONE = ("progress", "reproduction", "item_failures")

    run_id: str = Field(description="The run id.")
    run: str = Field(description="The run folder (URI).")
    created_at: str | None = Field(description="UTC time the run was first started.")
    reported_at: str = Field(description="UTC time the report was built.")
    skillmix_version: str = Field(description="skillmix version that built the report.")
    experiment: Experiment = Field(description="The resolved experiment (config schema).")
    catalog: SummaryCatalog = Field(description="Catalog provenance.")
    prompts: PromptVersions = Field(description="Prompt versions and hashes.")
    counts: Counts = Field(description="Planned and found records.")
    status: Literal["complete", "partial"] = Field(
        description="complete when every planned record of every model is done; else partial."
    )
    progress: list[PhaseProgress] | None = Field(
        None,
        description="Planned, done, failed and missing records per student and phase (None "
        "in files written before it existed).",
    )
    metrics: MetricsSection = Field(description="Metric rows and their settings.")
    leaderboards: list[Leaderboard] = Field(description="One ranking per metric.")
    usage: list[UsageRow] = Field(description="Tokens and cost per model and phase.")
    gpu_usage: GpuUsageSection | None = Field(
        None,
        description="GPU time measured from the generation pods beside the plan's estimate; "
        "None without pod usage records (local runs, reference imports, no GPU pods).",
    )
    failures: Failures = Field(description="Failed and unparsed records.")
    quality: list[QualityRow] = Field(description="Answer quality per student and k.")
    agreement: AgreementSection = Field(description="Agreement between grading rounds.")
    item_failures: ItemFailures | None = Field(
        None,
        description="Per model, the share of rubric points missed per item group (skills "
        "pooled; topic, sense and length each); None without a usable verdict, and in files "
        "written before it existed.",
    )
    skill_rates: SkillRates = Field(description="Per-skill success rates.")
    topic_rates: TopicRates = Field(description="Per-topic success rates.")
    category_rates: CategoryRates | None = Field(
        None, description="Per-skill-category success rates."
    )
    gallery: list[GalleryExample] = Field(description="Example answers with their verdicts.")
    metric_definitions: dict[str, str] = Field(
        default_factory=dict, description="The metrics (and 'voted') defined in words."
    )
    warnings: list[str] = Field(
        default_factory=list, description="What a reader must know (e.g. self-grading)."
    )
    reproduction: Reproduction | None = Field(
        None,
        description="The commands, revision and citation of the report's reproduction block "
        "(None in files written before it existed).",
    )
