"""Artifact stores (a local directory or S3) and the run-folder layout on top of them."""

from skillmix.store.base import (
    ArtifactStore,
    KeyExists,
    KeyNotFound,
    StoreError,
    join_key,
)
from skillmix.store.local import LocalStore
from skillmix.store.runs import Manifest, PartWriter, RunStore
from skillmix.store.uri import open_store

__all__ = [
    "ArtifactStore",
    "KeyExists",
    "KeyNotFound",
    "LocalStore",
    "Manifest",
    "PartWriter",
    "RunStore",
    "StoreError",
    "join_key",
    "open_store",
]
