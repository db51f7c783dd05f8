"""Why a pod's vLLM sidecar did not start, from its output: the classifier (pure) on the text
vLLM, huggingface_hub, transformers and torch print, and the health wait that acts on it
(permanent: exit 3 at once; transient: one more load budget; unknown: the budget)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from skillmix.backends.mock_config import MockServerConfig
from skillmix.backends.mock_server import MockServer
from skillmix.errors import ModelServerUnhealthy
from skillmix.pipeline.model_server import (
    MODEL_LOG_START,
    classify_model_log,
    read_model_log,
    wait_for_model_server,
)

RID = "(Request ID: Root=1-67fe23fa-3a2150eb444c2a823c388579;de3aed68-c397-4da5-94d4-6565efd3b919)"
API = "(APIServer pid=1) "  # vLLM >= 0.10 prefixes each line of a process

# what the libraries print, in the forms seen in the wild (vLLM 0.6-0.11, huggingface_hub 0.2x
# and 1.x, transformers 4.x, torch 2.x)
GATED_401 = f"""Traceback (most recent call last):
  File "/usr/local/lib/python3.12/dist-packages/huggingface_hub/utils/_http.py", line 409, in hf_raise_for_status
    response.raise_for_status()
requests.exceptions.HTTPError: 401 Client Error: Unauthorized for url: https://huggingface.co/meta-llama/Llama-3.1-8B-Instruct/resolve/main/config.json

The above exception was the direct cause of the following exception:

huggingface_hub.errors.GatedRepoError: 401 Client Error. {RID}

Cannot access gated repo for url https://huggingface.co/meta-llama/Llama-3.1-8B-Instruct/resolve/main/config.json.
Access to model meta-llama/Llama-3.1-8B-Instruct is restricted. You must have access to it and be authenticated to access it. Please log in.
"""
GATED_TRANSFORMERS = f"""OSError: You are trying to access a gated repo.
Make sure to have access to it at https://huggingface.co/meta-llama/Llama-3.2-1B-Instruct.
401 Client Error. {RID}
"""
GATED_403 = (
    "huggingface_hub.utils._errors.GatedRepoError: 403 Client Error. "
    f"{RID}\n\nCannot access gated repo for url https://huggingface.co/google/gemma-2-9b-it/"
    "resolve/main/config.json.\nAccess to model google/gemma-2-9b-it is restricted and you are "
    "not in the authorized list. Visit https://huggingface.co/google/gemma-2-9b-it to ask for "
    "access.\n"
)
NOT_FOUND_404 = f"""huggingface_hub.errors.RepositoryNotFoundError: 404 Client Error. {RID}

