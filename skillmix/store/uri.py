"""Which store a URI names. Kept apart from base.py so that the interface does not import its
implementations."""

from __future__ import annotations

from skillmix.errors import SkillmixError
from skillmix.store.base import ArtifactStore
from skillmix.store.local import LocalStore


def open_store(uri: str) -> ArtifactStore:
    """A store for ``uri``: ``s3://bucket/prefix`` or a local directory path (``file://`` ok)."""
    if uri.startswith("s3://"):
        from skillmix.store.s3 import S3Store  # deferred: boto3 only for s3:// stores

        return S3Store.from_uri(uri)
    if "://" in uri and not uri.startswith("file://"):
        scheme = uri.split("://", 1)[0]
        raise SkillmixError(
            f"unsupported store URI scheme {scheme!r} in {uri!r}",
            hint="use a local directory or s3://bucket/prefix",
        )

    return LocalStore(uri.removeprefix("file://"))
