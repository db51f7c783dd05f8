"""Where everything of a run lives: one place for the run-folder layout.

A store root holds run folders (one per run id) and, beside them, the response cache that runs
share. Inside a run folder::

    run.json                                   what the run is (artifacts.RunJson)
    generations/{student}/k{k}/r{g}/           part-*.jsonl, then _SUCCESS (the manifest)
    grades/{grader}/{student}/k{k}/r{g}/g{r}/  the same, per grading round
    launches/attempt-NNN.json                  Kubernetes launch records (artifacts.LaunchRecord)
    launches/attempt-NNN.created               every object of that attempt was created (k8s/launch.py)
    _lock/lease-NNNNNNNNN.json                 the run lock while a process writes the run
                                               (store/lock.py; gone once it is released)
    logs/vllm-{student}.log                    a local `vllm serve`'s output (executors/local.py)
    report/                                    summary.json, metrics.csv, report.md,
                                               report.html, plots/*.png
    logs/pods/{pod name}.log                   each Kubernetes client's own log, uploaded at
                                               exit (outlives the Job's ttlSecondsAfterFinished)
    tasks/{task}/problems.json                 a reasoning task's rows, frozen when first asked
    tasks/{task}/{student}/s{i}of{n}/          its responses: part-*.jsonl, then _SUCCESS
    report/tasks/{model}_{task}_{hash}/        results.json + summary.json (SkyThought's layout)
    report/tasks.html                          the tasks side by side (report/task_board.py)
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar


class RunLayout:
    """Names and paths of a run folder (relative keys), and where its cache is."""

    RUN_JSON: ClassVar[str] = "run.json"
    MANIFEST: ClassVar[str] = "_SUCCESS"
    PART_PREFIX: ClassVar[str] = "part-"
    GENERATIONS: ClassVar[str] = "generations"
    GRADES: ClassVar[str] = "grades"
    LAUNCHES: ClassVar[str] = "launches"
    REPORT: ClassVar[str] = "report"
    SUMMARY: ClassVar[str] = "summary.json"
    METRICS_CSV: ClassVar[str] = "metrics.csv"
    REPORT_MD: ClassVar[str] = "report.md"
    REPORT_HTML: ClassVar[str] = "report.html"
    PLOTS: ClassVar[str] = "plots"
    CACHE: ClassVar[str] = "_cache"  # in the store root, beside the run folders
    LOGS: ClassVar[str] = "logs"  # local vLLM server logs (executors/local.py)
    LOCK: ClassVar[str] = "_lock"  # the run lock's leases (store/lock.py), not run content
    POD_LOGS: ClassVar[str] = "logs/pods"
    POD_USAGE: ClassVar[str] = "usage/pods"
    TASKS: ClassVar[str] = "tasks"  # reasoning tasks of the experiment (``tasks:``)
    TASKS_HTML: ClassVar[str] = "tasks.html"

    @classmethod
    def generation_prefix(cls, student: str, k: int, generation_round: int) -> str:
        return f"{cls.GENERATIONS}/{student}/k{k}/r{generation_round}"

    @classmethod
    def grade_prefix(
        cls, grader: str, student: str, k: int, generation_round: int, grading_round: int
    ) -> str:
        return f"{cls.GRADES}/{grader}/{student}/k{k}/r{generation_round}/g{grading_round}"

    @classmethod
    def task_problems(cls, task: str) -> str:
        return f"{cls.TASKS}/{task}/problems.json"

    @classmethod
    def task_prefix(cls, task: str, student: str, shard: int, shards: int) -> str:
        return f"{cls.TASKS}/{task}/{student}/s{shard}of{shards}"

    @classmethod
    def _attempt_file(cls, attempt: int, suffix: str) -> str:
        """``launches/attempt-NNN<suffix>``: a file of Kubernetes launch attempt ``attempt``."""
        return f"{cls.LAUNCHES}/attempt-{attempt:03d}{suffix}"

    @classmethod
    def launch_record(cls, attempt: int) -> str:
        return cls._attempt_file(attempt, ".json")

    @classmethod
    def launch_created(cls, attempt: int) -> str:
        """Written once every object of launch attempt ``attempt`` exists; without it the
        next ``skillmix launch`` completes that attempt instead of starting a new one."""
        return cls._attempt_file(attempt, ".created")

    @classmethod
    def launch_deferred(cls, attempt: int) -> str:
        """The manifests of launch attempt ``attempt``'s Jobs that the launch does not create
        (with Kueue, held back until their inputs exist): the coordinator creates each one
        from here when it releases it."""
        return cls._attempt_file(attempt, ".deferred.yaml")

    @classmethod
    def pod_usage(cls, pod_name: str) -> str:
        """``usage/pods/<pod name>.json``: the GPU time one generation pod held, from its start
        and finish times (written by the run's coordinator)."""
        return f"{cls.POD_USAGE}/{pod_name}.json"

    @classmethod
    def pod_log(cls, pod_name: str) -> str:
        """``logs/pods/<pod name>.log``: the log a pod's client uploads at exit (pod names are
        DNS-1123 labels, so the key needs no escaping)."""
        return f"{cls.POD_LOGS}/{pod_name}.log"

    @classmethod
    def lease_key(cls, epoch: int) -> str:
        """The run lock's lease number ``epoch`` (the highest number is the current one)."""
        return f"{cls.LOCK}/lease-{epoch:09d}.json"

    @classmethod
    def report_file(cls, name: str) -> str:
        """``report/NAME`` (NAME relative to the report folder, e.g. ``plots/x.png``)."""
        return f"{cls.REPORT}/{name}"

    @classmethod
    def plot(cls, name: str) -> str:
        """A plot's name inside the report folder."""
        return f"{cls.PLOTS}/{name}.png"

    @classmethod
    def summary_key(cls) -> str:
        return cls.report_file(cls.SUMMARY)

    @staticmethod
    def cache_root(run_uri: str) -> str:
        """The store that holds a run folder, where the shared response cache lives: the
        parent of the run folder (a bucket root stays itself; a local folder is resolved, so a
        bare name given from inside the store folder finds the store)."""
        trimmed = run_uri.rstrip("/")
        if trimmed.startswith("s3://"):
            if "/" not in trimmed.removeprefix("s3://"):
                return trimmed
            return trimmed.rsplit("/", 1)[0]
        return str(Path(trimmed.removeprefix("file://")).resolve().parent)
