"""A fake Kubernetes API server on 127.0.0.1, only for what a real one cannot be made to do on
demand: a watch answered with ``410 Gone`` and a watch connection cut mid-stream. Everything
else about the Kubernetes executor is tested on the real control plane (``tests/cluster/``).

It serves the calls ``skillmix launch --wait`` makes (real HTTP, the official client): create a
ServiceAccount (409 when it exists) and Jobs (``dryRun=All`` validates without persisting),
list Jobs by ``labelSelector`` with the list's ``resourceVersion``, and watch them
(``watch=true`` + ``resourceVersion`` + ``timeoutSeconds``, newline-delimited events).
Watching from a resourceVersion older than the compaction point answers like the real server:
HTTP 200 and one ``ERROR`` event carrying a ``Status`` with code 410, reason ``Expired``.

It also answers ``/version``, a Job read by name, the dry run of a Pod (validated, never
stored) and empty lists of pods and events, which ``launch`` and ``--wait`` ask for.

Test-side API: :meth:`set_job_status` (the Job controller's part), :meth:`compact` (expire
the open watches), :meth:`drop_watches` (cut them), :meth:`fail_next` (answer the next
matching requests with 429 or 5xx, with or without ``Retry-After``), :meth:`jobs` snapshots
and :attr:`requests`, the log of every request. :func:`kubeconfig` writes a kubeconfig (plain
HTTP, a bearer token) pointing at the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

TOKEN = "fake-token-0b6f"  # the bearer token kubeconfig() writes and the server requires
START_TIMEOUT = 10.0
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_CLOSE = object()  # queue sentinel: end the watch


@dataclass
class Request:
    """One request the server received. ``status`` is set when the response is complete (for a
    watch: when the stream ends); ``watch_error`` is the code of an ERROR event it sent (-1 when
    :meth:`FakeKube.drop_watches` cut the connection)."""

    method: str
    path: str
    query: dict[str, str]
    status: int | None = None
    watch_error: int | None = None
    events: int = 0

    @property
    def is_watch(self) -> bool:
        return parse_bool(self.query.get("watch"))


RECORD = web.RequestKey("record", Request)


@dataclass
class _Event:
    rv: int
    type: str
    kind: str
    namespace: str
    obj: dict[str, Any]


@dataclass
class _State:
    rv: int = 1000
    compacted: int = 0
    jobs: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    accounts: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    events: list[_Event] = field(default_factory=list)


def parse_bool(value: str | None) -> bool:
    """A query flag as the API server (Go's strconv.ParseBool) reads it: the python client
    sends ``True``/``False``."""
    return value in ("1", "t", "T", "true", "TRUE", "True")


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def status_body(
    code: int, reason: str, message: str, details: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """A ``Status`` object as the API server sends it with an error."""
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details:
        body["details"] = dict(details)
    return body


def parse_selector(text: str) -> list[tuple[str, str, str | None]]:
    """``k=v,k2==v2,k3!=v3,k4,!k5`` -> [(op, key, value)]; set-based forms are rejected."""
    out: list[tuple[str, str, str | None]] = []
    for raw in text.split(","):
        term = raw.strip()
        if not term:
            continue
        if " in " in term or " notin " in term or "(" in term:
            raise ValueError(f"unsupported selector term {term!r}")
        if "!=" in term:
            key, value = term.split("!=", 1)
            out.append(("!=", key.strip(), value.strip()))
        elif "==" in term:
            key, value = term.split("==", 1)
            out.append(("=", key.strip(), value.strip()))
        elif "=" in term:
            key, value = term.split("=", 1)
            out.append(("=", key.strip(), value.strip()))
        elif term.startswith("!"):
            out.append(("!", term[1:].strip(), None))
        else:
            out.append(("exists", term, None))
    return out


def selector_matches(
    selector: list[tuple[str, str, str | None]], labels: Mapping[str, str]
) -> bool:
    for op, key, value in selector:
        if op == "=" and labels.get(key) != value:
            return False
        if op == "!=" and labels.get(key) == value:
            return False
        if op == "exists" and key not in labels:
            return False
        if op == "!" and key in labels:
            return False
    return True


class FakeKube:
    """The fake API server, served from a background thread with its own event loop."""

    def __init__(
        self,
        namespaces: Iterable[str] = ("default",),
        *,
        token: str | None = TOKEN,
    ) -> None:
        self.namespaces = set(namespaces)
        self.token = token
        self.port = 0
        self.requests: list[Request] = []
        self.server_errors: list[str] = []
        self._state = _State()
        self._failures: list[tuple[str, str, int, str | None]] = []
        self.warning: str | None = None  # a Warning header sent with every Job creation
        self._lock = threading.RLock()
        self._watchers: dict[int, tuple[asyncio.Queue[Any], str, str]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    # ------------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeKube:
        if self._thread is not None:
            raise RuntimeError("already started")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        loop = asyncio.new_event_loop()
        started = threading.Event()
        failure: list[BaseException] = []

        async def setup() -> web.AppRunner:
            runner = web.AppRunner(
                self._app(), access_log=None, shutdown_timeout=1.0, logger=self._logger()
            )
            await runner.setup()
            await web.SockSite(runner, sock).start()
            return runner

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                self._runner = loop.run_until_complete(setup())
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
        self._thread = threading.Thread(target=run, name=f"fake-kube-{self.port}", daemon=True)
        self._thread.start()
        if not started.wait(START_TIMEOUT) or failure:
            sock.close()
            raise RuntimeError(f"fake kube API did not start: {failure[:1]}")
        return self

    def stop(self, timeout: float = START_TIMEOUT) -> None:
        """End open watches and streams, stop serving; idempotent."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        self._thread = None
        if thread.is_alive() and not loop.is_closed():
            self._broadcast(lambda _ns, _kind: _CLOSE)

            async def shutdown() -> None:
                if self._runner is not None:
                    await self._runner.cleanup()

            try:
                asyncio.run_coroutine_threadsafe(shutdown(), loop).result(timeout)
            finally:
                loop.call_soon_threadsafe(loop.stop)
                thread.join(timeout)

    def _logger(self) -> logging.Logger:
        """aiohttp's server log goes to :attr:`server_errors`, not to stderr (where it would
        mix with the output of the CLI under test)."""
        fake = self

        class Collect(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                error = record.exc_info[1] if record.exc_info else None
                fake.server_errors.append(
                    record.getMessage() + (f": {error!r}" if error is not None else "")
                )

        logger = logging.getLogger(f"tests.fake_kube.{id(self)}")
        logger.propagate = False
        logger.handlers[:] = [Collect()]
        return logger

    def __enter__(self) -> FakeKube:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ test-side API
    @property
    def resource_version(self) -> int:
        with self._lock:
            return self._state.rv

    def jobs(self, namespace: str | None = None, **labels: str) -> list[dict[str, Any]]:
        """Snapshots of the stored Jobs (optionally one namespace, label equality)."""
        with self._lock:
            items = [
                copy.deepcopy(j)
                for (ns, _n), j in sorted(self._state.jobs.items())
                if namespace in (None, ns)
            ]
        return [j for j in items if _labels_have(j, labels)]

    def job(self, name: str, namespace: str | None = None) -> dict[str, Any]:
        found = [j for j in self.jobs(namespace) if j["metadata"]["name"] == name]
        if not found:
            raise KeyError(name)
        return found[0]

    def requests_for(
        self, method: str | None = None, path_suffix: str = "", *, watch: bool | None = None
    ) -> list[Request]:
        return [
            r
            for r in list(self.requests)
            if (method is None or r.method == method)
            and r.path.endswith(path_suffix)
            and (watch is None or r.is_watch == watch)
        ]

    def open_watches(self) -> int:
        with self._lock:
            return len(self._watchers)

    def set_job_status(
        self,
        name: str,
        conditions: Iterable[Mapping[str, Any] | str] = (),
        *,
        namespace: str | None = None,
        succeeded: int | None = None,
        failed: int | None = None,
        active: int | None = None,
        ready: int | None = None,
    ) -> dict[str, Any]:
        """Replace a Job's status (like the Job controller) and emit a MODIFIED event.

        ``conditions``: dicts with ``type`` (and optional ``status`` "True", ``reason``,
        ``message``) or bare type names."""
        with self._lock:
            key = self._job_key(name, namespace)
            job = self._state.jobs[key]
            status: dict[str, Any] = {}
            stamp = now_iso()
            conds = []
            for c in conditions:
                cond = {"type": c} if isinstance(c, str) else dict(c)
                cond.setdefault("status", "True")
                cond.setdefault("lastProbeTime", stamp)
                cond.setdefault("lastTransitionTime", stamp)
                conds.append(cond)
            if conds:
                status["conditions"] = conds
            status["startTime"] = job["status"].get("startTime") or stamp
            if any(c["type"] == "Complete" and c["status"] == "True" for c in conds):
                status["completionTime"] = stamp
            for name_, value in (
                ("succeeded", succeeded),
                ("failed", failed),
                ("active", active),
                ("ready", ready),
            ):
                if value is not None:
                    status[name_] = value
            job["status"] = status
            self._bump(job)
            self._emit("MODIFIED", "Job", key[0], job)
            return copy.deepcopy(job)

    def fail_next(
        self,
        method: str,
        path_suffix: str,
        status: int,
        *,
        times: int = 1,
        retry_after: str | None = None,
    ) -> None:
        """Answer the next ``times`` requests matching ``method`` and ``path_suffix`` (and not
        a dry run) with ``status`` (e.g. 429 with ``Retry-After``, 500), without acting."""
        with self._lock:
            self._failures.extend([(method, path_suffix, status, retry_after)] * times)

    def compact(self, *, expire_watches: bool = True) -> int:
        """Make every resourceVersion before the current one expire (HTTP 410 on watch); with
        ``expire_watches``, also end the open watches with an ERROR 410 event."""
        with self._lock:
            self._state.rv += 1
            self._state.compacted = self._state.rv
            rv = self._state.rv
            if expire_watches:
                self._broadcast(lambda _ns, _kind: ("EXPIRE", rv))
            return rv

    def drop_watches(self) -> None:
        """Cut every open watch's connection mid-stream (an API server restart, a load
        balancer's idle timeout): the client sees a truncated chunked response."""
        self._broadcast(lambda _ns, _kind: ("DROP",))

    # ------------------------------------------------------------------ internals: state
    def _job_key(self, name: str, namespace: str | None) -> tuple[str, str]:
        if namespace is not None:
            return (namespace, name)
        keys = [k for k in self._state.jobs if k[1] == name]
        if len(keys) != 1:
            raise KeyError(f"job {name!r}: {len(keys)} matches")
        return keys[0]

    def _bump(self, obj: dict[str, Any]) -> int:
        self._state.rv += 1
        obj["metadata"]["resourceVersion"] = str(self._state.rv)
        return self._state.rv

    def _emit(self, type_: str, kind: str, namespace: str, obj: dict[str, Any]) -> None:
        event = _Event(self._state.rv, type_, kind, namespace, copy.deepcopy(obj))
        self._state.events.append(event)
        self._broadcast(lambda ns, k: event if (ns, k) == (namespace, kind) else None)

    def _broadcast(self, make: Any) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with self._lock:
            watchers = list(self._watchers.values())
        for queue, ns, kind in watchers:
            item = make(ns, kind)
            if item is not None:
                with contextlib.suppress(RuntimeError):  # the loop is closing
                    loop.call_soon_threadsafe(queue.put_nowait, item)

    def _validate_job(self, body: Any, namespace: str) -> dict[str, Any] | None:
        if not isinstance(body, dict):
            return status_body(400, "BadRequest", "the body is not a JSON object")
        if body.get("apiVersion") != "batch/v1" or body.get("kind") != "Job":
            return status_body(
                400,
                "BadRequest",
                f"the API version in the data ({body.get('apiVersion')}) does not match the "
                f"expected API version (batch/v1), or kind {body.get('kind')!r} is not Job",
            )
        meta = body.get("metadata") or {}
        if meta.get("namespace") not in (None, "", namespace):
            return status_body(
                400,
                "BadRequest",
                "the namespace of the provided object does not match the namespace sent on the request",
            )
        name = meta.get("name") or ""
        causes = []
        if not (DNS_SUBDOMAIN.match(name) and len(name) <= 63):
            causes.append(f"metadata.name: Invalid value: {name!r}: must be a DNS-1123 label")
        for where, labels in (
            ("metadata.labels", meta.get("labels") or {}),
            (
                "spec.template.metadata.labels",
                ((body.get("spec") or {}).get("template") or {}).get("metadata", {}).get("labels")
                or {},
            ),
        ):
            for v in labels.values():
                if not isinstance(v, str) or len(v) > 63 or not LABEL_VALUE.match(v):
                    causes.append(f"{where}: Invalid value: {v!r}: a valid label must be ...")
        spec = body.get("spec") or {}
        if not (spec.get("template") or {}).get("spec", {}).get("containers"):
            causes.append("spec.template.spec.containers: Required value")
        if causes:
            return status_body(
                422,
                "Invalid",
                f'Job.batch "{name}" is invalid: ' + "; ".join(causes),
                {"name": name, "group": "batch", "kind": "Job"},
            )
        if (namespace, name) in self._state.jobs:
            return status_body(
                409,
                "AlreadyExists",
                f'jobs.batch "{name}" already exists',
                {"name": name, "group": "batch", "kind": "jobs"},
            )
        return None

    def _store_job(self, body: dict[str, Any], namespace: str) -> dict[str, Any]:
        job = copy.deepcopy(body)
        meta = job.setdefault("metadata", {})
        meta["namespace"] = namespace
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now_iso()
        meta["generation"] = 1
        spec = job.setdefault("spec", {})
        spec.setdefault("completions", 1)
        spec.setdefault("parallelism", 1)
        spec.setdefault("backoffLimit", 6)
        spec.setdefault("completionMode", "NonIndexed")
        spec.setdefault("suspend", False)
        job["status"] = {}
        self._bump(job)
        self._state.jobs[(namespace, meta["name"])] = job
        self._emit("ADDED", "Job", namespace, job)
        return job

    # ------------------------------------------------------------------ internals: HTTP
    def _app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        core = "/api/v1/namespaces/{ns}"
        batch = "/apis/batch/v1/namespaces/{ns}"
        app.router.add_get("/version", self._version)
        app.router.add_get("/version/", self._version)
        app.router.add_post(f"{core}/serviceaccounts", self._create_account)
        app.router.add_post(f"{core}/pods", self._dry_run_pod)
        app.router.add_get(f"{core}/pods", self._empty_list)
        app.router.add_get(f"{core}/events", self._empty_list)
        app.router.add_post(f"{batch}/jobs", self._create_job)
        app.router.add_get(f"{batch}/jobs", self._list_jobs)
        app.router.add_get(f"{batch}/jobs/{{name}}", self._read_job)
        return app

    async def _version(self, request: web.Request) -> web.Response:
        return _json({"major": "1", "minor": "34", "gitVersion": "v1.34.4"})

    async def _dry_run_pod(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        if request.query.get("dryRun") != "All":
            return _json(status_body(403, "Forbidden", "the fake only dry-runs pods"), 403)
        if not isinstance(body, dict) or body.get("kind") != "Pod":
            return _json(status_body(400, "BadRequest", "not a Pod"), 400)
        return _json(body, 201)

    async def _empty_list(self, request: web.Request) -> web.Response:
        kind = "PodList" if request.path.endswith("/pods") else "EventList"
        return _json(_list(kind, "v1", [], self.resource_version))

    async def _read_job(self, request: web.Request) -> web.Response:
        key = (request.match_info["ns"], request.match_info["name"])
        with self._lock:
            job = self._state.jobs.get(key)
            if job is None:
                return _json(status_body(404, "NotFound", f'jobs.batch "{key[1]}" not found'), 404)
            return _json(copy.deepcopy(job))

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        record = Request(request.method, request.path, dict(request.query))
        with self._lock:
            self.requests.append(record)
        request[RECORD] = record
        if (
            self.token is not None
            and request.headers.get("Authorization") != f"Bearer {self.token}"
        ):
            record.status = 401
            return _json(status_body(401, "Unauthorized", "Unauthorized"), 401)
        failure = self._take_failure(request)
        if failure is not None:
            status, retry_after = failure
            record.status = status
            injected = _json(status_body(status, "Injected", f"injected {status}"), status)
            if retry_after is not None:
                injected.headers["Retry-After"] = retry_after
            return injected
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            record.status = exc.status
            return _json(status_body(exc.status, exc.reason, exc.text or exc.reason), exc.status)
        if record.status is None:
            record.status = response.status
        return response

    def _take_failure(self, request: web.Request) -> tuple[int, str | None] | None:
        if request.query.get("dryRun") == "All":
            return None
        with self._lock:
            for i, (method, suffix, status, retry_after) in enumerate(self._failures):
                if request.method == method and request.path.endswith(suffix):
                    del self._failures[i]
                    return status, retry_after
        return None

    async def _body(self, request: web.Request) -> Any:
        """JSON, or YAML when the client says so (the API server takes both)."""
        data = await request.read()
        if "yaml" in request.headers.get("Content-Type", ""):
            import yaml

            try:
                return yaml.safe_load(data)
            except yaml.YAMLError:
                return None
        try:
            return json.loads(data or b"null")
        except ValueError:
            return None

    def _selector(self, request: web.Request) -> list[tuple[str, str, str | None]]:
        try:
            return parse_selector(request.query.get("labelSelector", ""))
        except ValueError as exc:
            raise web.HTTPBadRequest(text=f"unable to parse requirement: {exc}") from None

    # ServiceAccounts ---------------------------------------------------------------------------
    async def _create_account(self, request: web.Request) -> web.Response:
        ns = request.match_info["ns"]
        body = await self._body(request)
        if ns not in self.namespaces:
            return _json(_ns_missing(ns), 404)
        if not isinstance(body, dict) or body.get("kind") != "ServiceAccount":
            return _json(status_body(400, "BadRequest", "not a ServiceAccount"), 400)
        name = (body.get("metadata") or {}).get("name") or ""
        if not DNS_SUBDOMAIN.match(name):
            return _json(status_body(422, "Invalid", f"invalid name {name!r}"), 422)
        with self._lock:
            if (ns, name) in self._state.accounts:
                return _json(
                    status_body(
                        409,
                        "AlreadyExists",
                        f'serviceaccounts "{name}" already exists',
                        {"name": name, "kind": "serviceaccounts"},
                    ),
                    409,
                )
            account = copy.deepcopy(body)
            meta = account.setdefault("metadata", {})
            meta.update(namespace=ns, uid=str(uuid.uuid4()), creationTimestamp=now_iso())
            if request.query.get("dryRun") == "All":  # validated, not persisted
                return _json(account, 201)
            self._bump(account)
            self._state.accounts[(ns, name)] = account
            return _json(copy.deepcopy(account), 201)

    # Jobs --------------------------------------------------------------------------------------
    async def _create_job(self, request: web.Request) -> web.Response:
        ns = request.match_info["ns"]
        body = await self._body(request)
        if ns not in self.namespaces:
            return _json(_ns_missing(ns), 404)
        with self._lock:
            error = self._validate_job(body, ns)
            if error is not None:
                return _json(error, error["code"])
            if request.query.get("dryRun") == "All":  # validated, not persisted
                return _json(copy.deepcopy(body), 201)
            job = self._store_job(body, ns)
            response = _json(copy.deepcopy(job), 201)
            if self.warning is not None:
                quoted = self.warning.replace("\\", "\\\\").replace('"', '\\"')
                response.headers["Warning"] = f'299 - "{quoted}"'
            return response

    async def _list_jobs(self, request: web.Request) -> web.StreamResponse:
        ns = request.match_info["ns"]
        selector = self._selector(request)
        if parse_bool(request.query.get("watch")):
            return await self._watch(request, ns, "Job", selector)
        with self._lock:
            items = [
                copy.deepcopy(j)
                for (n, _), j in sorted(self._state.jobs.items())
                if n == ns and selector_matches(selector, j["metadata"].get("labels") or {})
            ]
            return _json(_list("JobList", "batch/v1", items, self._state.rv))

    async def _watch(
        self,
        request: web.Request,
        ns: str,
        kind: str,
        selector: list[tuple[str, str, str | None]],
    ) -> web.StreamResponse:
        record = request[RECORD]
        raw_rv = request.query.get("resourceVersion", "")
        try:
            since = int(raw_rv) if raw_rv not in ("", "0") else None
        except ValueError:
            return _json(status_body(400, "BadRequest", f"invalid resourceVersion {raw_rv!r}"), 400)
        timeout = float(request.query.get("timeoutSeconds") or 1800)
        deadline = time.monotonic() + timeout
        queue: asyncio.Queue[Any] = asyncio.Queue()
        response = web.StreamResponse(
            status=200, headers={"Content-Type": "application/json", "Cache-Control": "no-cache"}
        )
        response.enable_chunked_encoding()
        await response.prepare(request)

        def matches(obj: dict[str, Any]) -> bool:
            return selector_matches(selector, obj["metadata"].get("labels") or {})

        async def send(type_: str, obj: dict[str, Any]) -> None:
            record.events += 1
            await response.write((json.dumps({"type": type_, "object": obj}) + "\n").encode())

        async def expire(current: int) -> None:
            record.watch_error = 410
            await send(
                "ERROR",
                status_body(410, "Expired", f"too old resource version: {since} ({current})"),
            )

        token = id(queue)
        with self._lock:
            compacted, current = self._state.compacted, self._state.rv
            if since is not None and since < compacted:
                backlog: list[tuple[str, dict[str, Any]]] | None = None
            elif since is None:
                backlog = [
                    ("ADDED", copy.deepcopy(o))
                    for (n, _), o in sorted(self._state.jobs.items())
                    if n == ns and matches(o)
                ]
            else:
                backlog = [
                    (e.type, copy.deepcopy(e.obj))
                    for e in self._state.events
                    if e.rv > since and e.namespace == ns and e.kind == kind and matches(e.obj)
                ]
            if backlog is not None:
                self._watchers[token] = (queue, ns, kind)
        try:
            if backlog is None:
                await expire(current)
            else:
                for type_, obj in backlog:
                    await send(type_, obj)
                while True:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    try:
                        item = await asyncio.wait_for(queue.get(), remaining)
                    except TimeoutError:
                        break
                    if item is _CLOSE:
                        break
                    if isinstance(item, tuple) and item[0] == "DROP":
                        record.watch_error = -1
                        if request.transport is not None:
                            request.transport.abort()  # no terminating chunk: truncated
                        break
                    if isinstance(item, tuple) and item[0] == "EXPIRE":
                        await expire(item[1])
                        break
                    if isinstance(item, _Event) and matches(item.obj):
                        await send(item.type, item.obj)
            await response.write_eof()
        except ConnectionResetError:  # the client went away (it stopped watching)
            pass
        finally:
            record.status = 200
            with self._lock:
                self._watchers.pop(token, None)
        return response


def _labels_have(obj: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    have = obj["metadata"].get("labels") or {}
    return all(have.get(k) == v for k, v in labels.items())


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(
        status=status, body=json.dumps(body).encode(), content_type="application/json"
    )


def _list(kind: str, api_version: str, items: list[dict[str, Any]], rv: int) -> dict[str, Any]:
    return {
        "kind": kind,
        "apiVersion": api_version,
        "metadata": {"resourceVersion": str(rv)},
        "items": items,
    }


def _ns_missing(ns: str) -> dict[str, Any]:
    return status_body(
        404, "NotFound", f'namespaces "{ns}" not found', {"name": ns, "kind": "namespaces"}
    )


def kubeconfig(
    fake: FakeKube | str,
    path: str | Path,
    context: str = "fake",
    *,
    namespace: str = "default",
    token: str = TOKEN,
) -> Path:
    """Write a kubeconfig whose ``context`` points at the fake (or any URL): plain HTTP, a
    bearer token, and that context as the current one."""
    import yaml

    server = fake.url if isinstance(fake, FakeKube) else fake
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "fake-cluster", "cluster": {"server": server}}],
        "users": [{"name": "fake-user", "user": {"token": token}}],
        "contexts": [
            {
                "name": context,
                "context": {"cluster": "fake-cluster", "user": "fake-user", "namespace": namespace},
            }
        ],
        "current-context": context,
        "preferences": {},
    }
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return target


def closed_port_url() -> str:
    """``http://127.0.0.1:PORT`` where nothing listens (connection refused at once)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}"
