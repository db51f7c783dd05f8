"""A store under an S3 prefix (AWS, MinIO, Ceph, moto...), on boto3.

Same semantics as :class:`~skillmix.store.local.LocalStore`: keys are ``/``-separated paths
relative to the store's prefix, a prefix given to ``list_keys``/``delete_prefix`` names a
folder (``a/b`` never matches ``a/bc/...``), and ``if_absent`` writes are create-only through a
conditional put (``If-None-Match: *``), so two writers can never both win.

boto3 is imported lazily and the client is created on first use, so opening a store needs
neither boto3 at import time nor the network. Credentials come only from the usual AWS chain
(environment, profile, instance role); they are never accepted as arguments nor shown in errors.
The endpoint comes from the ``endpoint_url`` argument, ``SKILLMIX_S3_ENDPOINT_URL``,
``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL``, in that order.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from skillmix import settings
from skillmix.errors import SkillmixError
from skillmix.retrying import RetryPolicy, retry
from skillmix.store.base import KeyExists, KeyNotFound, StoreError, check_key, join_key

log = logging.getLogger(__name__)

DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_READ_TIMEOUT = 60.0
DEFAULT_MAX_ATTEMPTS = 5
DELETE_BATCH = 1000  # the DeleteObjects limit
LIST_PAGE_SIZE = 1000  # the ListObjectsV2 maximum
CONFLICT_RETRIES = 4  # 409 ConditionalRequestConflict: another conditional write is in flight
CREDENTIALS_HINT = (
    "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE, or an instance/pod role)"
)


def _error_code(exc: Any) -> tuple[str, int]:
    """(error code, HTTP status) of a botocore ClientError."""
    response = getattr(exc, "response", None) or {}
    code = str(response.get("Error", {}).get("Code", "") or "")
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return code or str(status or "unknown"), status


def _conflict(exc: BaseException) -> bool:
    """409 ConditionalRequestConflict: another conditional write to the key is in flight; AWS
    asks for a retry, which then sees the winner (412) or, if it failed, wins."""
    code, status = _error_code(exc)
    if code == "PreconditionFailed" or status == 412:
        return False
    return code == "ConditionalRequestConflict" or status == 409


# a create-only put that met a conflicting one: again after 0.05, 0.1, 0.2, 0.4 s
CONFLICT_RETRY = RetryPolicy(
    "s3-conditional-put",
    retry_on=_conflict,
    delay=lambda _exc, attempt: 0.05 * 2**attempt,
    attempts=CONFLICT_RETRIES + 1,
)


@dataclass(kw_only=True, eq=False, repr=False)
class _Client:
    """One boto3 client, created on first use and shared by a store and its children."""

    endpoint_url: str | None
    region: str | None
    client: Any  # None until first use (a test may pass its own)
    connect_timeout: float
    read_timeout: float
    max_attempts: int
    conditional_puts: bool = True  # cleared if the endpoint answers 501 to If-None-Match
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def get(self) -> Any:
        if self.client is None:
            with self._lock:
                if self.client is None:
                    self.client = self._create()
        return self.client

    def _create(self) -> Any:
        # deferred: boto3 takes ~0.5 s to import; an S3Store is made for URIs without a call
        import boto3.session
        from botocore.config import Config

        options: dict[str, Any] = {
            "signature_version": "s3v4",
            "request_checksum_calculation": "when_required",
            "response_checksum_validation": "when_required",
            "retries": {"max_attempts": self.max_attempts, "mode": "standard"},
            "connect_timeout": self.connect_timeout,
            "read_timeout": self.read_timeout,
        }
        if self.endpoint_url:
            # MinIO, Ceph, moto...: no virtual-host bucket DNS names.
            options["s3"] = {"addressing_style": "path"}
        # A session per store: boto3's default session is not thread-safe to set up.
        session = boto3.session.Session()
        try:
            return session.client(
                "s3",
                endpoint_url=self.endpoint_url,
                region_name=self.region,
                config=Config(**options),
            )
        except ValueError as exc:  # e.g. "Invalid endpoint: ..."
            raise SkillmixError(
                f"invalid S3 endpoint {self.endpoint_url!r}: {exc}",
                hint="fix SKILLMIX_S3_ENDPOINT_URL (e.g. http://minio:9000)",
            ) from None

    def describe_endpoint(self) -> str:
        if self.endpoint_url:
            return self.endpoint_url
        if self.client is not None:
            return str(self.client.meta.endpoint_url)
        return "AWS S3"


class S3Store:
    """An :class:`~skillmix.store.base.ArtifactStore` under ``s3://bucket/prefix``."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        client: Any = None,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
        max_attempts: int | None = None,
    ) -> None:
        if not bucket or "/" in bucket or bucket != bucket.strip():
            raise SkillmixError(f"invalid S3 bucket name {bucket!r}", hint="use s3://bucket/prefix")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        if self.prefix:
            check_key(self.prefix)
        if max_attempts is None:
            max_attempts = settings.aws_max_attempts(DEFAULT_MAX_ATTEMPTS)
        self._client = _Client(
            endpoint_url=endpoint_url or settings.s3_endpoint(),
            region=region,
            client=client,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            max_attempts=max(1, max_attempts),
        )

    @classmethod
    def from_uri(cls, uri: str, **kwargs: Any) -> S3Store:
        """``s3://bucket`` or ``s3://bucket/some/prefix``; ``kwargs`` go to the constructor."""
        if not uri.startswith("s3://"):
            raise SkillmixError(f"not an S3 URI: {uri!r}", hint="use s3://bucket/prefix")
        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        if not bucket:
            raise SkillmixError(f"S3 URI {uri!r} names no bucket", hint="use s3://bucket/prefix")
        return cls(bucket, prefix, **kwargs)

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    @property
    def endpoint_url(self) -> str | None:
        return self._client.endpoint_url

    def __repr__(self) -> str:
        return f"S3Store({self.uri!r})"

    def child(self, prefix: str) -> S3Store:
        new = object.__new__(S3Store)
        new.bucket = self.bucket
        new.prefix = join_key(self.prefix, check_key(prefix))
        new._client = self._client  # one client (and connection pool) for the whole tree
        return new

    # helpers ------------------------------------------------------------------------------
    def _key(self, key: str) -> str:
        return join_key(self.prefix, check_key(key))

    def _folder(self, prefix: str) -> str:
        """The S3 listing prefix for folder ``prefix`` (ends with ``/`` unless the bucket root)."""
        full = join_key(self.prefix, check_key(prefix)) if prefix else self.prefix
        return full + "/" if full else ""

    def _relative(self, full_key: str) -> str:
        return full_key[len(self.prefix) + 1 :] if self.prefix else full_key

    def _fail(self, action: str, key: str | None, exc: Exception) -> StoreError:
        """A one-line StoreError naming the object and the error code (never credentials)."""
        from botocore.exceptions import ClientError, NoCredentialsError  # deferred: see _create

        where = f"s3://{self.bucket}/{self._key(key)}" if key else self.uri
        if isinstance(exc, ClientError):
            code, status = _error_code(exc)
            detail = f"{code} (HTTP {status})" if status and code != str(status) else code
            if status == 403 or code in ("AccessDenied", "InvalidAccessKeyId"):
                detail += "; check the AWS credentials and the bucket policy"
            elif code == "NoSuchBucket":
                detail += "; the bucket does not exist"
        elif isinstance(exc, NoCredentialsError):
            detail = f"no AWS credentials found; {CREDENTIALS_HINT}"
        else:
            detail = f"{type(exc).__name__} talking to {self._client.describe_endpoint()}"
        return StoreError(" ".join(f"{where}: cannot {action}: {detail}".split()))

    # the protocol -------------------------------------------------------------------------
    def read_bytes(self, key: str) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError  # deferred: see _create

        full = self._key(key)
        try:
            response = self._client.get().get_object(Bucket=self.bucket, Key=full)
            return bytes(response["Body"].read())
        except ClientError as exc:
            code, status = _error_code(exc)
            if code in ("NoSuchKey", "404") or (status == 404 and code != "NoSuchBucket"):
                raise KeyNotFound(f"{self.uri}: no such key {key!r}") from None
            raise self._fail("read", key, exc) from None
        except BotoCoreError as exc:
            raise self._fail("read", key, exc) from None

    def write_bytes(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        from botocore.exceptions import BotoCoreError, ClientError  # deferred: see _create

        full = self._key(key)
        client = self._client.get()
        try:
            if not if_absent:
                client.put_object(Bucket=self.bucket, Key=full, Body=data)
                return
            if not self._client.conditional_puts:
                self._put_if_absent_unsafe(client, key, full, data)
                return
            try:
                retry(
                    lambda: client.put_object(
                        Bucket=self.bucket, Key=full, Body=data, IfNoneMatch="*"
                    ),
                    CONFLICT_RETRY,
                    sleep=time.sleep,
                )
                return
            except ClientError as exc:
                code, status = _error_code(exc)
                if code == "PreconditionFailed" or status == 412:
                    raise KeyExists(f"s3://{self.bucket}/{full}: already exists") from None
                if _conflict(exc):  # still in flight after CONFLICT_RETRIES retries
                    raise KeyExists(
                        f"s3://{self.bucket}/{full}: already being written by another writer"
                    ) from None
                if code == "NotImplemented" or status == 501:
                    log.warning(
                        "%s does not support conditional puts (If-None-Match); "
                        "create-only writes fall back to check-then-put",
                        self._client.describe_endpoint(),
                    )
                    self._client.conditional_puts = False
                    self._put_if_absent_unsafe(client, key, full, data)
                    return
                raise
        except (KeyExists, KeyNotFound):
            raise
        except (ClientError, BotoCoreError) as exc:
            raise self._fail("write", key, exc) from None

    def _put_if_absent_unsafe(self, client: Any, key: str, full: str, data: bytes) -> None:
        """Create-only write for endpoints without conditional puts (racy, best effort)."""
        if self.exists(key):
            raise KeyExists(f"s3://{self.bucket}/{full}: already exists")
        client.put_object(Bucket=self.bucket, Key=full, Body=data)

    def exists(self, key: str) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError  # deferred: see _create

        full = self._key(key)
        try:
            self._client.get().head_object(Bucket=self.bucket, Key=full)
            return True
        except ClientError as exc:
            code, status = _error_code(exc)
            if status == 404 and code != "NoSuchBucket":
                return False
            raise self._fail("check", key, exc) from None
        except BotoCoreError as exc:
            raise self._fail("check", key, exc) from None

    def _list_full(self, list_prefix: str) -> list[str]:
        """Full object keys starting with ``list_prefix`` (raw S3 prefix semantics)."""
        from botocore.exceptions import BotoCoreError, ClientError  # deferred: see _create

        keys: list[str] = []
        try:
            paginator = self._client.get().get_paginator("list_objects_v2")
            for page in paginator.paginate(
                Bucket=self.bucket,
                Prefix=list_prefix,
                PaginationConfig={"PageSize": LIST_PAGE_SIZE},
            ):
                keys.extend(obj["Key"] for obj in page.get("Contents", ()))
        except (ClientError, BotoCoreError) as exc:
            raise self._fail("list", None, exc) from None
        return keys

    def list_keys(self, prefix: str = "") -> list[str]:
        keys = []
        for full in self._list_full(self._folder(prefix)):
            if full.endswith("/"):  # a console-made "folder" placeholder, not a key
                continue
            keys.append(self._relative(full))
        return sorted(keys)

    def delete_prefix(self, prefix: str) -> int:
        from botocore.exceptions import BotoCoreError, ClientError  # deferred: see _create

        if prefix:
            # The folder ``prefix/`` and a key named exactly ``prefix`` (as LocalStore does).
            exact = self._key(prefix)
            full_keys = [
                k for k in self._list_full(exact) if k == exact or k.startswith(exact + "/")
            ]
        else:
            full_keys = self._list_full(self._folder(""))
        client = self._client.get()
        deleted = 0
        for start in range(0, len(full_keys), DELETE_BATCH):
            batch = full_keys[start : start + DELETE_BATCH]
            try:
                response = client.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True},
                )
            except ClientError as exc:
                code, status = _error_code(exc)
                if code not in ("MissingContentMD5", "NotImplemented") and status != 501:
                    raise self._fail("delete", prefix or None, exc) from None
                # Endpoints that refuse DeleteObjects' checksum: one request per key.
                try:
                    for k in batch:
                        client.delete_object(Bucket=self.bucket, Key=k)
                except (ClientError, BotoCoreError) as exc2:
                    raise self._fail("delete", prefix or None, exc2) from None
                deleted += len(batch)
                continue
            except BotoCoreError as exc:
                raise self._fail("delete", prefix or None, exc) from None
            errors = response.get("Errors") or []
            if errors:
                first = errors[0]
                raise StoreError(
                    f"s3://{self.bucket}/{first.get('Key', '')}: cannot delete: "
                    f"{first.get('Code', 'error')} ({len(errors)} of {len(batch)} keys failed)"
                )
            deleted += len(batch)
        return deleted

    def check(self) -> None:
        """Raise a one-line SkillmixError naming the bucket and the fix if unusable."""
        from botocore.exceptions import (  # deferred: see _create
            BotoCoreError,
            ClientError,
            ConnectTimeoutError,
            EndpointConnectionError,
            NoCredentialsError,
            ReadTimeoutError,
        )

        bucket = f"s3://{self.bucket}"
        try:
            client = self._client.get()
            client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            code, status = _error_code(exc)
            endpoint = self._client.describe_endpoint()
            if status == 404 or code in ("NoSuchBucket", "404", "NotFound"):
                raise SkillmixError(
                    f"{bucket}: bucket does not exist",
                    hint=f"create it (aws s3 mb {bucket}) or fix the store URI "
                    f"(endpoint: {endpoint})",
                ) from None
            if status == 403 or code in ("AccessDenied", "InvalidAccessKeyId", "403"):
                raise SkillmixError(
                    f"{bucket}: access denied (endpoint {endpoint})",
                    hint="check the AWS credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY "
                    "or AWS_PROFILE) and the bucket policy",
                ) from None
            if status == 301 or code in ("PermanentRedirect", "AuthorizationHeaderMalformed"):
                raise SkillmixError(
                    f"{bucket}: the bucket is in another region (endpoint {endpoint})",
                    hint="set AWS_DEFAULT_REGION to the bucket's region",
                ) from None
            raise SkillmixError(
                f"{bucket}: cannot use the bucket: {code} (HTTP {status}, endpoint {endpoint})",
                hint="check the bucket name, SKILLMIX_S3_ENDPOINT_URL and the credentials",
            ) from None
        except NoCredentialsError:
            raise SkillmixError(
                f"{bucket}: no AWS credentials found", hint=CREDENTIALS_HINT
            ) from None
        except (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError) as exc:
            endpoint = self._client.describe_endpoint()
            raise SkillmixError(
                f"{bucket}: cannot reach the S3 endpoint {endpoint} ({type(exc).__name__})",
                hint="check SKILLMIX_S3_ENDPOINT_URL (or AWS_ENDPOINT_URL) and the network",
            ) from None
        except BotoCoreError as exc:
            endpoint = self._client.describe_endpoint()
            raise SkillmixError(
                f"{bucket}: cannot use the bucket at {endpoint} ({type(exc).__name__})",
                hint="check SKILLMIX_S3_ENDPOINT_URL, AWS_DEFAULT_REGION and the credentials",
            ) from None