Repository Not Found for url: https://huggingface.co/api/models/Qwen/Qwen9-0.5B/revision/main.
Please make sure you specified the correct `repo_id` and `repo_type`.
If you are trying to access a private or gated repo, make sure you are authenticated.
"""
NOT_FOUND_401 = "".join(
    f"{API}{line}\n"
    for line in (
        f"huggingface_hub.errors.RepositoryNotFoundError: 401 Client Error. {RID}",
        "",
        "Repository Not Found for url: https://huggingface.co/Qwen/Qwen3.5-27B-AWQ/resolve/main/config.json.",
        "Please make sure you specified the correct `repo_id` and `repo_type`.",
        "Invalid username or password.",
    )
)
NOT_FOUND_TRANSFORMERS = (
    "OSError: infloat/e5-large-v2 is not a local folder and is not a valid model identifier "
    "listed on 'https://huggingface.co/models'\nIf this is a private repository, make sure to "
    "pass a token having permission to this repo\n"
)
INVALID_REPO_ID = """ValueError: Invalid repository ID or local directory specified: 'neuralmagic/x'.
Please verify the following requirements:
1. Provide a valid Hugging Face repository ID.
"""
OOM = (
    "(EngineCore_DP0 pid=214) ERROR 10-08 09:12:44 [core.py:708] torch.OutOfMemoryError: CUDA "
    "out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.19 GiB of "
    "which 1.06 GiB is free.\n"
    f"{API}RuntimeError: Engine core initialization failed. See root cause above. Failed core "
    "proc(s): {}\n"
)
OOM_OLD = "torch.cuda.OutOfMemoryError: CUDA out of memory. Tried to allocate 1.96 GiB\n"
OOM_CUDA_ERROR = "RuntimeError: CUDA error: out of memory\nCUDA kernel errors might be ...\n"
NO_KV_CACHE = (
    "ValueError: No available memory for the cache blocks. Try increasing "
    "`gpu_memory_utilization` when initializing the engine.\n"
)
KV_TOO_SMALL = (
    "ValueError: To serve at least one request with the models's max seq len (131072), (16.0 "
    "GiB KV cache is needed, which is larger than the available KV cache memory (9.3 GiB).\n"
)
HUB_429 = (
    "requests.exceptions.HTTPError: 429 Client Error: Too Many Requests for url: "
    "https://huggingface.co/api/models/Qwen/Qwen2.5-0.5B-Instruct/revision/main\n\n"
    "The above exception was the direct cause of the following exception:\n\n"
    "huggingface_hub.errors.HfHubHTTPError: 429 Client Error: Too Many Requests for url: "
    f"https://huggingface.co/api/models/Qwen/Qwen2.5-0.5B-Instruct/revision/main {RID}\n"
)
HUB_429_TRANSFORMERS = (
    "OSError: There was a specific connection error when trying to load "
    "flax-community/roberta-base-thai:\n429 Client Error: Too Many Requests for url: "
    "https://huggingface.co/flax-community/roberta-base-thai/resolve/main/config.json\n"
)
HUB_429_HTTPX = (
    "huggingface_hub.errors.HfHubHTTPError: Client error '429 Too Many Requests' for url "
    "'https://huggingface.co/api/models/Qwen/Qwen3-8B/revision/main'\n"
)
HUB_503 = (
    "huggingface_hub.utils._errors.HfHubHTTPError: 503 Server Error: Service Temporarily "
    "Unavailable for url: https://huggingface.co/timm/vit/resolve/main/model.safetensors\n"
)
HUB_504 = (
    "HfHubHTTPError: 504 Server Error: Gateway Time-out for url: "
    "https://huggingface.co/api/models/x/y/commit/main\n"
)
HUB_502_HTTPX = (
    "huggingface_hub.errors.HfHubHTTPError: Server error '502 Bad Gateway' for url "
    "'https://huggingface.co/api/models/x/y'\n"
)
HUB_CONNECTION = (
    'requests.exceptions.ConnectionError: (MaxRetryError("HTTPSConnectionPool(host='
    "'huggingface.co', port=443): Max retries exceeded with url: /api/models/x/y (Caused by "
    "NewConnectionError('<urllib3.connection.HTTPSConnection object at 0x7f>: Failed to "
    "establish a new connection: [Errno 101] Network is unreachable'))\"), '(Request ID: "
    "4f1c)')\n"
)
HUB_LOCAL_ENTRY = (
    "huggingface_hub.errors.LocalEntryNotFoundError: An error happened while trying to locate "
    "the file on the Hub and we cannot find the requested files in the local cache. Please "
    "check your connection and try again or make sure your Internet connection is on.\n"
)
HUB_NO_CONNECT = (
    "OSError: We couldn't connect to 'https://huggingface.co' to load this file, couldn't "
    "find it in the cached files and it looks like Qwen/x is not the path to a directory "
    "containing a file named config.json.\n"
)
OFFLINE = (
    "huggingface_hub.errors.LocalEntryNotFoundError: Cannot find the requested files in the "
    "disk cache and outgoing traffic has been disabled. To enable hf.co look-ups and "
    "downloads online, set 'local_files_only' to False.\n"
)
FORBIDDEN = (
    "huggingface_hub.errors.HfHubHTTPError: \n\n403 Forbidden: Please enable access to public "
    "gated repositories in your fine-grained token settings to view this repository..\n"
    "Cannot access content at: https://huggingface.co/api/models/x/y.\n"
    "Make sure your token has the correct permissions.\n"
)
BAD_TOKEN = (
    "huggingface_hub.errors.HfHubHTTPError: 401 Client Error: Unauthorized for url: "
    f"https://huggingface.co/api/models/x/y {RID}\n\nInvalid credentials in Authorization "
    "header\n"
)
STARTING = (
    f"{API}INFO 10-08 09:12:01 [api_server.py:1839] vLLM API server version 0.11.0\n"
    f"{API}INFO 10-08 09:12:01 [utils.py:233] non-default args: {{'model': 'stand-in/oom'}}\n"
    f"{API}INFO 10-08 09:12:09 [model.py:547] Resolved architecture: Qwen2ForCausalLM\n"
    "Loading safetensors checkpoint shards:  50% Completed | 1/2 [00:01<00:01,  1.1s/it]\n"
)
# huggingface_hub's own retry of a request (http_backoff): a warning, not a failure
HUB_RETRY_WARNING = (
    "HTTP Error 429 thrown while requesting HEAD https://huggingface.co/x/y/resolve/main/"
    "config.json\nRetrying in 1s [Retry 1/5].\n"
)


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        (GATED_401, "gated"),
        (GATED_TRANSFORMERS, "gated"),
        (GATED_403, "gated"),
        (NOT_FOUND_404, "not-found"),
        (NOT_FOUND_401, "not-found"),
        (NOT_FOUND_TRANSFORMERS, "not-found"),
        (NOT_FOUND_404 + INVALID_REPO_ID, "not-found"),
        (INVALID_REPO_ID, "not-found"),
        (OOM, "oom"),
        (OOM_OLD, "oom"),
        (OOM_CUDA_ERROR, "oom"),
        (NO_KV_CACHE, "oom"),
        (KV_TOO_SMALL, "oom"),
        (OFFLINE, "offline"),
        (FORBIDDEN, "forbidden"),
        (BAD_TOKEN, "forbidden"),
        (HUB_429, "hub-429"),
        (HUB_429_TRANSFORMERS, "hub-429"),
        (HUB_429_HTTPX, "hub-429"),
        (HUB_503, "hub-5xx"),
        (HUB_504, "hub-5xx"),
        (HUB_502_HTTPX, "hub-5xx"),
        (HUB_CONNECTION, "hub-unreachable"),
        (HUB_LOCAL_ENTRY, "hub-unreachable"),
        (HUB_NO_CONNECT, "hub-unreachable"),
    ],
)
def test_the_causes_are_told_apart(text: str, kind: str) -> None:
    failure = classify_model_log(STARTING + text, "org/model")
    assert failure is not None and failure.kind == kind
    assert failure.transient is kind.startswith("hub-")
    assert failure.reason.startswith("model org/model ") and failure.fix


@pytest.mark.parametrize(
    "text",
    [
        "",
        STARTING,
        HUB_RETRY_WARNING,
        "ModuleNotFoundError: No module named 'vllm'\n",
        f"{API}RuntimeError: Engine core initialization failed. Failed core proc(s): {{}}\n",
        "ValueError: Unsupported architecture: FooForCausalLM\n",
    ],
)
def test_what_names_no_known_cause_is_unknown(text: str) -> None:
    assert classify_model_log(text, "org/model") is None


def test_a_permanent_cause_outranks_a_transient_one() -> None:
    """A start that met a 429 it got past and then ran out of memory will not load again."""
    assert classify_model_log(HUB_429 + OOM).kind == "oom"  # type: ignore[union-attr]
    assert classify_model_log(HUB_503 + GATED_401).kind == "gated"  # type: ignore[union-attr]
    # vLLM's own catch-all for a model it could not resolve wraps the transient error
    assert classify_model_log(HUB_429 + INVALID_REPO_ID).kind == "hub-429"  # type: ignore[union-attr]


def test_the_reasons_name_the_model_the_cause_and_the_fix() -> None:
    gated = classify_model_log(GATED_401, "Qwen/x")
    assert gated is not None and not gated.transient
    assert gated.reason == (
        "model Qwen/x is gated on the Hugging Face Hub and this pod may not download it"
    )
    assert "secrets.HF_TOKEN" in gated.fix
    unavailable = classify_model_log(HUB_503, "Qwen/x")
    assert unavailable is not None and unavailable.transient
    assert "answered 503" in unavailable.reason
    assert "tensor_parallel_size" in classify_model_log(OOM).fix  # type: ignore[union-attr]
    assert classify_model_log(OOM).reason.startswith("the model does not fit")  # type: ignore[union-attr]


def write_log(path: Path, start: str, text: str) -> None:
    path.write_text(f"{MODEL_LOG_START}{start}\n{text}", encoding="utf-8")


def test_read_model_log(tmp_path: Path) -> None:
    log = tmp_path / "model.log"
    assert read_model_log(str(log)) == ("", "")
    write_log(log, "2026-01-01T00:00:00.1Z", "hello\n")
    start, text = read_model_log(str(log))
    assert start == f"{MODEL_LOG_START}2026-01-01T00:00:00.1Z"
    assert text.endswith("hello\n")
    log.write_bytes(b"x" * 300_000 + b"\ntail\xff\n")  # no start line; only the end is read
    start, text = read_model_log(str(log))
    assert start == "" and text.endswith("tail\ufffd\n") and len(text) < 200_000


NOWHERE = "http://127.0.0.1:9/v1"  # nothing listens


def test_a_permanent_failure_is_exit_3_at_once(tmp_path: Path) -> None:
    log = tmp_path / "model.log"
    write_log(log, "a", GATED_401)
    began = time.monotonic()
    with pytest.raises(ModelServerUnhealthy) as caught:
        wait_for_model_server(NOWHERE, 30, interval=0.05, model_log=str(log), model="Qwen/x")
    assert time.monotonic() - began < 5
    assert caught.value.exit_code == 3
    line = str(caught.value)
    assert line.startswith("model server failed to start: model Qwen/x is gated")
    assert "set secrets.HF_TOKEN in the cluster profile" in line and "\n" not in line


def test_a_transient_failure_gets_one_more_load_budget(tmp_path: Path) -> None:
    """The server becomes healthy after the first budget but within the second one."""
    log = tmp_path / "model.log"
    write_log(log, "a", HUB_429)
    lines: list[str] = []
    with MockServer(MockServerConfig(startup_delay=2.0)) as server:
        wait_for_model_server(
            server.base_url,
            1.0,
            interval=0.05,
            say=lines.append,
            model_log=str(log),
            retry_backoff=2.0,
        )
    assert "rate-limited" in lines[0] and "transient" in lines[0]
    assert "healthy after" in lines[-1]


def test_a_transient_failure_of_the_restarted_server_is_exit_3(tmp_path: Path) -> None:
    """The restart (a new start line) fails transiently too: no wait for the second budget."""
    log = tmp_path / "model.log"
    write_log(log, "a", HUB_429)

    def restart() -> None:
        time.sleep(0.5)
        write_log(log, "b", STARTING + HUB_503)

    threading.Thread(target=restart, daemon=True).start()
    began = time.monotonic()
    with pytest.raises(ModelServerUnhealthy) as caught:
        wait_for_model_server(
            NOWHERE, 30, interval=0.05, model_log=str(log), model="m", retry_backoff=0.2
        )
    assert time.monotonic() - began < 10
    assert str(caught.value).startswith(
        "model server failed to start: model m could not be downloaded: the Hugging Face Hub "
        "answered 503 (a server error), again after one retry"
    )


def test_the_same_start_does_not_end_the_retry(tmp_path: Path) -> None:
    """The failed start's text stays until the restart: the retry waits out its budget and
    names the transient cause."""
    log = tmp_path / "model.log"
    write_log(log, "a", HUB_503)
    began = time.monotonic()
    with pytest.raises(ModelServerUnhealthy) as caught:
        wait_for_model_server(
            NOWHERE, 0.5, interval=0.05, model_log=str(log), model="m", retry_backoff=0.2
        )
    assert 0.6 <= time.monotonic() - began < 5
    line = str(caught.value)
    assert line.startswith("model server never became healthy after one retry: model m could")
    assert "answered 503" in line and "within 0.5s" in line


def test_the_time_limit_bounds_the_retry(tmp_path: Path) -> None:
    log = tmp_path / "model.log"
    write_log(log, "a", HUB_429)
    began = time.monotonic()
    with pytest.raises(ModelServerUnhealthy, match="after one retry"):
        wait_for_model_server(
            NOWHERE, 0.5, interval=0.05, model_log=str(log), retry_backoff=30, limit=0.8
        )
    assert time.monotonic() - began < 5


def test_an_unknown_failure_waits_out_the_budget(tmp_path: Path) -> None:
    log = tmp_path / "model.log"
    write_log(log, "a", "ModuleNotFoundError: No module named 'vllm'\n")
    began = time.monotonic()
    with pytest.raises(ModelServerUnhealthy, match="never became healthy: .* within 0.4s"):
        wait_for_model_server(NOWHERE, 0.4, interval=0.05, model_log=str(log))
    assert time.monotonic() - began >= 0.4
