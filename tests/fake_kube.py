"""A fake Kubernetes API server on 127.0.0.1, only for what a real one cannot be made to do on
demand: a watch answered with ``410 Gone`` (an expired resourceVersion), a watch connection cut
mid-stream, and 429/5xx answers with or without ``Retry-After``. Everything else about the
Kubernetes executor (validation, admission, RBAC, the Job controller, warnings, relaunches) is
tested on the real control plane (``tests/cluster/``).

It serves only the calls ``skillmix launch --wait`` makes (real HTTP, the official client), in
one namespace, and keeps only Jobs: ``/version``; ServiceAccounts and (dry-run) Pods are
accepted and forgotten; pods and events list empty; Jobs are created (409 when the name exists;
``dryRun=All`` not kept), listed by an equality ``labelSelector`` with the list's
``resourceVersion``, and watched (``watch`` + ``resourceVersion`` + ``timeoutSeconds``,
newline-delimited events). A watch from before the compaction point answers like the real
server: HTTP 200 and one ``ERROR`` event carrying a ``Status`` with code 410, reason
``Expired``.

Test-side API: :meth:`FakeKube.set_job_status` (the Job controller's part),
:meth:`~FakeKube.compact` (expire the open watches), :meth:`~FakeKube.drop_watches` (cut them),
:meth:`~FakeKube.fail_next` (answer the next matching request with 429 or 5xx),
:meth:`~FakeKube.jobs` and :attr:`~FakeKube.requests`, the log of every request.
:func:`kubeconfig` writes a kubeconfig pointing at the server (or any URL).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import socket
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

START_TIMEOUT = 10.0


@dataclass
class Request:
    """One request the server received. ``status`` is set when the response is complete (for a
    watch: when the stream ends); ``watch_error`` is the code of the ERROR event a watch sent
    (-1 when :meth:`FakeKube.drop_watches` cut its connection)."""

    method: str
    path: str
    query: dict[str, str]
    status: int | None = None
    watch_error: int | None = None

    @property
    def is_watch(self) -> bool:
        # the API server reads it with Go's strconv.ParseBool; the python client sends "True"
        return self.query.get("watch") in ("1", "t", "true", "True")


RECORD = web.RequestKey("record", Request)


def status_body(code: int, reason: str, message: str) -> dict[str, Any]:
    """A ``Status`` object as the API server sends it with an error."""
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def _selected(selector: str, job: dict[str, Any]) -> bool:
    """``k=v,k2=v2`` (all that skillmix sends) against the Job's labels."""
    labels = job["metadata"].get("labels") or {}
    terms = [term.partition("=") for term in selector.split(",") if term]
    return all(labels.get(key) == value for key, _, value in terms)


