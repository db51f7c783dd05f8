"""A stand-in for ``python3 -m vllm.entrypoints.openai.api_server`` in the process kubelet's
``skillmix-test/vllm`` image (tests/cluster/kubelet.py puts this folder's parent first on the
container's PYTHONPATH): ``--model M --served-model-name N --port P ...`` serves skillmix's
mock backend under N on P, like tests/fake_vllm/vllm does for ``vllm serve``. Options vLLM has
and the mock does not need are accepted and ignored.

The model id steers how a start goes; each failure prints what vLLM, huggingface_hub and torch
print (a real traceback of exceptions named like theirs) and exits 1:

  stand-in/hub-429-once  the first start of the pod: the Hub's 429 Too Many Requests (a file
                         in the pod's /tmp, $TMPDIR, remembers it); later starts serve
  stand-in/hub-503       every start: the Hub's 503 Service Unavailable
  stand-in/gated         GatedRepoError (401): access to the model is restricted
  stand-in/missing       RepositoryNotFoundError (404), wrapped by vLLM's "Invalid repository ID"
  stand-in/oom           torch.OutOfMemoryError: CUDA out of memory, in the engine core
  stand-in/slow-load-N   loads N seconds (log lines, nothing listening), then serves
  anything else          serves
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import tempfile
import threading
import time

HUB = "https://huggingface.co"
REQUEST_ID = "Root=1-6a1b2c3d-0f1e2d3c4b5a69788796a5b4;5e0c7a52-8d3b-4c1f-9a6e-2b7d4f8e1c03"


def _error(module: str, name: str) -> type[Exception]:
    """An exception class that tracebacks name as ``module.name``, as the library's own."""
    return type(name, (Exception,), {"__module__": module})


HTTPError = _error("requests.exceptions", "HTTPError")
HfHubHTTPError = _error("huggingface_hub.errors", "HfHubHTTPError")
GatedRepoError = _error("huggingface_hub.errors", "GatedRepoError")
RepositoryNotFoundError = _error("huggingface_hub.errors", "RepositoryNotFoundError")


def log(level: str, where: str, message: str, proc: str = "APIServer") -> None:
    stamp = time.strftime("%m-%d %H:%M:%S")
    print(f"({proc} pid={os.getpid()}) {level} {stamp} [{where}] {message}", flush=True)


def hub_http_error(status: int, reason: str, url: str) -> None:
    """huggingface_hub's hf_raise_for_status on an answer it has no special case for."""
    kind = "Client" if status < 500 else "Server"
    text = f"{status} {kind} Error: {reason} for url: {url}"
    try:
        raise HTTPError(text)
    except HTTPError as e:
        raise HfHubHTTPError(f"{text} (Request ID: {REQUEST_ID})") from e


def gated(model: str) -> None:
    url = f"{HUB}/{model}/resolve/main/config.json"
    try:
        raise HTTPError(f"401 Client Error: Unauthorized for url: {url}")
    except HTTPError as e:
        raise GatedRepoError(
            f"401 Client Error. (Request ID: {REQUEST_ID})\n\n"
            f"Cannot access gated repo for url {url}.\n"
            f"Access to model {model} is restricted. You must have access to it and be "
            "authenticated to access it. Please log in."
        ) from e


def missing(model: str) -> None:
    url = f"{HUB}/api/models/{model}/tree/main?recursive=True&expand=False"
    try:
        try:
            raise HTTPError(f"404 Client Error: Not Found for url: {url}")
        except HTTPError as e:
            raise RepositoryNotFoundError(
                f"404 Client Error. (Request ID: {REQUEST_ID})\n\n"
                f"Repository Not Found for url: {url}.\n"
                "Please make sure you specified the correct `repo_id` and `repo_type`.\n"
                "If you are trying to access a private or gated repo, make sure you are "
                "authenticated. For more details, see "
                "https://huggingface.co/docs/huggingface_hub/authentication"
            ) from e
    except RepositoryNotFoundError as e:
        raise ValueError(
            f"Invalid repository ID or local directory specified: '{model}'.\n"
            "Please verify the following requirements:\n"
            "1. Provide a valid Hugging Face repository ID.\n"
            "2. Specify a local directory that contains a recognized configuration file.\n"
            "   - For Hugging Face models: ensure the presence of a 'config.json'.\n"
            "   - For Mistral models: ensure the presence of a 'params.json'."
        ) from e


