"""Waiting for a pod's model server (its vLLM or mock sidecar) before a task asks it anything,
and telling from the server's own output why a start failed.

A native sidecar that never becomes healthy is restarted by the kubelet forever and the pod
never fails on its own: the bounded wait here is what ends it (exit 3), and reading the model
log lets it end at once for causes a restart cannot fix.
"""

from __future__ import annotations

import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

from skillmix.errors import ModelServerUnhealthy


def health_url(base_url: str) -> str:
    """The model server's ``/health`` (vLLM and the mock serve it beside ``/v1``)."""
    root = base_url.rstrip("/")
    return f"{root.removesuffix('/v1')}/health"


# ---- the model server's start (a pod's vLLM sidecar) ------------------------------------------

#: The line the chart's vLLM wrapper writes first into the model log at each start of the server
#: (the file then holds that start's output alone); what follows it names the start.
MODEL_LOG_START = "skillmix: model server start "
#: How much of the model log's end the health wait reads (a chained traceback fits).
MODEL_LOG_TAIL = 128 * 1024
#: After a transient failure: the pause before the one more model-load budget it is given.
MODEL_RETRY_BACKOFF = 10.0

_HUB = r"(?:huggingface\.co|hf\.co)"
#: (kind, transient, pattern, why, fix) in the order they are tried: permanent causes before
#: transient ones (a permanent cause does not go away by loading again), vLLM's own catch-all
#: for a model it could not resolve last (it wraps Hub errors of every kind).
_MODEL_FAILURES: tuple[tuple[str, bool, str, str, str], ...] = (
    (
        "oom",
        False,
        r"torch\.(?:cuda\.)?OutOfMemoryError|CUDA out of memory|CUDA error: out of memory"
        r"|No available memory for the cache blocks|larger than the available KV cache memory",
        "does not fit in GPU memory (CUDA out of memory)",
        "give it more GPUs (vllm.tensor_parallel_size), a smaller --max-model-len or "
        "--gpu-memory-utilization in vllm.args, or a smaller model",
    ),
    (
        "gated",
        False,
        r"GatedRepoError|Cannot access gated repo|You are trying to access a gated repo"
        r"|Access to model \S+ is restricted",
        "is gated on the Hugging Face Hub and this pod may not download it",
        "accept its terms on the Hub and set secrets.HF_TOKEN in the cluster profile to a "
        "token of that account",
    ),
    (
        "forbidden",
        False,
        r"\b403 Forbidden\b|Invalid credentials in Authorization header",
        "was refused by the Hugging Face Hub (401/403: the token is invalid or lacks access)",
        "check the token in the Secret of secrets.HF_TOKEN in the cluster profile",
    ),
    (
        "offline",
        False,
        r"outgoing traffic has been disabled",
        "is not in the model cache and Hub downloads are off (HF_HUB_OFFLINE)",
        "fill the cache (skillmix cache warm) or set model_cache_offline: false in the "
        "cluster profile",
    ),
    (
        "not-found",
        False,
        r"RepositoryNotFoundError|Repository Not Found for url|RevisionNotFoundError"
        r"|is not a local folder and is not a valid model identifier",
        "was not found on the Hugging Face Hub (404; a private repository answers 401)",
        "check the student's vllm.model (a Hub id or a path in the model cache); a private "
        "repository needs secrets.HF_TOKEN in the cluster profile",
    ),
    (
        "hub-429",
        True,
        r"\b429 Client Error|Too Many Requests for url|'429 Too Many Requests'",
        "could not be downloaded: the Hugging Face Hub rate-limited this pod (429 Too Many "
        "Requests)",
        "set secrets.HF_TOKEN in the cluster profile (a token has a higher rate limit), or "
        "fill a model cache once (skillmix cache warm) for the pods to share",
    ),
    (
        "hub-5xx",
        True,
        r"\b(?P<status>5\d\d) Server Error|Server error '(?P<status2>5\d\d)",
        "could not be downloaded: the Hugging Face Hub answered {status} (a server error)",
        "relaunch the run later (https://status.huggingface.co), or use a model cache "
        "(skillmix cache warm)",
    ),
    (
        "hub-unreachable",
        True,
        rf"host='[^'\n]*{_HUB}'|We couldn't connect to 'https://{_HUB}"
        r"|error happened while trying to locate the file on the Hub"
        rf"|(?:ConnectError|ConnectTimeout|ReadTimeout|ConnectionError)\b[^\n]*{_HUB}",
        "could not be downloaded: the Hugging Face Hub was unreachable (a connection error)",
        "check the pods' egress to huggingface.co, or use a model cache (skillmix cache warm)",
    ),
    (
        "not-found",
        False,
        r"Invalid repository ID or local directory specified",
        "was not found: vLLM could resolve it neither on the Hugging Face Hub nor as a path",
        "check the student's vllm.model (a Hub id or a path in the model cache)",
    ),
)
_MODEL_PATTERNS = tuple(re.compile(p) for _, _, p, _, _ in _MODEL_FAILURES)


@dataclass(frozen=True)
class ModelStartFailure:
    """Why a model server did not start, as its output says: ``transient`` ones (the Hub's
    429 and 5xx answers, connection errors) may pass on a restart; the others will not."""

    kind: str  # oom | gated | forbidden | offline | not-found | hub-429 | hub-5xx | hub-unreachable
    transient: bool
    reason: str  # "model M <why>"
    fix: str