class FakeKube:
    """The fake API server, served by its own event loop in a background thread."""

    def __init__(self) -> None:
        self.port = 0
        self.requests: list[Request] = []
        self.server_errors: list[str] = []  # exceptions the handlers raised
        self._lock = threading.RLock()
        self._rv = 1000
        self._compacted = 0
        self._jobs: dict[str, dict[str, Any]] = {}
        self._events: list[tuple[int, str, dict[str, Any]]] = []  # resourceVersion, type, Job
        self._failures: list[tuple[str, str, int, str | None]] = []
        self._watchers: dict[int, asyncio.Queue[Any]] = {}
        self._loop = asyncio.new_event_loop()
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeKube:
        sock = socket.create_server(("127.0.0.1", 0))
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()

        async def setup() -> None:
            self._runner = web.AppRunner(self._app(), access_log=None, shutdown_timeout=1.0)
            await self._runner.setup()
            await web.SockSite(self._runner, sock).start()

        asyncio.run_coroutine_threadsafe(setup(), self._loop).result(START_TIMEOUT)
        return self

    def stop(self) -> None:
        """End the open watches, stop serving; idempotent."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._broadcast(None)
        if self._runner is not None:
            cleanup = asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop)
            with contextlib.suppress(TimeoutError):
                cleanup.result(START_TIMEOUT)
        self._loop.call_soon_threadsafe(self._loop.stop)
        thread.join(START_TIMEOUT)
        if not thread.is_alive():
            self._loop.close()

    # ------------------------------------------------------------------ test-side API
    def jobs(self) -> list[dict[str, Any]]:
        """Snapshots of the Jobs, by name."""
        with self._lock:
            return [copy.deepcopy(job) for _, job in sorted(self._jobs.items())]

    def requests_for(
        self, method: str, path_suffix: str = "", *, watch: bool | None = None
    ) -> list[Request]:
        return [
            r
            for r in list(self.requests)
            if r.method == method
            and r.path.endswith(path_suffix)
            and (watch is None or r.is_watch == watch)
        ]

    def open_watches(self) -> int:
        with self._lock:
            return len(self._watchers)

    def set_job_status(self, name: str, **status: Any) -> None:
        """Replace a Job's status, like the Job controller (``conditions`` as dicts with
        ``type``, ``reason``, ``message``; ``succeeded``, ``failed``, ``active``), and send a
        MODIFIED event."""
        conditions = [{"status": "True", **c} for c in status.pop("conditions", [])]
        with self._lock:
            job = self._jobs[name]
            job["status"] = {**status, "conditions": conditions}
            self._changed("MODIFIED", job)

    def fail_next(
        self, method: str, path_suffix: str, status: int, *, retry_after: str | None = None
    ) -> None:
        """Answer the next request matching ``method`` and ``path_suffix`` (not a dry run)
        with ``status`` (e.g. 429 with ``Retry-After``, 500), without acting on it."""
        with self._lock:
            self._failures.append((method, path_suffix, status, retry_after))

    def compact(self) -> None:
        """Make every resourceVersion so far expire, and end the open watches with an ERROR
        410 event (as when etcd compacts past a slow watcher)."""
        with self._lock:
            self._rv += 1
            self._compacted = self._rv
        self._broadcast("EXPIRE")

    def drop_watches(self) -> None:
        """Cut every open watch's connection mid-stream (an API server restart, a load
        balancer's idle timeout): the client sees a truncated chunked response."""
        self._broadcast("DROP")

    # ------------------------------------------------------------------ internals
    def _changed(self, type_: str, job: dict[str, Any]) -> None:
        """Under the lock: a new resourceVersion for ``job``, one event, sent to the watches."""
        self._rv += 1
        job["metadata"]["resourceVersion"] = str(self._rv)
        event = (self._rv, type_, copy.deepcopy(job))
        self._events.append(event)
        self._broadcast(event)

    def _broadcast(self, item: Any) -> None:
        with self._lock:
            queues = list(self._watchers.values())
        for queue in queues:
            with contextlib.suppress(RuntimeError):  # the loop is closing
                self._loop.call_soon_threadsafe(queue.put_nowait, item)

    def _app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        core, batch = "/api/v1/namespaces/{ns}", "/apis/batch/v1/namespaces/{ns}"
        version = {"major": "1", "minor": "34", "gitVersion": "v1.34.4"}
        for path in ("/version", "/version/"):
            app.router.add_get(path, self._answer(version))
        app.router.add_post(f"{core}/serviceaccounts", self._echo)
        app.router.add_post(f"{core}/pods", self._echo)
        app.router.add_get(f"{core}/pods", self._answer({"kind": "PodList", "items": []}))
        app.router.add_get(f"{core}/events", self._answer({"kind": "EventList", "items": []}))
        app.router.add_post(f"{batch}/jobs", self._create_job)
        app.router.add_get(f"{batch}/jobs", self._list_jobs)
        app.router.add_get(f"{batch}/jobs/{{name}}", self._read_job)
        policies = "/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies"
        app.router.add_post(policies, self._echo)
        return app

    def _answer(self, body: dict[str, Any]) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(_request: web.Request) -> web.Response:
            return self._ok(body)

        return handler

    def _ok(self, body: dict[str, Any]) -> web.Response:
        return web.json_response({**body, "metadata": {"resourceVersion": str(self._rv)}})

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        record = Request(request.method, request.path, dict(request.query))
        request[RECORD] = record
        failure = None
        with self._lock:
            self.requests.append(record)
            if request.query.get("dryRun") != "All":
                matching = (f for f in self._failures if f[0] == request.method)
                failure = next((f for f in matching if request.path.endswith(f[1])), None)
                if failure is not None:
                    self._failures.remove(failure)
        if failure is not None:
            _, _, code, retry_after = failure
            body = status_body(code, "Injected", f"injected {code}")
            response: web.StreamResponse = web.json_response(body, status=code)
            if retry_after is not None:
                response.headers["Retry-After"] = retry_after
        else:
            try:
                response = await handler(request)
            except Exception as exc:
                self.server_errors.append(f"{request.method} {request.path}: {exc!r}")
                raise
        if record.status is None:
            record.status = response.status
        return response

    async def _echo(self, request: web.Request) -> web.Response:
        import yaml  # JSON is YAML too: skillmix posts both

        return web.json_response(yaml.safe_load(await request.read()), status=201)

    async def _read_job(self, request: web.Request) -> web.Response:
        with self._lock:
            job = self._jobs.get(request.match_info["name"])
        if job is None:
            return web.json_response(status_body(404, "NotFound", "no such Job"), status=404)
        return web.json_response(job)

    async def _create_job(self, request: web.Request) -> web.Response:
        import yaml  # skillmix posts the YAML helm rendered

        job = yaml.safe_load(await request.read())
        name = job["metadata"]["name"]
        with self._lock:
            if name in self._jobs:
                body = status_body(409, "AlreadyExists", f'jobs.batch "{name}" already exists')
                return web.json_response(body, status=409)
            job["metadata"]["namespace"] = request.match_info["ns"]
            job["metadata"]["uid"] = str(uuid.uuid4())
            job["status"] = {}
            if request.query.get("dryRun") != "All":
                self._jobs[name] = job
                self._changed("ADDED", job)
            return web.json_response(job, status=201)

    async def _list_jobs(self, request: web.Request) -> web.StreamResponse:
        selector = request.query.get("labelSelector", "")
        if not all("=" in t and "!" not in t for t in selector.split(",") if t):
            body = status_body(400, "BadRequest", f"the fake cannot select {selector!r}")
            return web.json_response(body, status=400)
        if request[RECORD].is_watch:
            return await self._watch(request, lambda job: _selected(selector, job))
        jobs = [job for job in self.jobs() if _selected(selector, job)]
        return self._ok({"kind": "JobList", "apiVersion": "batch/v1", "items": jobs})

    async def _watch(
        self, request: web.Request, wanted: Callable[[dict[str, Any]], bool]
    ) -> web.StreamResponse:
        record = request[RECORD]
        since = int(request.query.get("resourceVersion") or 0)
        deadline = time.monotonic() + float(request.query.get("timeoutSeconds") or 1800)
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)

        async def send(type_: str, obj: dict[str, Any]) -> None:
            await response.write((json.dumps({"type": type_, "object": obj}) + "\n").encode())

        async def expire() -> None:
            record.watch_error = 410
            await send("ERROR", status_body(410, "Expired", f"too old resource version: {since}"))

        queue: asyncio.Queue[Any] = asyncio.Queue()
        with self._lock:
            expired = 0 < since < self._compacted
            backlog = [(t, job) for rv, t, job in self._events if rv > since and wanted(job)]
            if not expired:
                self._watchers[id(queue)] = queue
        try:
            if expired:
                await expire()
            for type_, job in [] if expired else backlog:
                await send(type_, job)
            while not expired and (remaining := deadline - time.monotonic()) > 0:
                try:
                    item = await asyncio.wait_for(queue.get(), remaining)
                except TimeoutError:
                    break
                if item is None:  # the server stops
                    break
                if item == "DROP":
                    record.watch_error = -1
                    if request.transport is not None:
                        request.transport.abort()  # no terminating chunk: truncated
                    break
                if item == "EXPIRE":
                    await expire()
                    break
                _, type_, job = item
                if wanted(job):
                    await send(type_, job)
            await response.write_eof()
        except ConnectionResetError:  # the client went away (it stopped watching)
            pass
        finally:
            record.status = 200
            with self._lock:
                self._watchers.pop(id(queue), None)
        return response


def kubeconfig(fake: FakeKube | str, path: Path, context: str = "fake") -> Path:
    """Write a kubeconfig whose ``context`` (the current one) points at the fake, or any URL:
    plain HTTP, a bearer token."""
    import yaml

    server = fake.url if isinstance(fake, FakeKube) else fake
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "fake-cluster", "cluster": {"server": server}}],
        "users": [{"name": "fake-user", "user": {"token": "fake-token"}}],
        "contexts": [
            {
                "name": context,
                "context": {"cluster": "fake-cluster", "user": "fake-user", "namespace": "default"},
            }
        ],
        "current-context": context,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def closed_port_url() -> str:
    """``http://127.0.0.1:PORT`` where nothing listens (connection refused at once)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"
