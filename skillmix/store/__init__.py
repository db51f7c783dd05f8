"""Artifact stores (a local directory or S3) and the run-folder layout on top of them."""

from skillmix.store.base import (
    ArtifactStore,
    KeyExists,
    KeyNotFound,
    StoreError,
    join_key,
    open_store,
)
from skillmix.store.local import LocalStore
from skillmix.store.runs import Manifest, PartWriter, RunStore

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