def out_of_memory() -> None:
    """vLLM V1: the engine core process logs its failure, the API server gives up."""
    core = "EngineCore_DP0"
    log("INFO", "gpu_model_runner.py:2602", "Starting to load model ...", core)
    log("ERROR", "core.py:708", "EngineCore failed to start.", core)
    for line in (
        "Traceback (most recent call last):",
        '  File "/usr/local/lib/python3.12/dist-packages/vllm/v1/engine/core.py", line 699, '
        "in run_engine_core",
        "    engine_core = EngineCoreProc(*args, **kwargs)",
        '  File "/usr/local/lib/python3.12/dist-packages/torch/nn/modules/module.py", '
        "line 1341, in convert",
        "    return t.to(",
        "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a "
        "total capacity of 79.19 GiB of which 1.06 GiB is free. Including non-PyTorch memory, "
        "this process has 78.12 GiB memory in use. Of the allocated memory 77.43 GiB is "
        "allocated by PyTorch, and 120.35 MiB is reserved by PyTorch but unallocated. If "
        "reserved but unallocated memory is large try setting "
        "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation.  See "
        "documentation for Memory Management  "
        "(https://pytorch.org/docs/stable/notes/cuda.html#environment-variables)",
    ):
        log("ERROR", "core.py:708", line, core)
    raise RuntimeError(
        "Engine core initialization failed. See root cause above. Failed core proc(s): {}"
    )


def first_start(model: str) -> bool:
    """True the first time this pod starts the model (a file in the pod's /tmp says so)."""
    mark = os.path.join(tempfile.gettempdir(), "stand-in-" + model.replace("/", "_"))
    try:
        with open(mark, "x", encoding="utf-8"):
            return True
    except FileExistsError:
        return False


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="vllm.entrypoints.openai.api_server")
    parser.add_argument("--model", required=True)
    parser.add_argument("--served-model-name", nargs="+", default=None)
    parser.add_argument("--tensor-parallel-size", type=int, default=1)
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--seed", type=int, default=0)
    args, ignored = parser.parse_known_args(argv)
    model: str = args.model
    names = args.served_model_name or [model]
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    log("INFO", "api_server.py:1839", "vLLM API server version 0.11.0 (skillmix stand-in)")
    log("INFO", "utils.py:233", f"non-default args: {{'model': {model!r}, 'ignored': {ignored}}}")

    revision = f"{HUB}/api/models/{model}/revision/main"
    if model == "stand-in/hub-429-once" and first_start(model):
        hub_http_error(429, "Too Many Requests", revision)
    if model == "stand-in/hub-503":
        hub_http_error(503, "Service Unavailable", revision)
    if model == "stand-in/gated":
        gated(model)
    if model == "stand-in/missing":
        missing(model)
    if model == "stand-in/oom":
        out_of_memory()
    slow = re.fullmatch(r"stand-in/slow-load-([0-9]+)", model)
    if slow:
        seconds = int(slow[1])
        for step in range(seconds):
            log("INFO", "default_loader.py:267", f"Loading weights: {step}/{seconds} s")
            if stop.wait(1.0):
                return 0

    from skillmix.backends.mock_config import MockServerConfig
    from skillmix.backends.mock_server import MockServer

    config = MockServerConfig(
        host=args.host,
        port=args.port,
        seed=args.seed,
        models=dict.fromkeys(names, 0.7),
        # like vLLM: VLLM_API_KEY (or --api-key) makes /v1 require the key
        api_key=os.environ.get("VLLM_API_KEY") or None,
    )
    server = MockServer(config).start()
    print(f"INFO:     Started server process [{os.getpid()}]", flush=True)
    print("INFO:     Application startup complete.", flush=True)
    for _ in range(36000):  # bounded: 1 hour
        if stop.wait(0.1):
            break
    print("INFO:     Shutting down", flush=True)
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
