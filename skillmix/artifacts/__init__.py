"""The run's JSON artifacts as versioned models: ``run.json``, ``report/summary.json`` and the
Kubernetes launch records (``launches/attempt-NNN.json``).

Like inspect_ai's ``EvalLog``, every artifact carries a ``schema_version``; readers refuse a
version they do not know and turn a damaged or partial file into one :class:`SkillmixError`
line naming the file and what is wrong (never a traceback). ``run.json`` is a union on its
``kind``: an evaluation run or a reference import; files written before ``kind`` existed get
it inferred from their keys. Writers build the JSON through ``model_dump(mode="json")``, so the
field order here is the key order on disk.

The experiment embedded in ``run.json`` and ``summary.json`` is the experiment file's own strict
schema (:class:`skillmix.config.Experiment`), checked on read like every other part, so readers
use attributes and a bad experiment is one error line naming the field. Files written before it
was typed read as they are: every experiment key a version ever wrote is still a field (later
ones have defaults), and ``model_dump(mode="json")`` writes the same JSON the dict held.

A launch record's Helm values (:class:`ReleaseValues`) type the keys skillmix reads back (the
units of the attempt) and keep every other key as it was: a resumed launch renders the release
from them again, so they write back exactly what they read.
"""

from skillmix.artifacts.base import (
    SCHEMA_VERSION,
    SUPPORTED_VERSIONS,
    Artifact,
    CatalogSource,
    GradingPromptVersion,
    OmitsAbsent,
    PromptVersion,
    Versioned,
)
from skillmix.artifacts.launch import (
    JobRecord,
    LaunchPlanRecord,
    LaunchRecord,
    ModelGenerationValues,
    PodUsage,
    ReleaseValues,
    RoundValues,
    ServingEstimateRecord,
    UnitRef,
    UnitValues,
)
from skillmix.artifacts.reading import parse_artifact, validate_artifact
from skillmix.artifacts.run import (
    RUN_JSON_ADAPTER,
    CatalogSkill,
    EvaluationRun,
    GradingTemplateJson,
    PromptTemplateJson,
    ReferenceImportRun,
    RunCatalog,
    RunJson,
    RunPrompts,
)
from skillmix.artifacts.summary import (
    AgreementItem,
    AgreementRow,
    AgreementSection,
    CategoryRateRow,
    CategoryRates,
    CombinationScores,
    Counts,
    FailedGeneration,
    FailedGrade,
    Failures,
    GalleryExample,
    GalleryRound,
    GpuTime,
    GpuUsageSection,
    ItemScores,
    Leaderboard,
    LeaderboardCell,
    LeaderboardRow,
    MetricRowJson,
    MetricSettings,
    MetricsSection,
    MetricValueJson,
    ModelRef,
    PairwiseResult,
    PhaseProgress,
    PromptVersions,
    QualityRow,
    SkillRateRow,
    SkillRates,
    Summary,
    SummaryCatalog,
    TopicRateRow,
    TopicRates,
    UsageRow,
)

__all__ = [
    "RUN_JSON_ADAPTER",
    "SCHEMA_VERSION",
    "SUPPORTED_VERSIONS",
    "AgreementItem",
    "AgreementRow",
    "AgreementSection",
    "Artifact",
    "CatalogSkill",
    "CatalogSource",
    "CategoryRateRow",
    "CategoryRates",
    "CombinationScores",
    "Counts",
    "EvaluationRun",
    "FailedGeneration",
    "FailedGrade",
    "Failures",
    "GalleryExample",
    "GalleryRound",
    "GpuTime",
    "GpuUsageSection",
    "GradingPromptVersion",
    "GradingTemplateJson",
    "ItemScores",
    "JobRecord",
    "LaunchPlanRecord",
    "LaunchRecord",
    "Leaderboard",
    "LeaderboardCell",
    "LeaderboardRow",
    "MetricRowJson",
    "MetricSettings",
    "MetricValueJson",
    "MetricsSection",
    "ModelGenerationValues",
    "ModelRef",
    "OmitsAbsent",
    "PairwiseResult",
    "PhaseProgress",
    "PodUsage",
    "PromptTemplateJson",
    "PromptVersion",
    "PromptVersions",
    "QualityRow",
    "ReferenceImportRun",
    "ReleaseValues",
    "RoundValues",
    "RunCatalog",
    "RunJson",
    "RunPrompts",
    "ServingEstimateRecord",
    "SkillRateRow",
    "SkillRates",
    "Summary",
    "SummaryCatalog",
    "TopicRateRow",
    "TopicRates",
    "UnitRef",
    "UnitValues",
    "UsageRow",
    "Versioned",
    "parse_artifact",
    "validate_artifact",
]
