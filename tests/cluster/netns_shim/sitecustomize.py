"""Pod network isolation for the process kubelet (tests/cluster/kubelet.py).

Pods on a real node each have their own network namespace: two pods may both listen on port
8000 and each reaches its own through ``localhost:8000``. Here all pods are processes on one
host, so the kubelet gives each pod's declared container ports a free host port and passes the
map in ``SKILLMIX_POD_PORTS`` (``8000:41234,...``). This module, imported at interpreter start
(it is first on the pod's PYTHONPATH), maps binds and loopback connects of those ports onto
the pod's host ports. Other addresses and ports (S3, the API server) are untouched.

Mount paths a process on the host cannot reach (the service-account volume at
``/var/run/secrets/kubernetes.io/serviceaccount``) come in ``SKILLMIX_POD_MOUNTS``
(``/container/path=/host/dir`` joined by ``os.pathsep``): opens, stats and the CA file that ssl
loads under them go to the host folder, so standard code reads the standard paths.
"""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from typing import TypeAlias

    from _typeshed import ReadableBuffer

    Address: TypeAlias = tuple[Any, ...] | str | ReadableBuffer  # what socket methods take

_MAP = {}
for _pair in filter(None, os.environ.get("SKILLMIX_POD_PORTS", "").split(",")):
    _port, _, _host = _pair.partition(":")
    _MAP[int(_port)] = int(_host)

_LOCAL = {"", "0.0.0.0", "127.0.0.1", "localhost", "::", "::1"}


def _translate(address: Address) -> Address:
    if isinstance(address, tuple) and len(address) >= 2 and address[0] in _LOCAL:
        port = address[1]
        if port in _MAP:
            host = "127.0.0.1" if address[0] in ("", "0.0.0.0", "localhost") else address[0]
            return (host, _MAP[port], *address[2:])
    return address


if _MAP:
    _bind = socket.socket.bind
    _connect = socket.socket.connect
    _connect_ex = socket.socket.connect_ex

    def bind(self: socket.SocketType, address: Address) -> None:
        return _bind(self, _translate(address))

    def connect(self: socket.SocketType, address: Address) -> None:
        return _connect(self, _translate(address))

    def connect_ex(self: socket.SocketType, address: Address) -> int:
        return _connect_ex(self, _translate(address))

    socket.socket.bind = bind  # type: ignore[method-assign]
    socket.socket.connect = connect  # type: ignore[method-assign]
    socket.socket.connect_ex = connect_ex  # type: ignore[method-assign]


_MOUNTS: list[tuple[str, str]] = []
for _entry in filter(None, os.environ.get("SKILLMIX_POD_MOUNTS", "").split(os.pathsep)):
    _path, _, _where = _entry.partition("=")
    _MOUNTS.append((_path.rstrip("/"), _where))


def _mapped_path(path: Any) -> Any:
    if isinstance(path, str):
        for mount, where in _MOUNTS:
            if path == mount or path.startswith(mount + "/"):
                return where + path[len(mount) :]
    return path


if _MOUNTS:
    import builtins
    import io
    import ssl

    _open = builtins.open
    _stat = os.stat
    _load_verify_locations = ssl.SSLContext.load_verify_locations

    def open_(file: Any, *args: Any, **kwargs: Any) -> Any:
        return _open(_mapped_path(file), *args, **kwargs)

    def stat(path: Any, *args: Any, **kwargs: Any) -> Any:
        return _stat(_mapped_path(path), *args, **kwargs)

    def load_verify_locations(
        self: ssl.SSLContext, cafile: Any = None, capath: Any = None, cadata: Any = None
    ) -> None:
        return _load_verify_locations(self, _mapped_path(cafile), _mapped_path(capath), cadata)

    builtins.open = open_
    io.open = open_
    os.stat = stat
    ssl.SSLContext.load_verify_locations = load_verify_locations  # type: ignore[method-assign]
