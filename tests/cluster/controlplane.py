"""A real Kubernetes control plane on 127.0.0.1 for tests and for people (`make cluster-up`).

etcd, kube-apiserver, kube-controller-manager and kube-scheduler are the official binaries
(built by ``scripts/install-control-plane.sh`` into ``.tools/k8s-vX/bin``); only the kubelet is
ours (``tests/cluster/kubelet.py``: pods run as local processes). Every start is bounded in time
and a failed start leaves no process behind.

The API server has:
- token auth: ``admin`` (system:masters) and ``launcher`` (user ``launcher@example.com`` in group
  ``skillmix-launchers``, the group ``k8s/rbac-launcher.yaml`` binds);
- the ``Node,RBAC`` authorizers and PodSecurity admission;
- service-account keys, so the controller manager's token controller works.
The controller manager runs the Job, TTL-after-finished, garbage-collector, namespace and
service-account controllers. The kubeconfig has the contexts ``admin`` and ``launcher``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import json
import os
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
K8S_VERSION = os.environ.get("K8S_VERSION", "v1.34.4")
BIN_DIR = REPO_ROOT / ".tools" / f"k8s-{K8S_VERSION}" / "bin"
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
LAUNCHER_USER = "launcher@example.com"
LAUNCHER_GROUP = "skillmix-launchers"
CONTROLLERS = (
    "job-controller",
    "ttl-after-finished-controller",
    "garbage-collector-controller",
    "namespace-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "resourcequota-controller",
    "root-ca-certificate-publisher-controller",
)


class ClusterSetupError(RuntimeError):
    """The control plane cannot start; the message is one line naming the fix."""


def missing_binaries(bin_dir: Path = BIN_DIR) -> list[str]:
    return [b for b in BINARIES if not os.access(bin_dir / b, os.X_OK)]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


# ---------------------------------------------------------------------------------------------
# certificates and keys
# ---------------------------------------------------------------------------------------------


def _write_pki(pki: Path) -> None:
    """A CA, the API server's serving certificate, the kubelet's serving certificate and the
    service-account signing key pair."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    pki.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def key_pem(key: Any) -> bytes:
        return bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("skillmix-test-ca"))
        .issuer_name(name("skillmix-test-ca"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    (pki / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))

    def serving(file: str, cn: str, dns: list[str]) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        sans += [
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("10.0.0.1")),
        ]
        cert = (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        (pki / f"{file}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (pki / f"{file}.key").write_bytes(key_pem(key))

    serving(
        "apiserver",
        "kube-apiserver",
        ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"],
    )
    serving("kubelet", "kubelet", ["localhost"])
    sa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (pki / "sa.key").write_bytes(key_pem(sa))
    (pki / "sa.pub").write_bytes(
        sa.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    for path in pki.iterdir():
        path.chmod(0o600)


def write_kubeconfig(
    path: Path, server: str, ca_file: Path, tokens: dict[str, str], current: str
) -> Path:
    """A kubeconfig with one context per identity (token auth); no secret is printed."""
    import base64

    import yaml

    ca_data = base64.b64encode(ca_file.read_bytes()).decode()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "local", "cluster": {"server": server, "certificate-authority-data": ca_data}}
        ],
        "users": [{"name": who, "user": {"token": token}} for who, token in tokens.items()],
        "contexts": [{"name": who, "context": {"cluster": "local", "user": who}} for who in tokens],
        "current-context": current,
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    path.chmod(0o600)
    return path


# ---------------------------------------------------------------------------------------------
# the control plane
# ---------------------------------------------------------------------------------------------


@dataclass
class ControlPlane:
    """A running control plane; ``stop()`` ends every process it started."""

    workdir: Path
    server: str
    kubeconfig: Path
    admin_token: str
    launcher_token: str
    pids: dict[str, int] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    _procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict, repr=False)

    @property
    def ca_file(self) -> Path:
        return self.workdir / "pki" / "ca.crt"

    def log(self, component: str) -> Path:
        return self.workdir / "logs" / f"{component}.log"

    def add_process(self, component: str, proc: subprocess.Popen[bytes]) -> None:
        self._procs[component] = proc
        self.pids[component] = proc.pid

    def alive(self) -> dict[str, bool]:
        return {name: _pid_alive(pid) for name, pid in self.pids.items()}

    def save(self) -> Path:
        state = {
            "workdir": str(self.workdir),
            "server": self.server,
            "kubeconfig": str(self.kubeconfig),
            "admin_token": self.admin_token,
            "launcher_token": self.launcher_token,
            "pids": self.pids,
            "ports": self.ports,
        }
        path = self.workdir / "state.json"
        path.write_text(json.dumps(state, indent=2), encoding="utf-8")
        path.chmod(0o600)
        return path

    @classmethod
    def load(cls, workdir: Path) -> ControlPlane:
        state = json.loads((workdir / "state.json").read_text(encoding="utf-8"))
        state["workdir"] = Path(state["workdir"])
        state["kubeconfig"] = Path(state["kubeconfig"])
        return cls(**state)

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM every component (reverse start order), SIGKILL what is left after
        ``grace`` seconds; every process group goes, none is left behind."""
        order = list(reversed(list(self.pids.items())))
        for _name, pid in order:
            _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for name, pid in order:
            proc = self._procs.get(name)
            while time.monotonic() < deadline and _pid_alive(pid, proc):
                time.sleep(0.05)
            if _pid_alive(pid, proc):
                _signal_group(pid, signal.SIGKILL)
            if proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=5)
        self.pids.clear()
        for pid in _processes_of(self.workdir):  # pods the kubelet could not stop itself
            _signal_group(pid, signal.SIGKILL)

    def api(self, context: str = "admin") -> Any:
        """An official-client ApiClient for one identity."""
        from kubernetes import config

        return config.new_client_from_config(config_file=str(self.kubeconfig), context=context)


def _pid_alive(pid: int, proc: subprocess.Popen[bytes] | None = None) -> bool:
    if proc is not None:
        return proc.poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie of another parent counts as gone
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def _processes_of(workdir: Path) -> list[int]:
    """Pod processes of this cluster's kubelet: their environment (TMPDIR) points into the
    kubelet's pod folders, which no other process's does."""
    marker = str(workdir / "kubelet" / "pods").encode()
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            with contextlib.suppress(OSError):
                if marker in (proc / "environ").read_bytes():
                    found.append(int(proc.name))
    return found


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _spawn(cp: ControlPlane, component: str, argv: list[str]) -> None:
    log = cp.log(component)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() ends it and its children
            cwd=REPO_ROOT,
            env={**os.environ, "GOMAXPROCS": os.environ.get("GOMAXPROCS", "2")},
        )
    cp.add_process(component, proc)


def _get(url: str, token: str | None, ca: Path | None, timeout: float = 2.0) -> tuple[int, str]:
    ctx = ssl.create_default_context(cafile=str(ca)) if ca else ssl._create_unverified_context()
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=ctx) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def _wait_healthy(
    cp: ControlPlane, component: str, url: str, deadline: float, token: str | None = None
) -> None:
    last = "no answer"
    while time.monotonic() < deadline:
        proc = cp._procs.get(component)
        if proc is not None and proc.poll() is not None:
            raise ClusterSetupError(
                f"{component} exited with code {proc.returncode} while starting; "
                f"see {cp.log(component)} (last line: {_last_line(cp.log(component))})"
            )
        try:
            status, body = _get(url, token, cp.ca_file if token else None)
            if status == 200:
                return
            last = f"HTTP {status}: {body.strip().splitlines()[-1] if body.strip() else ''}"
        except (OSError, urllib.error.URLError) as exc:
            last = str(getattr(exc, "reason", exc))
        time.sleep(0.25)
    raise ClusterSetupError(
        f"{component} was not ready in time ({url}: {last}); see {cp.log(component)}"
    )


def _last_line(path: Path) -> str:
    with contextlib.suppress(OSError):
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
        if lines:
            return lines[-1][:300]
    return "(empty log)"


def start_control_plane(
    workdir: Path,
    *,
    bin_dir: Path = BIN_DIR,
    api_port: int | None = None,
    timeout: float = 120.0,
) -> ControlPlane:
    """Start etcd, kube-apiserver, kube-controller-manager and kube-scheduler under
    ``workdir`` on fresh loopback ports; returns once all are healthy (bounded by
    ``timeout``). On any failure every started process is stopped and ClusterSetupError
    names the fix."""
    missing = missing_binaries(bin_dir)
    if missing:
        raise ClusterSetupError(
            f"control plane binaries missing in {bin_dir}: {', '.join(missing)}; "
            "run `make tools` (builds them once with Go)"
        )
    if api_port is not None and port_in_use(api_port):
        raise ClusterSetupError(
            f"port {api_port} on 127.0.0.1 is in use; stop what holds it or pick another port"
        )
    workdir.mkdir(parents=True, exist_ok=True)
    pki = workdir / "pki"
    _write_pki(pki)
    admin_token, launcher_token = secrets.token_hex(24), secrets.token_hex(24)
    tokens = workdir / "pki" / "tokens.csv"
    tokens.write_text(
        f'{admin_token},admin,admin-uid,"system:masters"\n'
        f'{launcher_token},{LAUNCHER_USER},launcher-uid,"{LAUNCHER_GROUP}"\n',
        encoding="utf-8",
    )
    tokens.chmod(0o600)
    ports = {
        "etcd": free_port(),
        "etcd-peer": free_port(),
        "apiserver": api_port or free_port(),
        "controller-manager": free_port(),
        "scheduler": free_port(),
    }
    server = f"https://127.0.0.1:{ports['apiserver']}"
    kubeconfig = write_kubeconfig(
        workdir / "kubeconfig",
        server,
        pki / "ca.crt",
        {"admin": admin_token, "launcher": launcher_token},
        "admin",
    )
    admin_kubeconfig = write_kubeconfig(
        workdir / "admin.kubeconfig", server, pki / "ca.crt", {"admin": admin_token}, "admin"
    )
    cp = ControlPlane(workdir, server, kubeconfig, admin_token, launcher_token, ports=ports)
    deadline = time.monotonic() + timeout
    try:
        etcd_url = f"http://127.0.0.1:{ports['etcd']}"
        peer_url = f"http://127.0.0.1:{ports['etcd-peer']}"
        _spawn(
            cp,
            "etcd",
            [
                str(bin_dir / "etcd"),
                "--name=default",
                f"--data-dir={workdir / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=default={peer_url}",
                "--log-level=warn",
            ],
        )
        _wait_healthy(cp, "etcd", f"{etcd_url}/health", deadline)
        _spawn(
            cp,
            "kube-apiserver",
            [
                str(bin_dir / "kube-apiserver"),
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={ports['apiserver']}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                f"--token-auth-file={tokens}",
                "--authorization-mode=Node,RBAC",
                "--enable-admission-plugins=NodeRestriction,PodSecurity",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--kubelet-preferred-address-types=InternalIP",
                f"--kubelet-certificate-authority={pki / 'ca.crt'}",
                f"--kubelet-client-certificate={pki / 'kubelet.crt'}",
                f"--kubelet-client-key={pki / 'kubelet.key'}",
                "--profiling=false",
                "--v=1",
            ],
        )
        _wait_healthy(cp, "kube-apiserver", f"{server}/readyz", deadline, admin_token)
        _spawn(
            cp,
            "kube-controller-manager",
            [
                str(bin_dir / "kube-controller-manager"),
                f"--kubeconfig={admin_kubeconfig}",
                f"--authentication-kubeconfig={admin_kubeconfig}",
                f"--authorization-kubeconfig={admin_kubeconfig}",
                f"--controllers={','.join(CONTROLLERS)}",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--root-ca-file={pki / 'ca.crt'}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={ports['controller-manager']}",
                "--concurrent-job-syncs=10",
                "--v=1",
            ],
        )
        _spawn(
            cp,
            "kube-scheduler",
            [
                str(bin_dir / "kube-scheduler"),
                f"--kubeconfig={admin_kubeconfig}",
                f"--authentication-kubeconfig={admin_kubeconfig}",
                f"--authorization-kubeconfig={admin_kubeconfig}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={ports['scheduler']}",
                "--v=1",
            ],
        )
        _wait_healthy(
            cp,
            "kube-controller-manager",
            f"https://127.0.0.1:{ports['controller-manager']}/healthz",
            deadline,
        )
        _wait_healthy(
            cp, "kube-scheduler", f"https://127.0.0.1:{ports['scheduler']}/healthz", deadline
        )
        _wait_for_default_service_account(cp, deadline)
    except BaseException:
        cp.stop(grace=3)
        raise
    cp.save()
    return cp


def _wait_for_default_service_account(cp: ControlPlane, deadline: float) -> None:
    """The controller manager is really working once it created ``default/default``."""
    url = f"{cp.server}/api/v1/namespaces/default/serviceaccounts/default"
    last = ""
    while time.monotonic() < deadline:
        status, _body = _get(url, cp.admin_token, cp.ca_file)
        if status == 200:
            return
        last = f"HTTP {status}"
        time.sleep(0.25)
    raise ClusterSetupError(
        f"kube-controller-manager created no default ServiceAccount in time ({last}); "
        f"see {cp.log('kube-controller-manager')}"
    )


def start_kubelet(cp: ControlPlane, *, extra: list[str] | None = None) -> None:
    """Our process kubelet (tests/cluster/kubelet.py) for the CPU and GPU nodes."""
    _spawn(
        cp,
        "kubelet",
        [
            sys.executable,
            "-m",
            "tests.cluster.kubelet",
            "--kubeconfig",
            str(cp.workdir / "admin.kubeconfig"),
            "--workdir",
            str(cp.workdir / "kubelet"),
            "--cert",
            str(cp.workdir / "pki" / "kubelet.crt"),
            "--key",
            str(cp.workdir / "pki" / "kubelet.key"),
            *(extra or []),
        ],
    )
    # PYTHONPATH for `-m tests.cluster.kubelet` is the repository (the Popen cwd is inherited)
    deadline = time.monotonic() + 60
    url = f"{cp.server}/api/v1/nodes"
    while time.monotonic() < deadline:
        proc = cp._procs["kubelet"]
        if proc.poll() is not None:
            raise ClusterSetupError(
                f"the kubelet exited with code {proc.returncode}; see {cp.log('kubelet')} "
                f"(last line: {_last_line(cp.log('kubelet'))})"
            )
        status, body = _get(url, cp.admin_token, cp.ca_file)
        if status == 200:
            nodes = json.loads(body)["items"]
            ready = [n for n in nodes if _node_ready(n)]
            if len(ready) >= 2:
                return
        time.sleep(0.25)
    raise ClusterSetupError(
        f"the kubelet registered no Ready nodes in time; see {cp.log('kubelet')}"
    )


def _node_ready(node: dict[str, Any]) -> bool:
    """Ready, and without the not-ready taint that node admission adds on registration."""
    conditions = node.get("status", {}).get("conditions", [])
    taints = node.get("spec", {}).get("taints") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions) and not any(
        t["key"] == "node.kubernetes.io/not-ready" for t in taints
    )
