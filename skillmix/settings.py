"""Every environment variable skillmix reads, in one place.

Each variable is an :class:`EnvVar` with its meaning, default and precedence; ``VARIABLES``
lists them all (the README's environment table is checked against it). Code reads the
environment only through this module: the helpers below for values, and the ``name`` of a
variable for click's ``envvar=``. Precedence everywhere is: command-line flag > environment
variable > file (experiment or cluster profile) > built-in default, where a level exists.

Variables read by libraries rather than by skillmix (boto3's credentials, the Kubernetes
client's ``KUBECONFIG``) are listed too, with ``read_by`` naming the library, so that one table
says everything the environment can change.

Light on purpose: the CLI imports this module before any command runs (``--help`` included).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class EnvVar:
    """One environment variable: what it means, its default, and what overrides it."""

    name: str
    meaning: str
    default: str
    precedence: str
    read_by: str = "skillmix"

    def raw(self) -> str | None:
        """The value as set (possibly empty), or None when unset."""
        return os.environ.get(self.name)


# --- skillmix's own variables -----------------------------------------------------------------

CONFIG = EnvVar(
    "SKILLMIX_CONFIG",
    "the cluster profile file (skillmix.yaml); when set, the only file searched",
    "./skillmix.yaml, then $XDG_CONFIG_HOME/skillmix/skillmix.yaml",
    "SKILLMIX_CONFIG > ./skillmix.yaml > the user config dir; empty counts as unset",
)
CLUSTER = EnvVar(
    "SKILLMIX_CLUSTER",
    "the cluster profile name (launch, render, status, logs, cancel)",
    "the profile file's `default:`, else its only profile",
    "--cluster > SKILLMIX_CLUSTER > `default:` in the profile file > the only profile",
)
HELM = EnvVar(
    "SKILLMIX_HELM",
    "the helm binary used to render the chart",
    "`helm` on PATH, else .tools/bin/helm in a source checkout",
    "SKILLMIX_HELM (must be an executable file) > PATH > the checkout's .tools/bin/helm",
)
RUN = EnvVar(
    "SKILLMIX_RUN",
    "the run folder URI of `skillmix task ...` (set in every pod by the chart)",
    "none (required)",
    "--run > SKILLMIX_RUN",
)
DEBUG = EnvVar(
    "SKILLMIX_DEBUG",
    "show tracebacks on errors (any value but empty, 0 or false)",
    "off",
    "--debug or SKILLMIX_DEBUG (either turns it on)",
)
REVISION = EnvVar(
    "SKILLMIX_REVISION",
    "the git commit the running image was built from (set by docker/Dockerfile; `skillmix version`)",
    "unset outside the image",
    "read only",
)
MOCK_API_KEY = EnvVar(
    "SKILLMIX_MOCK_API_KEY",
    "the key `skillmix mock-server` requires as 'Authorization: Bearer KEY' on /v1",
    "none (no key required)",
    "--api-key > SKILLMIX_MOCK_API_KEY",
)
DUMMY_API_KEY = EnvVar(
    "SKILLMIX_DUMMY_API_KEY",
    "the API key sent to backends without a key variable (mock, vllm without api_key_env)",
    "EMPTY",
    "api_key_env in the experiment (then that variable is required) > SKILLMIX_DUMMY_API_KEY",
)
S3_ENDPOINT_URL = EnvVar(
    "SKILLMIX_S3_ENDPOINT_URL",
    "a non-AWS S3 endpoint (MinIO, Ceph...) for s3:// stores",
    "AWS S3",
    "SKILLMIX_S3_ENDPOINT_URL > AWS_ENDPOINT_URL_S3 > AWS_ENDPOINT_URL > AWS; in pods the chart"
    " sets it from the profile's s3.endpoint_url",
)
LOCK_SECONDS = EnvVar(
    "SKILLMIX_LOCK_SECONDS",
    "the lease of the run lock (one writer per run), in seconds: the holder renews it every"
    " third of that; a lease not renewed for that long (a killed process) is taken over",
    "60",
    "SKILLMIX_LOCK_SECONDS > 60",
)
VLLM_HEALTH_TIMEOUT = EnvVar(
    "SKILLMIX_VLLM_HEALTH_TIMEOUT",
    "seconds a local `vllm serve` (backend vllm without base_url) may take to answer /health"
    " (download and load the model) before the run fails with its log's last lines",
    "1200",
    "--vllm-health-timeout > SKILLMIX_VLLM_HEALTH_TIMEOUT > 1200",
)

# --- other variables skillmix reads itself ----------------------------------------------------

XDG_CONFIG_HOME = EnvVar(
    "XDG_CONFIG_HOME",
    "the user config dir searched for skillmix/skillmix.yaml",
    "~/.config",
    "SKILLMIX_CONFIG > ./skillmix.yaml > $XDG_CONFIG_HOME/skillmix/skillmix.yaml",
)
OPENAI_API_KEY = EnvVar(
    "OPENAI_API_KEY",
    "the API key of `openai` backends (any other name: set api_key_env)",
    "none (required by openai backends)",
    "api_key_env in the experiment > OPENAI_API_KEY for backend openai",
)
JOB_COMPLETION_INDEX = EnvVar(
    "JOB_COMPLETION_INDEX",
    "the shard of `skillmix task generate` (set by Kubernetes in Indexed Jobs)",
    "0",
    "--shard > JOB_COMPLETION_INDEX > 0",
)
POD_NAME = EnvVar(
    "SKILLMIX_POD_NAME",
    "the pod's name (set by the chart through the downward API): a `skillmix task` client"
    " uploads its own log to the run's logs/pods/<pod name>.log at exit",
    "none (no upload)",
    "SKILLMIX_POD_NAME",
)
AWS_ENDPOINT_URL_S3 = EnvVar(
    "AWS_ENDPOINT_URL_S3",
    "the S3 endpoint when SKILLMIX_S3_ENDPOINT_URL is unset",
    "AWS S3",
    "SKILLMIX_S3_ENDPOINT_URL > AWS_ENDPOINT_URL_S3 > AWS_ENDPOINT_URL",
)
AWS_ENDPOINT_URL = EnvVar(
    "AWS_ENDPOINT_URL",
    "the S3 endpoint when neither SKILLMIX_S3_ENDPOINT_URL nor AWS_ENDPOINT_URL_S3 is set",
    "AWS S3",
    "SKILLMIX_S3_ENDPOINT_URL > AWS_ENDPOINT_URL_S3 > AWS_ENDPOINT_URL",
)
AWS_MAX_ATTEMPTS = EnvVar(
    "AWS_MAX_ATTEMPTS",
    "attempts per S3 request (botocore 'standard' retries); not a number: the default",
    "5",
    "AWS_MAX_ATTEMPTS > 5",
)

# --- read by libraries, listed so that one table says everything -------------------------------

AWS_ACCESS_KEY_ID = EnvVar(
    "AWS_ACCESS_KEY_ID",
    "S3 credentials (the usual AWS chain); in pods from the profile's s3.credentials_secret",
    "the AWS chain (profile, instance or pod role)",
    "the AWS chain: environment > AWS_PROFILE/shared files > instance or pod role",
    read_by="boto3",
)
AWS_SECRET_ACCESS_KEY = EnvVar(
    "AWS_SECRET_ACCESS_KEY",
    "S3 credentials, with AWS_ACCESS_KEY_ID",
    "the AWS chain (profile, instance or pod role)",
    "the AWS chain: environment > AWS_PROFILE/shared files > instance or pod role",
    read_by="boto3",
)
AWS_DEFAULT_REGION = EnvVar(
    "AWS_DEFAULT_REGION",
    "the S3 region; in pods from the profile's s3.region",
    "the AWS config file's region",
    "AWS_DEFAULT_REGION > the AWS config file",
    read_by="boto3",
)
AWS_PROFILE = EnvVar(
    "AWS_PROFILE",
    "the named AWS profile whose credentials and region S3 stores use",
    "default",
    "credentials in the environment > AWS_PROFILE",
    read_by="boto3",
)
KUBECONFIG = EnvVar(
    "KUBECONFIG",
    "the kubeconfig file(s) of the Kubernetes executor",
    "~/.kube/config",
    "the profile's `kubeconfig:` > KUBECONFIG > ~/.kube/config",
    read_by="kubernetes client",
)

VARIABLES: tuple[EnvVar, ...] = (
    CONFIG,
    CLUSTER,
    HELM,
    RUN,
    DEBUG,
    REVISION,
    MOCK_API_KEY,
    DUMMY_API_KEY,
    S3_ENDPOINT_URL,
    LOCK_SECONDS,
    VLLM_HEALTH_TIMEOUT,
    XDG_CONFIG_HOME,
    OPENAI_API_KEY,
    JOB_COMPLETION_INDEX,
    POD_NAME,
    AWS_ENDPOINT_URL_S3,
    AWS_ENDPOINT_URL,
    AWS_MAX_ATTEMPTS,
    AWS_ACCESS_KEY_ID,
    AWS_SECRET_ACCESS_KEY,
    AWS_DEFAULT_REGION,
    AWS_PROFILE,
    KUBECONFIG,
)

S3_ENDPOINT_VARIABLES: tuple[EnvVar, ...] = (S3_ENDPOINT_URL, AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL)
DEFAULT_DUMMY_API_KEY = "EMPTY"


# --- readers -----------------------------------------------------------------------------------


def profile_file() -> Path | None:
    """``$SKILLMIX_CONFIG`` when set and not empty."""
    value = CONFIG.raw()
    return Path(value) if value else None


def config_home() -> Path:
    """``$XDG_CONFIG_HOME``, else ``~/.config``."""
    return Path(XDG_CONFIG_HOME.raw() or Path.home() / ".config")


def helm_binary() -> str | None:
    """``$SKILLMIX_HELM`` when set and not empty."""
    return HELM.raw() or None


def debug() -> bool:
    """``$SKILLMIX_DEBUG`` set to anything but empty, ``0`` or ``false``."""
    return (DEBUG.raw() or "") not in ("", "0", "false")


def completion_index() -> int:
    """``$JOB_COMPLETION_INDEX`` (0 when unset); ValueError, naming the variable, when it is
    not a non-negative integer (Kubernetes sets it in Indexed Jobs)."""
    raw = os.environ.get(JOB_COMPLETION_INDEX.name, "0").strip()
    if not raw.isdigit():
        raise ValueError(f"{JOB_COMPLETION_INDEX.name}={raw!r}: expected a non-negative integer")
    return int(raw)


def pod_name() -> str | None:
    """``$SKILLMIX_POD_NAME`` when set and not empty (in a pod)."""
    return POD_NAME.raw() or None


def dummy_api_key() -> str:
    """The key sent to backends that need none: ``$SKILLMIX_DUMMY_API_KEY`` or ``EMPTY``."""
    return os.environ.get(DUMMY_API_KEY.name, DEFAULT_DUMMY_API_KEY)


def api_key(variable: str) -> str | None:
    """The value of a backend's key variable (``api_key_env``, default ``OPENAI_API_KEY``)."""
    return os.environ.get(variable)


def s3_endpoint() -> str | None:
    """The first non-empty of the S3 endpoint variables, stripped."""
    for variable in S3_ENDPOINT_VARIABLES:
        value = (variable.raw() or "").strip()
        if value:
            return value
    return None


def aws_max_attempts(default: int) -> int:
    """``$AWS_MAX_ATTEMPTS`` as a number, else ``default``."""
    try:
        return int(os.environ.get(AWS_MAX_ATTEMPTS.name, default))
    except ValueError:
        return default


MAX_LOCK_SECONDS = 7 * 24 * 3600.0  # a lease longer than a week would block a run for good


def lock_seconds(default: float) -> float:
    """``$SKILLMIX_LOCK_SECONDS`` (``default`` when unset or empty); ValueError when it is not
    a number of seconds in (0, MAX_LOCK_SECONDS]."""
    raw = (LOCK_SECONDS.raw() or "").strip()
    if not raw:
        return default
    value = float(raw)
    if not 0 < value <= MAX_LOCK_SECONDS:  # also refuses nan and inf
        raise ValueError(raw)
    return value
