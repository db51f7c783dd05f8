"""A content-addressed cache of model replies in the artifact store.

The key hashes everything that determines a reply (model identity, messages, sampling
parameters, n, and which sample this is), so re-running a finished request never calls the
model again, across resumes and across runs that share the same store.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Any

from skillmix.store.base import ArtifactStore, KeyNotFound, StoreError
from skillmix.store.layout import RunLayout

CACHE_PREFIX = RunLayout.CACHE


def cache_key(payload: dict[str, Any]) -> str:
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return hashlib.sha256(blob).hexdigest()


class ResponseCache:
    def __init__(self, store: ArtifactStore, prefix: str = CACHE_PREFIX) -> None:
        self.store = store
        self.prefix = prefix

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key[:2]}/{key}.json"

    def get_sync(self, key: str) -> dict[str, Any] | None:
        try:
            data = json.loads(self.store.read_bytes(self._key(key)))
        except KeyNotFound:
            return None
        except (ValueError, StoreError):  # JSONDecodeError, UnicodeDecodeError (bad bytes)
            return None  # a damaged entry is a miss, never a failure
        return data if isinstance(data, dict) else None

    def put_sync(self, key: str, value: dict[str, Any]) -> None:
        self.store.write_bytes(self._key(key), json.dumps(value, ensure_ascii=False).encode())

    async def get(self, key: str) -> dict[str, Any] | None:
        return await asyncio.to_thread(self.get_sync, key)

    async def put(self, key: str, value: dict[str, Any]) -> None:
        await asyncio.to_thread(self.put_sync, key, value)
