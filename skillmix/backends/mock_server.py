"""The mock backend: a real HTTP server speaking the subset of the vLLM/OpenAI API we use.

Endpoints: ``GET /health`` (503 during ``startup_delay``, then 200 ``{}``), ``GET /v1/models``,
``POST /v1/chat/completions``, ``POST /v1/completions`` and ``GET /stats`` (our counters).

This module only runs it: :class:`MockServer` in tests and benchmarks (a background thread with
its own event loop on a real socket) and :func:`run_forever` from the CLI. The rest is split by
concern, all under ``skillmix.backends``:

* ``mock_config``: :class:`MockServerConfig`, the ``--model`` flag parser;
* ``mock_service``: the request handling (checks, latency, counters, request log);
* ``mock_protocol``: request validation and the error and completion bodies;
* ``mock_faults``: seeded faults (500, dropped connections, long stalls, malformed grader
  replies) and the RPM/TPM limits; every fault is a pure function of the seed, the request and
  its try number, only the limits depend on time;
* ``mock_prompts`` and ``mock_replies``: reading a request and composing the reply (pure).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

from aiohttp import web

from skillmix.backends.mock_config import MockServerConfig
from skillmix.backends.mock_service import MockService, new_counters
from skillmix.errors import RunFailedError, SkillmixError

START_TIMEOUT_SECONDS = 10.0


class MockServerError(RunFailedError):
    """The in-process mock server could not start or stop in time (one line, exit 1)."""


def bind_socket(host: str, port: int, backlog: int = 1024) -> socket.socket:
    """A listening, non-blocking TCP socket (port 0 picks a free one)."""
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        family, type_, proto, _, address = infos[0]
        sock = socket.socket(family, type_, proto)
    except OSError as exc:
        raise SkillmixError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise SkillmixError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def _url_host(host: str) -> str:
    """The host part of a URL a client can connect to (a wildcard address becomes loopback)."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


async def _start(
    config: MockServerConfig, sock: socket.socket
) -> tuple[web.AppRunner, MockService]:
    """Serve a fresh service on ``sock``; if that fails, the service is closed again."""
    service = MockService(config)
    service.open()
    runner = web.AppRunner(
        service.make_app(),
        access_log=None,
        handler_cancellation=True,
        shutdown_timeout=config.shutdown_timeout,
    )
    try:
        await runner.setup()
        await web.SockSite(runner, sock, backlog=1024).start()
    except BaseException:
        await runner.cleanup()
        service.close()
        raise
    return runner, service


def _write_port_file(path: str | Path, port: int) -> None:
    """Write the port atomically, so a reader polling the file never sees it half written."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_text(f"{port}\n", encoding="utf-8")
    os.replace(tmp, target)


async def serve(config: MockServerConfig) -> None:
    """Serve until cancelled: binds, writes ``port_file``, prints the ready line to stderr."""
    config.validate()
    sock = bind_socket(config.host, config.port)
    port = sock.getsockname()[1]
    runner, service = await _start(config, sock)
    try:
        if config.port_file:
            _write_port_file(config.port_file, port)
        print(
            f"mock server listening on http://{_url_host(config.host)}:{port}",
            file=sys.stderr,
            flush=True,
        )
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
        service.close()


def run_forever(config: MockServerConfig) -> None:
    """Blocking entry point for the CLI: returns normally on SIGTERM or SIGINT."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        server = asyncio.create_task(serve(config))
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait({server, stopper}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if server.done():
            server.result()  # re-raise a startup error
            return
        server.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await server

    asyncio.run(main())


class MockServer:
    """The mock server on a real socket, served from a background thread.

    >>> with MockServer(MockServerConfig(latency_ms=5)) as srv:
    ...     client = OpenAI(base_url=srv.base_url, api_key="x")
    """

    def __init__(self, config: MockServerConfig | None = None, **overrides: Any) -> None:
        config = config or MockServerConfig()
        self.config = replace(config, **overrides) if overrides else config
        self.config.validate()
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._service: MockService | None = None

    @property
    def url(self) -> str:
        """The root URL, e.g. ``http://127.0.0.1:PORT``."""
        return f"http://{_url_host(self.config.host)}:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI base URL, e.g. ``http://127.0.0.1:PORT/v1``."""
        return f"{self.url}/v1"

    @property
    def running(self) -> bool:
        """Whether the serving thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def start(self, timeout: float = START_TIMEOUT_SECONDS) -> MockServer:
        """Bind (so :attr:`port` is known at once), then serve from a daemon thread."""
        if self._thread is not None:
            raise MockServerError("the mock server is already started")
        sock = bind_socket(self.config.host, self.config.port)
        self.port = sock.getsockname()[1]
        loop = asyncio.new_event_loop()
        started = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                self._runner, self._service = loop.run_until_complete(_start(self.config, sock))
            except BaseException as exc:
                failure.append(exc)
                started.set()
                loop.close()
                return
            started.set()
            try:
                loop.run_forever()
            finally:
                loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=run, name=f"mock-server-{self.port}", daemon=True)
        self._thread.start()
        if not started.wait(timeout):
            sock.close()
            raise MockServerError(f"the mock server did not start within {timeout:g} s")
        if failure:
            self._thread.join(timeout)
            self._thread = None
            sock.close()
            raise MockServerError(f"the mock server failed to start: {failure[0]!r}")
        return self

    def stop(self, timeout: float = START_TIMEOUT_SECONDS) -> None:
        """Stop serving (in-flight requests get ``shutdown_timeout`` seconds); idempotent."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        self._thread = None
        if thread.is_alive() and not loop.is_closed():

            async def shutdown() -> None:
                if self._runner is not None:
                    await self._runner.cleanup()
                if self._service is not None:
                    self._service.close()

            future = asyncio.run_coroutine_threadsafe(shutdown(), loop)
            try:
                future.result(timeout)
            except Exception as exc:
                raise MockServerError(f"the mock server did not stop cleanly: {exc!r}") from exc
            finally:
                loop.call_soon_threadsafe(loop.stop)
                thread.join(timeout)

    def stats(self) -> dict[str, Any]:
        """A snapshot of the counters (see ``GET /stats``)."""
        if self._service is None:
            return new_counters()
        return self._service.stats()

    def __enter__(self) -> MockServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