def classify_model_log(text: str, model: str = "") -> ModelStartFailure | None:
    """The cause of a failed start that the output of one start of the model server (vLLM,
    with huggingface_hub, transformers and torch inside) names, or None when it names none of
    them (still loading, or an error this does not know). Pure: the text in, the verdict
    out."""
    name = f"model {model}" if model else "the model"
    for (kind, transient, _, why, fix), pattern in zip(
        _MODEL_FAILURES, _MODEL_PATTERNS, strict=True
    ):
        m = pattern.search(text)
        if m is None:
            continue
        groups = {k: v for k, v in m.groupdict().items() if v}
        status = groups.get("status") or groups.get("status2") or ""
        return ModelStartFailure(kind, transient, f"{name} {why.format(status=status)}", fix)
    return None


def read_model_log(path: str) -> tuple[str, str]:
    """(the start it is of, the text of its end) of the model log, ("", "") while there is
    none. The start is the wrapper's first line, so a restart of the server is a new one."""
    try:
        with open(path, "rb") as f:
            first = f.readline(512)
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - MODEL_LOG_TAIL))
            tail = f.read(MODEL_LOG_TAIL)
    except OSError:
        return "", ""
    head = first.decode("utf-8", "replace")
    start = head.strip() if head.startswith(MODEL_LOG_START) else ""
    return start, tail.decode("utf-8", "replace")


def wait_for_model_server(
    base_url: str,
    timeout: float,
    *,
    interval: float = 2.0,
    say: Callable[[str], None] = lambda _line: None,
    model_log: str | None = None,
    model: str = "",
    retry_backoff: float = MODEL_RETRY_BACKOFF,
    limit: float = 0.0,
) -> None:
    """Block until the pod's model server answers ``/health`` with 200, for at most
    ``timeout`` seconds (the model-load budget), else raise :class:`ModelServerUnhealthy`
    (exit 3) naming the last answer. A native sidecar that never becomes healthy is restarted
    by the kubelet forever and the pod never fails on its own: this bound is what ends it.

    With ``model_log`` (the file the chart's vLLM wrapper fills with the output of the
    server's current start) the wait also reads why a start failed
    (:func:`classify_model_log`): a permanent cause (gated, not found, out of memory) ends it
    at once; a transient one (the Hub's 429 or 5xx, a connection error) gets one more chance
    while the kubelet restarts the server: ``retry_backoff`` seconds, then one more budget,
    and a transient failure of a later start ends it. An unknown cause waits out the budget.
    ``limit`` (seconds, 0 = none) bounds the whole wait, the retry included."""

    url = health_url(base_url)
    began = time.monotonic()
    cap = began + limit if limit > 0 else float("inf")
    deadline = min(cap, began + timeout)
    tries, said = 0, 0.0
    retried: ModelStartFailure | None = None  # the transient failure given the one retry
    retried_start = ""
    while True:
        tries += 1
        last = _health_answer(url, timeout)
        if last is None:
            if tries > 1:
                say(f"model server healthy after {tries} checks")
            return
        failure, start = _start_failure(model_log, model)
        now = time.monotonic()
        if failure is not None and not failure.transient:
            raise ModelServerUnhealthy(
                f"model server failed to start: {failure.reason}", hint=failure.fix
            )
        if failure is not None and retried is None:
            retried, retried_start = failure, start
            deadline = min(cap, now + retry_backoff + timeout)
            say(
                f"model server failed to start: {failure.reason}; transient: waiting "
                f"{retry_backoff:g}s, then up to {timeout:g}s more for its restart"
            )
            time.sleep(max(0.0, min(retry_backoff, deadline - now)))
            continue
        if failure is not None and start != retried_start:
            raise ModelServerUnhealthy(
                f"model server failed to start: {failure.reason}, again after one retry",
                hint=failure.fix,
            )
        if now >= deadline:
            raise _never_healthy(url, timeout, last, retried)
        if now - said >= 30:
            said = now
            say(f"waiting for the model server at {url} ({last})")
        time.sleep(min(interval, max(0.05, deadline - now)))


def _health_answer(url: str, timeout: float) -> str | None:
    """Ask ``/health`` once: None when it answers 200, else what it answered instead (a
    status, or why there was no answer), for the line that ends the wait."""
    try:
        with urllib.request.urlopen(url, timeout=min(5.0, max(0.5, timeout))) as answer:
            if answer.status == 200:
                return None
            return f"HTTP {answer.status}"
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except (OSError, urllib.error.URLError) as exc:
        return str(getattr(exc, "reason", exc)) or exc.__class__.__name__


def _start_failure(model_log: str | None, model: str) -> tuple[ModelStartFailure | None, str]:
    """(why the current start failed, which start it is) from the model log; (None, "")
    without one (mock sidecars) or while it names no known cause."""
    if not model_log:
        return None, ""
    start, text = read_model_log(model_log)
    return classify_model_log(text, model), start


def _never_healthy(
    url: str, timeout: float, last: str, retried: ModelStartFailure | None
) -> ModelServerUnhealthy:
    """The error for a load budget spent: after a transient failure's retry it names that
    failure (the likely cause), else where to look."""
    if retried is not None:
        return ModelServerUnhealthy(
            f"model server never became healthy after one retry: {retried.reason}; "
            f"then {url} did not answer 200 within {timeout:g}s (last: {last})",
            hint=retried.fix,
        )
    return ModelServerUnhealthy(
        f"model server never became healthy: {url} did not answer 200 within "
        f"{timeout:g}s (model-load budget; last: {last})",
        hint="see the model container's log (skillmix logs RUN --container model): "
        "a wrong model id, a gated model without HF_TOKEN, out of memory, or a load "
        "slower than deadlines.model_load_seconds",
    )
