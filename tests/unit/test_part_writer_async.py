"""PartWriter's async path: records buffer on the event loop, parts are written in a worker
thread, with the sync path's crash-safety (a part every part_size records or flush_seconds)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from skillmix.records import Usage
from skillmix.store.base import StoreError
from skillmix.store.local import LocalStore
from skillmix.store.runs import PartWriter, RunStore


class WatchedStore(LocalStore):
    """A local store that notes which thread each write ran on, and can fail or block."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.threads: list[int] = []
        self.fail = 0
        self.gate: threading.Event | None = None

    def write_bytes(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        self.threads.append(threading.get_ident())
        if self.gate is not None and not self.gate.wait(5):
            raise StoreError("the gate never opened: the write blocked the event loop")
        if self.fail:
            self.fail -= 1
            raise StoreError("disk full")
        super().write_bytes(key, data, if_absent=if_absent)


def record(i: int) -> Usage:
    return Usage(prompt_tokens=i, completion_tokens=0)


def read_back(store: LocalStore, writer: PartWriter) -> list[int]:
    run = RunStore(store)
    keys = [p.key for p in writer.written]
    return sorted(u.prompt_tokens for u in run.read_parts("unit", keys, Usage))


def test_parts_every_part_size_records_written_off_the_loop(tmp_path: Path) -> None:
    store = WatchedStore(tmp_path)
    writer = PartWriter(store, "unit", part_size=3, flush_seconds=3600)

    async def main() -> tuple[int, int]:
        for i in range(7):
            await writer.add_async(record(i))
        before = len(writer.written)
        await writer.flush_async()
        return before, threading.get_ident()

    before, loop_thread = asyncio.run(main())
    assert before == 2  # parts at 3 and 6 records; the 7th waited for the flush
    assert [p.records for p in writer.written] == [3, 3, 1]
    assert store.threads and loop_thread not in store.threads
    assert read_back(store, writer) == list(range(7))
    assert len(RunStore(store).part_infos("unit")) == 3


def test_flush_seconds_writes_a_part_per_add_when_due(tmp_path: Path) -> None:
    store = WatchedStore(tmp_path)
    writer = PartWriter(store, "unit", part_size=100, flush_seconds=0)

    async def main() -> None:
        for i in range(3):
            await writer.add_async(record(i))

    asyncio.run(main())
    assert [p.records for p in writer.written] == [1, 1, 1]


def test_a_slow_write_does_not_block_other_coroutines(tmp_path: Path) -> None:
    store = WatchedStore(tmp_path)
    store.gate = threading.Event()  # the write waits until the event loop opens it
    writer = PartWriter(store, "unit", part_size=1, flush_seconds=3600)

    async def main() -> None:
        async def opener() -> None:
            await asyncio.sleep(0.01)
            store.gate.set()  # type: ignore[union-attr]  # runs only if the loop is free

        await asyncio.gather(writer.add_async(record(1)), opener())

    asyncio.run(main())
    assert [p.records for p in writer.written] == [1]


def test_concurrent_adds_write_every_record_once(tmp_path: Path) -> None:
    store = WatchedStore(tmp_path)
    writer = PartWriter(store, "unit", part_size=4, flush_seconds=3600)

    async def main() -> None:
        async def one(i: int) -> None:
            await asyncio.sleep(0)
            await writer.add_async(record(i))

        await asyncio.gather(*(one(i) for i in range(50)))
        await writer.flush_async()

    asyncio.run(main())
    assert read_back(store, writer) == list(range(50))
    assert sum(p.records for p in writer.written) == 50


def test_a_failed_write_keeps_its_records_for_the_next_flush(tmp_path: Path) -> None:
    store = WatchedStore(tmp_path)
    writer = PartWriter(store, "unit", part_size=2, flush_seconds=3600)
    store.fail = 1

    async def main() -> None:
        await writer.add_async(record(0))
        with pytest.raises(StoreError, match="disk full"):
            await writer.add_async(record(1))
        assert writer.written == []
        await writer.flush_async()

    asyncio.run(main())
    assert read_back(store, writer) == [0, 1]


def test_the_sync_path_still_writes_in_place(tmp_path: Path) -> None:
    store = WatchedStore(tmp_path)
    writer = PartWriter(store, "unit", part_size=2, flush_seconds=3600)
    for i in range(3):
        writer.add(record(i))
    assert writer.flush() is not None and writer.flush() is None
    assert store.threads == [threading.get_ident()] * 2
    assert read_back(store, writer) == [0, 1, 2]
