"""Static checks of the deployment files (docker/, k8s/, .dockerignore) that CI can run.

CI has no Docker and no cluster, so `make kind-test` never runs there; these tests keep its
inputs valid and consistent with each other: manifests against the Kubernetes OpenAPI schemas,
the kind config, the cluster profile and experiment against skillmix's own loaders, the
Dockerfile's final stage, and the kind-test script (syntax, shellcheck, prerequisite check).
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
SCRIPT = K8S / "kind-test.sh"
# Kubernetes versions the plain manifests must validate against: the oldest we document
# for these files, and the version of the kind node image.
K8S_VERSIONS = ("1.33", "1.35")
BUILD_TOOLS = ("gcc", "g++", "clang", "build-essential", "make", "cmake", "python3-dev")


def documents(path: Path) -> list[dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]
    assert docs, f"{path} holds no YAML documents"
    assert all(isinstance(d, dict) for d in docs), f"{path}: every document must be a mapping"
    return docs


def by_kind(path: Path, kind: str) -> list[dict[str, Any]]:
    return [d for d in documents(path) if d.get("kind") == kind]


def script_constants() -> dict[str, str]:
    """`readonly NAME=value` lines of kind-test.sh (the names it shares with other files)."""
    out: dict[str, str] = {}
    for line in SCRIPT.read_text(encoding="utf-8").splitlines():
        m = re.match(r"^readonly ([A-Z][A-Z0-9_]*)=(.*)$", line)
        if m:
            value = shlex.split(m.group(2), comments=True)
            out[m.group(1)] = value[0] if value else ""
    return out


def expand(value: str, constants: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}", lambda m: constants[m.group(1)], value)


# --------------------------------------------------------------------------------------
# Kubernetes manifests
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("name", ["minio.yaml", "rbac-launcher.yaml", "rbac-coordinator.yaml"])
def test_manifests_validate_strictly(name: str, version: str) -> None:
    import kubernetes_validate

    for doc in documents(K8S / name):
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{name}: {doc['kind']}/{doc['metadata']['name']} (k8s {version}): {exc}")


def test_minio_objects_and_credentials() -> None:
    path = K8S / "minio.yaml"
    kinds = sorted(d["kind"] for d in documents(path))
    assert kinds == ["Deployment", "Job", "Service"]
    for doc in documents(path):
        assert "namespace" not in doc["metadata"], "minio.yaml must stay namespace-agnostic"
    (deployment,) = by_kind(path, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    assert container["args"][:2] == ["server", "/data"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/minio/health/ready"
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    env = {e["name"]: e for e in container["env"]}
    for var, key in (
        ("MINIO_ROOT_USER", "AWS_ACCESS_KEY_ID"),
        ("MINIO_ROOT_PASSWORD", "AWS_SECRET_ACCESS_KEY"),
    ):
        assert "value" not in env[var], f"{var} must come from the Secret, not a literal"
        ref = env[var]["valueFrom"]["secretKeyRef"]
        assert (ref["name"], ref["key"]) == ("skillmix-s3", key)
    volumes = {v["name"]: v for v in pod["volumes"]}
    data = next(m for m in container["volumeMounts"] if m["mountPath"] == "/data")
    assert "emptyDir" in volumes[data["name"]]

    (service,) = by_kind(path, "Service")
    assert service["spec"]["type"] == "NodePort"
    (port,) = service["spec"]["ports"]
    assert (port["port"], port["nodePort"]) == (9000, 30900)

    (job,) = by_kind(path, "Job")
    job_pod = job["spec"]["template"]["spec"]
    assert job["spec"].get("activeDeadlineSeconds"), "the bucket Job must be bounded"
    (mc,) = job_pod["containers"]
    script = "\n".join(mc.get("command", []) + mc.get("args", []))
    assert "mc" in script and "alias set" in script and "mb --ignore-existing" in script
    for secret_env in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        (entry,) = [e for e in mc["env"] if e["name"] == secret_env]
        assert entry["valueFrom"]["secretKeyRef"]["name"] == "skillmix-s3"


def test_minio_images_are_pinned() -> None:
    pods = [
        d["spec"]["template"]["spec"]
        for d in documents(K8S / "minio.yaml")
        if "template" in d["spec"]
    ]
    assert len(pods) == 2
    for pod in pods:
        for container in pod.get("initContainers", []) + pod["containers"]:
            image = container["image"]
            assert image.startswith(("quay.io/minio/minio:", "quay.io/minio/mc:")), image
            tag = image.split(":", 1)[1].split("@")[0]
            assert tag.startswith("RELEASE."), f"{image}: pin a RELEASE tag, not {tag!r}"
            assert re.search(r"@sha256:[0-9a-f]{64}$", image), f"{image}: pin the digest too"


REQUIRED_LAUNCHER_RULES = {
    ("batch", "jobs"): {"create", "get", "list", "watch", "delete", "deletecollection"},
    ("", "pods"): {"get", "list", "watch"},
    ("", "pods/log"): {"get"},
    ("", "serviceaccounts"): {"create", "get"},
    ("", "secrets"): {"create"},
    ("networking.k8s.io", "networkpolicies"): {"create"},
    ("", "events"): {"get", "list", "watch"},
}


def _launcher_role() -> dict[str, Any]:
    (role,) = by_kind(K8S / "rbac-launcher.yaml", "Role")
    return role


def test_rbac_role_reads_no_secrets_and_grants_no_wildcards() -> None:
    for rule in _launcher_role()["rules"]:
        resources = set(rule.get("resources", []))
        assert "*" not in resources, f"wildcard resource: {rule}"
        if "secrets" in resources:  # only to create the per-attempt model-server key
            assert rule["verbs"] == ["create"], f"the launcher may not read Secrets: {rule}"
        assert "*" not in rule.get("apiGroups", []), f"wildcard API group: {rule}"
        assert "*" not in rule.get("verbs", []), f"wildcard verb: {rule}"
        assert not rule.get("resourceNames"), "keep the example free of resourceNames"
        assert not set(rule.get("verbs", [])) & {"update", "patch", "escalate", "bind"}


def test_rbac_role_grants_what_the_cli_needs() -> None:
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in _launcher_role()["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    for key, verbs in REQUIRED_LAUNCHER_RULES.items():
        assert verbs <= granted.get(key, set()), f"{key}: missing {verbs - granted.get(key, set())}"
    (binding,) = by_kind(K8S / "rbac-launcher.yaml", "RoleBinding")
    role = _launcher_role()
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["metadata"]["namespace"] == role["metadata"]["namespace"] == "skillmix"
    assert {s["kind"] for s in binding["subjects"]} <= {"User", "Group", "ServiceAccount"}


# --------------------------------------------------------------------------------------
# kind cluster, Kueue example
# --------------------------------------------------------------------------------------


def _version(tag: str) -> tuple[int, ...]:
    m = re.fullmatch(r"v(\d+)\.(\d+)\.(\d+)", tag)
    assert m, f"not a Kubernetes version tag: {tag!r}"
    return tuple(int(x) for x in m.groups())


def test_kind_config() -> None:
    (config,) = documents(K8S / "kind-config.yaml")
    assert config["kind"] == "Cluster"
    assert config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    nodes = config["nodes"]
    assert [n["role"] for n in nodes].count("control-plane") == 1
    for node in nodes:
        m = re.fullmatch(r"kindest/node:(v[\d.]+)@sha256:[0-9a-f]{64}", node["image"])
        assert m, f"pin the node image by tag and digest: {node['image']}"
        assert _version(m.group(1)) >= (1, 33, 0)
    (control_plane,) = [n for n in nodes if n["role"] == "control-plane"]
    (service,) = by_kind(K8S / "minio.yaml", "Service")
    node_port = service["spec"]["ports"][0]["nodePort"]
    mappings = {m["containerPort"]: m for m in control_plane["extraPortMappings"]}
    assert node_port in mappings, "MinIO's NodePort must be mapped to the host"
    mapping = mappings[node_port]
    assert mapping.get("listenAddress") == "127.0.0.1"
    constants = script_constants()
    assert urlparse(constants["HOST_S3_URL"]).port == mapping["hostPort"]
    assert config.get("name", constants["CLUSTER"]) == constants["CLUSTER"]


def test_kueue_example_structure() -> None:
    docs = documents(K8S / "kueue-example.yaml")
    assert {d["apiVersion"] for d in docs} == {"kueue.x-k8s.io/v1beta2"}
    kinds = {d["kind"] for d in docs}
    assert kinds == {"ResourceFlavor", "ClusterQueue", "LocalQueue", "WorkloadPriorityClass"}
    flavors = {d["metadata"]["name"] for d in docs if d["kind"] == "ResourceFlavor"}
    queues = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ClusterQueue"}
    for queue in queues.values():
        for group in queue["spec"]["resourceGroups"]:
            covered = set(group["coveredResources"])
            # vLLM pods request ephemeral-storage: an uncovered resource is never admitted
            assert {"cpu", "memory", "ephemeral-storage", "nvidia.com/gpu"} <= covered
            for flavor in group["flavors"]:
                assert flavor["name"] in flavors
                assert {r["name"] for r in flavor["resources"]} == covered
                for r in flavor["resources"]:
                    assert "nominalQuota" in r
    (local,) = [d for d in docs if d["kind"] == "LocalQueue"]
    assert local["metadata"] == {"name": "skillmix", "namespace": "skillmix"}
    assert local["spec"]["clusterQueue"] in queues


# --------------------------------------------------------------------------------------
# Cluster profile and experiment used by kind-test
# --------------------------------------------------------------------------------------


def test_kind_profile_loads_and_matches_the_cluster() -> None:
    from skillmix.k8s.profiles import load_profiles

    profiles, where = load_profiles(K8S / "skillmix.kind.yaml")
    assert where == K8S / "skillmix.kind.yaml"
    profile = profiles.clusters["kind"]
    c = script_constants()
    assert profile.context == expand(c["CONTEXT"], c) == "kind-skillmix-test"
    assert profile.namespace == c["NAMESPACE"]
    assert profile.image == c["IMAGE"]
    assert profile.image_pull_policy == "Never"
    assert profile.store == expand(c["STORE"], c)
    assert profile.store.startswith(f"s3://{c['BUCKET']}/")
    assert profile.s3.credentials_secret == c["S3_SECRET"]
    # The bucket the MinIO Job creates, and the in-cluster Service the pods talk to.
    (job,) = by_kind(K8S / "minio.yaml", "Job")
    (mc,) = job["spec"]["template"]["spec"]["containers"]
    job_env = {e["name"]: e.get("value") for e in mc["env"]}
    assert job_env["BUCKET"] == c["BUCKET"]
    (service,) = by_kind(K8S / "minio.yaml", "Service")
    endpoint = urlparse(profile.s3.endpoint_url or "")
    assert (
        endpoint.hostname == f"{service['metadata']['name']}.{profile.namespace}.svc.cluster.local"
    )
    assert endpoint.port == service["spec"]["ports"][0]["port"]
    # Short deadlines: a run must be able to finish within the script's launch timeout.
    assert profile.deadlines.generation_seconds <= 3600


def test_kind_experiment_loads_and_matches_the_script() -> None:
    from skillmix.loading import load_experiment

    experiment = load_experiment(K8S / "experiment.kind.yaml")
    assert all(s.backend == "mock" and s.quality is not None for s in experiment.students)
    assert experiment.grader.backend == "mock"
    assert any(s.replicas >= 2 for s in experiment.students), "exercise Indexed Jobs"
    assert experiment.ks == [2, 3]
    assert (experiment.combinations, experiment.generation_rounds) == (8, 2)
    assert experiment.grader.rounds == 3
    assert experiment.catalog.skills is None and experiment.catalog.topics is None
    assert experiment.prompts.dir is None
    c = script_constants()
    assert c["EXPECT_STUDENTS"].split(",") == [s.name for s in experiment.students]
    assert [int(k) for k in c["EXPECT_KS"].split(",")] == experiment.ks
    assert int(c["EXPECT_N"]) == experiment.combinations
    quality = {s.name: s.quality for s in experiment.students}
    strong, weak = quality[c["STRONG_STUDENT"]], quality[c["WEAK_STUDENT"]]
    assert strong is not None and weak is not None  # the mock backend always has a quality
    assert strong > weak


# --------------------------------------------------------------------------------------
# Dockerfile and .dockerignore
# --------------------------------------------------------------------------------------


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        if full:
            word, _, rest = full.partition(" ")
            out.append((word.upper(), rest.strip()))
    assert not pending, "Dockerfile ends inside a line continuation"
    return out


def _stages() -> tuple[dict[str, str], list[list[tuple[str, str]]]]:
    global_args: dict[str, str] = {}
    stages: list[list[tuple[str, str]]] = []
    for instruction, args in _dockerfile_instructions():
        if instruction == "FROM":
            stages.append([(instruction, args)])
        elif not stages:
            assert instruction == "ARG", f"{instruction} before the first FROM"
            name, _, default = args.partition("=")
            global_args[name] = default.strip().strip('"')
        else:
            stages[-1].append((instruction, args))
    assert len(stages) >= 2, "the Dockerfile must be multi-stage"
    return global_args, stages


def _base_image(from_args: str, global_args: dict[str, str]) -> str:
    image = from_args.split()[0]
    if image.startswith("--platform"):
        image = from_args.split()[1]
    return re.sub(r"\$\{?(\w+)\}?", lambda m: global_args[m.group(1)], image)


def test_dockerfile_base_images_are_pinned_by_tag_and_digest() -> None:
    global_args, stages = _stages()
    names = {stage[0][1].split()[-1] for stage in stages if " AS " in stage[0][1].upper()}
    bases = [_base_image(stage[0][1], global_args) for stage in stages]
    external = [base for base in bases if base not in names]
    assert external, "no base image"
    for base in external:
        assert base.startswith("python:3.11"), base
        tag, _, digest = base.split(":", 1)[1].partition("@")
        assert re.fullmatch(r"3\.11\.\d+-slim(-\w+)?", tag), f"pin a full version tag: {base}"
        assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest), f"pin the base by digest: {base}"
    assert len(set(external)) == 1, "every stage must share the base image (interpreter paths)"


def _requirements(path: Path) -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) of a pip requirements file with hashes."""
    text = path.read_text(encoding="utf-8").replace("\\\n", " ")
    out: dict[str, tuple[str, list[str]]] = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        spec, *options = line.split()
        name, _, version = spec.partition("==")
        assert version, f"{path.name}: {spec} is not pinned with =="
        hashes = [o.removeprefix("--hash=") for o in options if o.startswith("--hash=sha256:")]
        assert hashes, f"{path.name}: {spec} has no hash"
        out[name.lower().replace("_", "-")] = (version, hashes)
    return out


