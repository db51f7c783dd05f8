"""The run's vocabulary, defined once: its phases and the label and annotation keys that name a
run's Kubernetes objects. Everything that speaks of a phase or reads a label imports it from
here (the chart's templates write the same keys: tests/unit/test_vocab.py checks them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple, get_args

# the pipeline's phases, in order (locally and on a cluster)
Phase = Literal["generate", "grade", "aggregate"]
PHASES: tuple[Phase, ...] = get_args(Phase)
# what a Job of a run does: a pipeline phase, or the coordinator that releases them
JobPhase = Literal["generate", "grade", "aggregate", "coordinate"]
JOB_PHASES: tuple[JobPhase, ...] = get_args(JobPhase)


class Unit(NamedTuple):
    """One (student, k, generation round) unit: a generation task and its grading task. Store
    folders, Job labels, launch records and pods all name work by it."""

    student: str
    k: int
    round: int


def owned_by(position: int, shard: int, shards: int) -> bool:
    """Whether the item at ``position`` is shard ``shard``'s of ``shards``: each shard (a pod
    of an Indexed Job) owns every ``shards``-th item from its own index."""
    return position % shards == shard


@dataclass(frozen=True, kw_only=True)
class Sharded:
    """Work split over ``shards`` pods, of which this is shard ``shard``."""

    shard: int = 0
    shards: int = 1

    def owns(self, position: int) -> bool:
        return owned_by(position, self.shard, self.shards)


# labels of every Job and pod of a run (helm/skillmix/templates/_helpers.tpl skillmix.jobLabels)
RUN_LABEL = "skillmix.io/run"
PHASE_LABEL = "skillmix.io/phase"
STUDENT_LABEL = "skillmix.io/student"
K_LABEL = "skillmix.io/k"
ROUND_LABEL = "skillmix.io/round"
TASK_LABEL = "skillmix.io/task"  # a reasoning task's generation Jobs (experiment `tasks:`)
ATTEMPT_LABEL = "skillmix.io/attempt"
SERVING_LABEL = "skillmix.io/serving"  # per-unit or per-model generation Jobs
# a Job held back until its inputs exist, and how (see k8s/values.py hold_mode)
GATED_LABEL = "skillmix.io/gated"
HOLD_ANNOTATION = "skillmix.io/hold"
POOL_ANNOTATION = "skillmix.io/pool"
POOL_SIZE_ANNOTATION = "skillmix.io/pool-size"
POOL_WEIGHT_ANNOTATION = "skillmix.io/pool-weight"
# why the coordinator failed a Job (a pod stuck where no retry helps); status shows it
FAILURE_ANNOTATION = "skillmix.io/failure"
# the pre-flight's dry-run pods name the Job they stand for
PREFLIGHT_ANNOTATION = "skillmix.io/preflight-for"
# keys of other owners that skillmix reads or writes
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
ADMISSION_GATE_ANNOTATION = "kueue.x-k8s.io/admission-gated-by"
JOB_NAME_LABELS = ("batch.kubernetes.io/job-name", "job-name")
