"""A reasoning task's results in SkyThought's layout: one ``results.json`` entry per problem
(the dataset row, the conversation, the responses with their verdicts, token usage) and the
``summary.json`` (configuration, token totals and averages, accuracy, pass@k), with
skillmix's intervals and maj@k beside SkyThought's keys. The local executor of a task and the
aggregation of an experiment's tasks both write them through here."""

from __future__ import annotations

from typing import Any

from skillmix import __version__
from skillmix.config import ModelSpec
from skillmix.method.reasoning_metrics import ReasoningMetrics, reasoning_metrics
from skillmix.pipeline.scoring import Verdict
from skillmix.tasks.handlers import Problem


def results_entry(
    problem: Problem,
    messages: list[dict[str, str]],
    texts: list[str],
    verdicts: list[Verdict | None],
    result: Any,
) -> dict[str, Any]:
    """One problem of results.json, as SkyThought writes it (token usage split evenly over the
    n responses: the API reports it per request)."""
    n = max(1, len(texts))
    usage = {
        "completion_tokens": result.completion_tokens // n,
        "prompt_tokens": result.prompt_tokens,
    }
    return {
        **json_safe(problem.row),
        "prompt": problem.user,
        "input_conversation": messages,
        "responses": [
            {
                "content": t,
                "correctness": v.correct if v else None,
                "reason": v.reason if v else None,
                "answer": v.extracted if v else None,
            }
            for t, v in zip(texts, verdicts, strict=True)
        ],
        "token_usages": [dict(usage) for _ in texts],
    }


def json_safe(row: dict[str, Any]) -> dict[str, Any]:
    return {
        k: (v if isinstance(v, str | int | float | bool | list | dict) or v is None else str(v))
        for k, v in row.items()
    }


def task_configuration(
    task: str,
    spec: ModelSpec,
    *,
    n: int,
    seed: int,
    dataset: str,
    revision: str,
    system_prompt: str | None,
    user_template: str | None = None,
    assistant_prefill: str | None = None,
    as_test: bool = False,
    scorer: str = "skythought",
) -> dict[str, Any]:
    """What determines a task run's results: hashed into its folder name, kept in summary.json
    (the keys SkyThought's configuration has, and the scorer when it is not the default)."""
    return {
        "task": task,
        "model": spec.model,
        "backend": spec.backend,
        "system_prompt": system_prompt,
        "user_template": user_template,
        "assistant_prefill": assistant_prefill,
        "sampling_params": {**spec.sampling.request_params(), "n": n},
        "seed": seed,
        "dataset": dataset,
        "dataset_revision": revision,
        "as_test": as_test,
        **({"scorer": scorer} if scorer != "skythought" else {}),
    }


def usage_summary(results: dict[str, dict[str, Any]], config: dict[str, Any]) -> dict[str, Any]:
    """summary.json's configuration and token keys (SkyThought's), prompt tokens averaged per
    problem: the API reports them once per request of n responses."""
    usages = [e.get("token_usages") or [] for e in results.values()]
    completion = sum(u["completion_tokens"] for us in usages for u in us)
    prompt = sum(us[0]["prompt_tokens"] for us in usages if us)
    responses = sum(len(e["responses"]) for e in results.values())
    return {
        "configuration": {**config, "skillmix_version": __version__},
        "total_completion_tokens": completion,
        "avg_completion_tokens": round(completion / responses, 3) if responses else 0,
        "total_prompt_tokens": prompt,
        "avg_prompt_tokens": round(prompt / len(results), 3) if results else 0,
    }


def summarize(
    results: dict[str, dict[str, Any]],
    config: dict[str, Any],
    *,
    model: str,
    task: str,
    seed: int,
    planned: int,
) -> tuple[ReasoningMetrics, dict[str, Any]]:
    """summary.json: SkyThought's keys, with its averages fixed (prompt tokens per problem,
    not divided by n), and skillmix's intervals and maj@k beside them."""
    by_problem = {
        i: [(r.get("answer") or "", bool(r["correctness"])) for r in e["responses"]]
        for i, e in results.items()
    }
    metrics = reasoning_metrics(model, task, by_problem, seed=seed)
    summary = {
        **usage_summary(results, config),
        "accuracy": metrics.skythought_accuracy(),
        "pass_at_k": metrics.skythought_pass_at_k(),
        "skillmix": intervals(metrics, planned),
    }
    return metrics, summary


def intervals(m: ReasoningMetrics, planned: int) -> dict[str, Any]:
    def est(e: Any) -> dict[str, Any]:
        return {"value": e.value, "ci95": list(e.ci95) if e.ci95 else None}

    return {
        "problems_planned": planned,
        "problems_done": m.problems,
        "n": m.n,
        "accuracy": est(m.accuracy),
        "pass_at_k": {f"k={k}": est(e) for k, e in m.pass_at_k.items()},
        "maj_at_k": {f"k={k}": est(e) for k, e in m.maj_at_k.items()},
    }