def test_the_image_installs_exactly_the_locked_dependencies_of_pyproject() -> None:
    from packaging.requirements import Requirement
    from packaging.version import Version

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    locked = _requirements(ROOT / "docker" / "requirements.lock")
    for text in pyproject["project"]["dependencies"]:
        requirement = Requirement(text)
        name = requirement.name.lower().replace("_", "-")
        assert name in locked, (
            f"{name} is a dependency but not in docker/requirements.lock: make lock"
        )
        assert Version(locked[name][0]) in requirement.specifier, (
            f"docker/requirements.lock pins {name}=={locked[name][0]}, outside {requirement}: make lock"
        )
    build = _requirements(ROOT / "docker" / "requirements-build.lock")
    for text in pyproject["build-system"]["requires"]:
        requirement = Requirement(text)
        assert Version(build[requirement.name][0]) in requirement.specifier, "make lock"
    steps = " ".join(args for stage in _stages()[1] for i, args in stage if i == "RUN")
    assert "--require-hashes --prefix=/install -r requirements.lock" in steps
    assert "--require-hashes -r requirements-build.lock" in steps
    assert "--no-build-isolation" in steps, "the wheel's build backend comes from the lock"


def test_dockerfile_final_stage() -> None:
    _, stages = _stages()
    final = stages[-1]
    instructions = [i for i, _ in final]
    users = [args for i, args in final if i == "USER"]
    assert users, "the final stage must set USER"
    user = users[-1]
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0, f"USER must be a numeric non-root uid: {user}"
    assert not gid or (gid.isdigit() and int(gid) != 0)
    entrypoints = [args for i, args in final if i == "ENTRYPOINT"]
    assert entrypoints and json.loads(entrypoints[-1]) == ["skillmix"]
    assert json.loads([a for i, a in final if i == "CMD"][-1]) == ["--help"]
    assert [a for i, a in final if i == "WORKDIR"][-1] == "/tmp"
    env = " ".join(a for i, a in final if i == "ENV")
    for setting in ("PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1", "HOME=/tmp"):
        assert setting in env
    # USER comes after everything that needs root.
    assert instructions.index("USER") > max(
        i for i, name in enumerate(instructions) if name in ("RUN", "COPY")
    )
    assert any(i == "COPY" and "--from=" in a and "/install" in a for i, a in final)
    assert any(i == "COPY" and "--from=" in a and "/app" in a for i, a in final)
    for instruction, args in final:
        if instruction != "RUN":
            continue
        assert "pip install" not in args, "the final stage copies /install, it installs nothing"
        if re.search(r"apt-get\s+install|apk\s+add", args):
            words = set(re.split(r"[\s;&|\\]+", args))
            assert not words & set(BUILD_TOOLS), f"build tools in the final stage: {args}"
    assert any(i == "LABEL" and "org.opencontainers.image" in a for i, a in final)


