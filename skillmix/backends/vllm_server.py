"""A local vLLM server as a child process: ``vllm serve`` on a free loopback port.

``skillmix evaluate --backend vllm`` without ``--base-url`` (and ``backend: vllm`` students
without ``base_url``) serve the model themselves, SkyThought-style. The server runs in its own
session (process group), so that stopping it reaches every process vLLM forks (engine core,
tensor-parallel workers) and a Ctrl-C at the terminal reaches only skillmix, which then stops
the group itself: SIGTERM, then SIGKILL after a grace period. Nothing is left holding a GPU.

The argv comes from one place (:func:`vllm_options`), shared with the Kubernetes sidecar's
(:func:`vllm_api_server_args`), so both executors serve a student the same way.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from skillmix.config import ModelSpec
from skillmix.errors import RunFailedError, SkillmixError

VLLM_EXTRA = "skillmix[vllm]"
DEFAULT_HEALTH_TIMEOUT = 1200.0  # model downloads and loads of large models take minutes
STOP_GRACE_SECONDS = 20.0  # SIGTERM, then SIGKILL: vLLM frees the GPU on SIGTERM in seconds
LOG_TAIL_LINES = 30
LOOPBACK = "127.0.0.1"
# Set by skillmix itself: the same flags in `vllm.args` would point the server elsewhere.
RESERVED_ARGS = ("--host", "--port", "--served-model-name", "--model", "--uds")


class VllmServerFailed(RunFailedError):
    """The server exited or never became healthy (exit 1); ``log_tail`` holds its last log
    lines, which the CLI shows before the error line."""

    def __init__(self, message: str, *, log_tail: list[str], hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.log_tail = log_tail


def vllm_server_args(spec: ModelSpec, *, host: str, port: int) -> list[str]:
    """The vLLM OpenAI server's arguments for a student (``--model ... --port ...``): the one
    list the Kubernetes sidecar (the chart renders the same) and a local ``vllm serve`` use."""
    v = spec.vllm
    return [
        *("--model", v.model or spec.model, "--served-model-name", spec.model),
        *("--tensor-parallel-size", str(v.tensor_parallel_size)),
        *("--host", host, "--port", str(port)),
        *v.args,
    ]


def served_model(spec: ModelSpec) -> str:
    """What vLLM loads: ``vllm.model`` (a Hugging Face id or a folder), else ``model``."""
    return spec.vllm.model or spec.model


def vllm_options(spec: ModelSpec, *, host: str, port: int) -> list[str]:
    """What both executors pass after the model: the served model name (what requests ask
    for), tensor parallelism, the address, then ``vllm.args`` verbatim. The list comes from
    :func:`vllm_server_args`, the one the chart's sidecar renders too."""
    args = vllm_server_args(spec, host=host, port=port)
    assert args[:2] == ["--model", served_model(spec)]
    return args[2:]


def vllm_serve_argv(
    spec: ModelSpec, *, port: int, host: str = LOOPBACK, executable: str = "vllm"
) -> list[str]:
    """``vllm serve MODEL --served-model-name NAME ...``: the local executor's command."""
    return [executable, "serve", served_model(spec), *vllm_options(spec, host=host, port=port)]


def vllm_api_server_args(spec: ModelSpec, *, port: int, host: str = LOOPBACK) -> list[str]:
    """The arguments of ``python3 -m vllm.entrypoints.openai.api_server`` (the Kubernetes
    sidecar, on the pod's loopback: its client is in the same pod): the same options as
    :func:`vllm_serve_argv`, the model as ``--model``."""
    return ["--model", served_model(spec), *vllm_options(spec, host=host, port=port)]


def check_local_args(spec: ModelSpec, where: str) -> None:
    """``vllm.args`` must not set what skillmix sets (address, names): one line naming it."""
    for arg in spec.vllm.args:
        flag = arg.split("=", 1)[0]
        if flag in RESERVED_ARGS:
            raise SkillmixError(
                f"{where}.vllm.args: {flag} is set by skillmix",
                hint="leave it out (the served model name is the student's `model`, "
                "the model loaded is `vllm.model`)",
            )


def find_vllm() -> str:
    """The ``vllm`` executable: on PATH, else beside this Python (a venv not activated).
    Missing: one line naming the extra that installs it (exit 2, nothing written)."""
    found = shutil.which("vllm")
    if found:
        return found
    beside = Path(sys.executable).parent / "vllm"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    raise SkillmixError(
        "backend vllm without base_url needs the `vllm` executable, which is not installed",
        hint=f"pip install '{VLLM_EXTRA}' (or give the student a base_url of a running server)",
    )


def free_port(host: str = LOOPBACK) -> int:
    """A port nobody listens on now (the server binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


# no proxy: the server is on loopback, whatever HTTP_PROXY says
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _healthy(url: str, timeout: float) -> bool:
    try:
        with _OPENER.open(url, timeout=timeout) as response:  # loopback only
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


class VllmServer:
    """One ``vllm serve`` child process; use as a context manager (stopped on any exit)."""

    def __init__(
        self,
        spec: ModelSpec,
        *,
        log_path: Path,
        health_timeout: float = DEFAULT_HEALTH_TIMEOUT,
        executable: str = "vllm",
        stop_grace: float = STOP_GRACE_SECONDS,
    ) -> None:
        self.spec = spec
        self.log_path = log_path
        self.health_timeout = health_timeout
        self.executable = executable
        self.stop_grace = stop_grace
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._log_start = 0

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}/v1"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self) -> None:
        """Start the process (returns at once; :meth:`wait_healthy` waits for the model)."""
        self.port = free_port()
        argv = vllm_serve_argv(self.spec, port=self.port, executable=self.executable)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._log_start = self._log.tell()
        self._log.write(f"# skillmix: {shlex.join(argv)}\n".encode())
        self._log.flush()
        self.process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() reaches every child
        )
        # should skillmix itself be killed (SIGKILL), this says which group to end by hand
        pid = self.process.pid
        self._log.write(f"# skillmix: pid {pid}; stop it with: kill -- -{pid}\n".encode())
        self._log.flush()

    def wait_healthy(self, *, poll: float = 0.5) -> None:
        """Until ``GET /health`` answers 200; the process exiting or the bound passing is a
        :class:`VllmServerFailed` with the log's last lines."""
        assert self.process is not None, "start() first"
        deadline = time.monotonic() + self.health_timeout
        url = f"http://{LOOPBACK}:{self.port}/health"
        while True:
            code = self.process.poll()
            if code is not None:
                raise self._failed(f"exited with code {code} while loading the model")
            if _healthy(url, timeout=min(5.0, max(0.1, deadline - time.monotonic()))):
                return
            left = deadline - time.monotonic()
            if left <= 0:
                raise self._failed(
                    f"did not become healthy within {self.health_timeout:g} s",
                    hint="raise --vllm-health-timeout (or SKILLMIX_VLLM_HEALTH_TIMEOUT) if the "
                    "model needs longer to download and load",
                )
            time.sleep(min(poll, left))

    def _failed(self, what: str, hint: str | None = None) -> VllmServerFailed:
        return VllmServerFailed(
            f"vLLM server for {self.spec.name} ({served_model(self.spec)}) {what}; "
            f"its log: {self.log_path}",
            log_tail=self.log_tail(),
            hint=hint,
        )

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> list[str]:
        """The last ``lines`` lines this start wrote to the log."""
        try:
            with open(self.log_path, "rb") as log:
                log.seek(self._log_start)
                tail = deque(log, maxlen=lines)
        except OSError:
            return []
        return [raw.decode("utf-8", "replace").rstrip("\r\n") for raw in tail]

    def stop(self) -> None:
        """SIGTERM to the whole process group, SIGKILL after the grace; idempotent."""
        process, self.process = self.process, None
        try:
            if process is not None:
                _stop_group(process, self.stop_grace)
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None

    def __enter__(self) -> VllmServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a reused id of someone else's group: not ours any more
        return False
    return True


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _stop_group(process: subprocess.Popen[bytes], grace: float) -> None:
    """The leader's pid is its group id (start_new_session). Wait for the leader and for the
    rest of the group (workers may outlive it) within ``grace``, then kill what is left."""
    pgid = process.pid
    _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    try:
        while time.monotonic() < deadline:
            process.poll()  # reap the leader: a zombie still counts as a member of the group
            if process.returncode is not None and not _group_alive(pgid):
                return
            time.sleep(0.05)
    except BaseException:  # a second Ctrl-C during the grace: no more waiting
        _signal_group(pgid, signal.SIGKILL)
        raise
    _signal_group(pgid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=10)


@contextlib.contextmanager
def serving(
    spec: ModelSpec,
    *,
    log_path: Path,
    health_timeout: float = DEFAULT_HEALTH_TIMEOUT,
    executable: str = "vllm",
) -> Iterator[VllmServer]:
    """Start ``vllm serve`` for ``spec``, wait until healthy, yield it; stop it on any exit
    (the end, an error, Ctrl-C)."""
    server = VllmServer(
        spec, log_path=log_path, health_timeout=health_timeout, executable=executable
    )
    try:
        server.start()
        server.wait_healthy()
        yield server
    finally:
        server.stop()


__all__ = [
    "DEFAULT_HEALTH_TIMEOUT",
    "VLLM_EXTRA",
    "VllmServer",
    "VllmServerFailed",
    "check_local_args",
    "find_vllm",
    "serving",
    "vllm_api_server_args",
    "vllm_options",
    "vllm_serve_argv",
]