def test_dockerfile_build_stage_builds_the_wheel() -> None:
    _, stages = _stages()
    build = next(stage for stage in stages if stage[0][1].upper().endswith(" AS BUILD"))
    text = " ".join(args for _, args in build)
    assert "pip wheel --no-deps" in text
    assert "--prefix=/app" in text
    every = " ".join(args for stage in stages for _, args in stage)
    assert "PIP_NO_CACHE_DIR=1" in every or "--no-cache-dir" in every
    copied = " ".join(a for i, a in build if i == "COPY")
    for needed in ("pyproject.toml", "README.md", "skillmix/", "prompts/", "helm/"):
        assert needed in copied


def test_dockerignore_excludes_local_state() -> None:
    patterns = {
        line.strip().rstrip("/")
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    for required in (".venv", ".tools", ".git", "runs", "tests", ".kind-logs"):
        assert required in patterns, f".dockerignore must exclude {required}"
    for needed in ("skillmix", "prompts", "pyproject.toml", "README.md", "helm", "docker"):
        assert needed not in patterns, f".dockerignore must keep {needed} (the image needs it)"
    assert not any(p.startswith("!") for p in patterns)


# --------------------------------------------------------------------------------------
# kind-test.sh
# --------------------------------------------------------------------------------------


def test_kind_test_script_syntax() -> None:
    result = subprocess.run(
        ["bash", "-n", str(SCRIPT)], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr
    text = SCRIPT.read_text(encoding="utf-8")
    assert text.startswith("#!/usr/bin/env bash\n")
    assert re.search(r"^set -E?euo pipefail$", text, re.M)
    header = "\n".join(text.splitlines()[:40])
    assert "run id:" in header, "document the `run id:` assumption at the top"


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_kind_test_script_shellcheck() -> None:
    result = subprocess.run(
        ["shellcheck", "--severity=info", str(SCRIPT)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_kind_test_script_never_prints_credentials() -> None:
    text = SCRIPT.read_text(encoding="utf-8")
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    assert "set -x" not in code
    assert "--from-literal" not in code, "keys on a command line show up in ps"
    for line in code.splitlines():
        if re.search(r"\b(echo|printf|log)\b", line):
            assert "AWS_SECRET_ACCESS_KEY" not in line, line
    # Every kubectl wait / rollout is bounded.
    for line in code.splitlines():
        if re.search(r"\b(wait|rollout status)\b", line) and re.search(r"\bk[cq] ", line):
            assert "--timeout" in line, line


def test_kind_test_script_reports_missing_prerequisites(tmp_path: Path) -> None:
    # A PATH with nothing but `dirname`: docker and kind are certainly missing.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    dirname = shutil.which("dirname")
    assert dirname
    (bin_dir / "dirname").symlink_to(dirname)
    env = {
        "PATH": str(bin_dir),
        "HOME": str(tmp_path),
        "SKILLMIX": "/bin/true",
        "PYTHON": "/bin/true",
    }
    result = subprocess.run(
        [shutil.which("bash") or "/bin/bash", str(SCRIPT)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stderr
    assert "missing prerequisites" in result.stderr
    for tool in ("docker", "kind"):
        assert re.search(rf"\b{tool}\b", result.stderr), result.stderr


def test_coordinator_role_may_only_release_jobs_and_read_pods() -> None:
    """The coordinator's Role: release (patch, or create a deferred one) and read Jobs, read
    pods and list events; no Secrets, no pod creation; bound to its ServiceAccount only."""
    path = K8S / "rbac-coordinator.yaml"
    (role,) = by_kind(path, "Role")
    assert role["rules"] == [
        {
            "apiGroups": ["batch"],
            "resources": ["jobs"],
            "verbs": ["get", "list", "watch", "patch", "create"],
        },
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["list"]},
    ]
    # the account itself is the profile's coordinator_service_account, made by `launch`
    assert not by_kind(path, "ServiceAccount")
    (binding,) = by_kind(path, "RoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "skillmix-coordinator", "namespace": "skillmix"}
    ]


# --------------------------------------------------------------------------------------
# Admission policies (their behaviour: tests/cluster/test_admission_policies_on_cluster.py)
# --------------------------------------------------------------------------------------


def _policy(name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ValidatingAdmissionPolicy and its binding of k8s/<name>, checked alike: valid
    against the schemas, bound to each other with Deny, failing closed, every refusal with a
    message."""
    import kubernetes_validate

    path = K8S / name
    docs = documents(path)
    assert {d["apiVersion"] for d in docs} == {"admissionregistration.k8s.io/v1"}
    for doc in docs:
        for version in K8S_VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)
    (policy,) = by_kind(path, "ValidatingAdmissionPolicy")
    (binding,) = by_kind(path, "ValidatingAdmissionPolicyBinding")
    assert binding["spec"] == {
        "policyName": policy["metadata"]["name"],
        "validationActions": ["Deny"],
    }
    assert policy["spec"]["failurePolicy"] == "Fail"
    for rule in policy["spec"]["validations"]:
        assert rule["messageExpression"] and rule["reason"] == "Forbidden", rule
    return policy, binding


def test_coordinator_policy_matches_its_account_and_what_the_coordinator_patches() -> None:
    from skillmix.vocab import ADMISSION_GATE_ANNOTATION, FAILURE_ANNOTATION, GATED_LABEL

    policy, _ = _policy("policy-coordinator.yaml")
    spec = policy["spec"]
    assert spec["matchConstraints"]["resourceRules"] == [
        {
            "apiGroups": ["batch"],
            "apiVersions": ["*"],
            "resources": ["jobs", "jobs/*"],
            "operations": ["*"],
        }
    ]
    # the account rbac-coordinator.yaml binds, in every namespace
    (binding,) = by_kind(K8S / "rbac-coordinator.yaml", "RoleBinding")
    (account,) = {s["name"] for s in binding["subjects"]}
    (condition,) = spec["matchConditions"]
    assert f"[^:]+:{account}$" in condition["expression"]
    variables = {v["name"]: v["expression"] for v in spec["variables"]}
    assert variables["mayChangeNotes"] == f"['{ADMISSION_GATE_ANNOTATION}', '{FAILURE_ANNOTATION}']"
    assert variables["mayChangeSpec"] == "['suspend', 'activeDeadlineSeconds']"
    assert f":{account}'" in variables["sameNamespace"]
    assert "authentication.kubernetes.io/pod-name" in variables["podName"]
    assert "-coo-a" in variables["runPrefix"]
    text = "\n".join(v["expression"] for v in spec["validations"])
    assert f"variables.labels['{GATED_LABEL}'] == 'true'" in text
    assert "automountServiceAccountToken" in text and f"!= '{account}'" in text


def test_launcher_policy_names_the_launcher_bindings_subjects() -> None:
    policy, _ = _policy("policy-launcher.yaml")
    spec = policy["spec"]
    assert spec["matchConstraints"]["resourceRules"] == [
        {"apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"], "operations": ["CREATE"]}
    ]
    (condition,) = spec["matchConditions"]
    (binding,) = by_kind(K8S / "rbac-launcher.yaml", "RoleBinding")
    for subject in binding["subjects"]:
        assert f"'{subject['name']}'" in condition["expression"], subject
    (rule,) = spec["validations"]
    assert rule["expression"] == "has(request.dryRun) && request.dryRun"


def test_launcher_secrets_policy_allows_only_the_model_key() -> None:
    """The launcher creates one kind of Secret, the per-model servers' key: the policy names
    the launcher like its RoleBinding and refuses any other name, type or key."""
    from skillmix.k8s.values import MODEL_KEY, model_key_secret

    policy, _ = _policy("policy-launcher-secrets.yaml")
    spec = policy["spec"]
    assert spec["matchConstraints"]["resourceRules"] == [
        {
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "resources": ["secrets"],
            "operations": ["CREATE"],
        }
    ]
    (condition,) = spec["matchConditions"]
    (binding,) = by_kind(K8S / "rbac-launcher.yaml", "RoleBinding")
    for subject in binding["subjects"]:
        assert f"'{subject['name']}'" in condition["expression"], subject
    (rule,) = spec["validations"]
    pattern = re.search(r"matches\('([^']+)'\)", rule["expression"])
    assert pattern is not None
    assert re.fullmatch(pattern.group(1), model_key_secret("a-long-run-name-0123abcd", 3))
    assert not re.fullmatch(pattern.group(1), "skillmix-coordinator-token")
    assert f"k == '{MODEL_KEY}'" in rule["expression"]
