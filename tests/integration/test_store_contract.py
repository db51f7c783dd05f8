"""One contract for every ArtifactStore (LocalStore and S3Store over a real moto server), and
the RunStore write protocol on top of both."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

import pytest

from skillmix.errors import RunFailedError, SkillmixError
from skillmix.records import GenerationRecord, Turn
from skillmix.store.base import (
    ArtifactStore,
    KeyExists,
    KeyNotFound,
    StoreError,
    join_key,
)
from skillmix.store.local import LocalStore
from skillmix.store.runs import MANIFEST, DamagedUnit, RunStore, generation_prefix
from skillmix.store.s3 import S3Store
from skillmix.store.uri import open_store
from tests.fixtures_s3 import S3_TEST_ACCESS_KEY, S3_TEST_SECRET, create_bucket, s3_test_env

# The moto_server and s3_env fixtures (harmless if tests/conftest.py registers them too).

UNREACHABLE = "http://127.0.0.1:9"  # discard port: connection refused at once


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    if request.param == "local":
        return LocalStore(tmp_path / "store")
    uri = request.getfixturevalue("s3_env")
    return S3Store.from_uri(uri)


def one_line(exc: SkillmixError) -> None:
    assert "\n" not in str(exc)
    assert "\n" not in exc.one_line()


# ---------------------------------------------------------------------------------------------
# The ArtifactStore contract
# ---------------------------------------------------------------------------------------------


def test_store_is_an_artifact_store(store: ArtifactStore) -> None:
    assert isinstance(store, ArtifactStore)
    store.check()


@pytest.mark.parametrize("data", [b"", b"hello\n", bytes(range(256)), os.urandom(1 << 20)], ids=len)
def test_round_trip(store: ArtifactStore, data: bytes) -> None:
    store.write_bytes("x/y/blob.bin", data)
    assert store.read_bytes("x/y/blob.bin") == data
    assert store.exists("x/y/blob.bin")


def test_overwrite_without_if_absent(store: ArtifactStore) -> None:
    store.write_bytes("k", b"one")
    store.write_bytes("k", b"two")
    assert store.read_bytes("k") == b"two"


def test_if_absent_creates_then_refuses(store: ArtifactStore) -> None:
    store.write_bytes("m/_SUCCESS", b"first", if_absent=True)
    with pytest.raises(KeyExists) as info:
        store.write_bytes("m/_SUCCESS", b"second", if_absent=True)
    assert isinstance(info.value, StoreError) and isinstance(info.value, RunFailedError)
    one_line(info.value)
    assert store.read_bytes("m/_SUCCESS") == b"first"


def test_concurrent_if_absent_writers_exactly_one_wins(store: ArtifactStore) -> None:
    writers = 8
    barrier = threading.Barrier(writers)
    won: list[int] = []
    lost: list[int] = []
    other: list[BaseException] = []

    def write(i: int) -> None:
        barrier.wait()
        try:
            store.write_bytes("race/_SUCCESS", f"writer {i}".encode(), if_absent=True)
            won.append(i)
        except KeyExists:
            lost.append(i)
        except BaseException as exc:
            other.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not other
    assert len(won) == 1, won
    assert len(lost) == writers - 1
    assert store.read_bytes("race/_SUCCESS") == f"writer {won[0]}".encode()


def test_missing_key(store: ArtifactStore) -> None:
    with pytest.raises(KeyNotFound) as info:
        store.read_bytes("nope/missing.json")
    one_line(info.value)
    assert not store.exists("nope/missing.json")


def test_exists_is_about_keys_not_folders(store: ArtifactStore) -> None:
    store.write_bytes("a/b/c", b"1")
    assert store.exists("a/b/c")
    assert not store.exists("a/b")
    assert not store.exists("a/b/c/d")


KEYS = ["a/b/1.jsonl", "a/b/2/x", "a/bc/3", "a/b.txt", "z", "a/b/0"]


def write_keys(store: ArtifactStore, keys: list[str] = KEYS) -> None:
    for key in keys:
        store.write_bytes(key, key.encode())


def test_list_keys(store: ArtifactStore) -> None:
    assert store.list_keys() == []
    write_keys(store)
    assert store.list_keys() == sorted(KEYS)
    # a prefix is a folder: "a/b" matches neither "a/bc/..." nor "a/b.txt"
    assert store.list_keys("a/b") == ["a/b/0", "a/b/1.jsonl", "a/b/2/x"]
    assert store.list_keys("a") == ["a/b.txt", "a/b/0", "a/b/1.jsonl", "a/b/2/x", "a/bc/3"]
    assert store.list_keys("a/b/2") == ["a/b/2/x"]
    assert store.list_keys("a/b/1.jsonl") == []  # a key, not a folder
    assert store.list_keys("missing") == []
    assert store.list_keys("a/bc") == ["a/bc/3"]


def test_child_sees_only_its_subtree(store: ArtifactStore) -> None:
    write_keys(store)
    child = store.child("a/b")
    assert child.uri == f"{store.uri}/a/b"
    assert child.list_keys() == ["0", "1.jsonl", "2/x"]
    assert child.read_bytes("2/x") == b"a/b/2/x"
    assert not child.exists("3")
    child.write_bytes("new", b"n", if_absent=True)
    assert store.read_bytes("a/b/new") == b"n"
    grandchild = child.child("2")
    assert grandchild.uri == f"{store.uri}/a/b/2"
    assert grandchild.list_keys() == ["x"]
    assert store.child("a").child("b").list_keys() == child.list_keys()
    with pytest.raises(KeyNotFound):
        child.read_bytes("a/bc/3")


def test_delete_prefix(store: ArtifactStore) -> None:
    write_keys(store)
    assert store.delete_prefix("a/b") == 3
    assert store.list_keys() == ["a/b.txt", "a/bc/3", "z"]
    assert store.delete_prefix("a/b") == 0
    assert store.delete_prefix("missing/folder") == 0
    assert store.delete_prefix("z") == 1  # a single key
    assert not store.exists("z")
    assert store.child("a").delete_prefix("") == 2
    assert store.list_keys() == []


@pytest.mark.parametrize("key", ["../x", "/abs", "a//b", "a/./b", "a/", ""])
def test_invalid_keys_are_rejected(store: ArtifactStore, key: str) -> None:
    def calls():
        yield lambda: store.read_bytes(key)
        yield lambda: store.write_bytes(key, b"x")
        yield lambda: store.write_bytes(key, b"x", if_absent=True)
        yield lambda: store.exists(key)
        if key:  # "" means the root for list_keys, delete_prefix
            yield lambda: store.list_keys(key)
            yield lambda: store.delete_prefix(key)
        yield lambda: store.child(key)

    for call in calls():
        with pytest.raises(SkillmixError) as info:
            call()
        assert not isinstance(info.value, RunFailedError)  # bad input: exit code 2
        assert info.value.exit_code == 2
    assert store.list_keys() == []


# ---------------------------------------------------------------------------------------------
# The RunStore write protocol on both stores
# ---------------------------------------------------------------------------------------------


def record(i: int, student: str = "tiny") -> GenerationRecord:
    return GenerationRecord(
        student=student,
        model="tiny-model",
        k=2,
        generation_round=1,
        index=i,
        topic="gardening",
        skills=["metaphor", "red herring"],
        prompt_version="v1",
        turns=[Turn(user=f"prompt {i}", assistant=f"Answer: text {i} ✓")],
        answer=f"text {i} ✓",
    )


class RecordingStore:
    """Delegates to a store and remembers the order of writes."""

    def __init__(self, inner: ArtifactStore) -> None:
        self.inner = inner
        self.writes: list[str] = []

    @property
    def uri(self) -> str:
        return self.inner.uri

    def child(self, prefix: str) -> ArtifactStore:
        return self.inner.child(prefix)

    def read_bytes(self, key: str) -> bytes:
        return self.inner.read_bytes(key)

    def write_bytes(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        self.inner.write_bytes(key, data, if_absent=if_absent)
        self.writes.append(key)

    def exists(self, key: str) -> bool:
        return self.inner.exists(key)

    def list_keys(self, prefix: str = "") -> list[str]:
        return self.inner.list_keys(prefix)

    def delete_prefix(self, prefix: str) -> int:
        return self.inner.delete_prefix(prefix)

    def check(self) -> None:
        self.inner.check()


def test_run_store_protocol(store: ArtifactStore) -> None:
    recording = RecordingStore(store.child("run-1"))
    run = RunStore(recording)
    prefix = generation_prefix("tiny", 2, 1)
    records = [record(i) for i in range(7)]
    assert run.is_empty()

    writer = run.writer(prefix, part_size=3, flush_seconds=3600)
    for r in records:
        writer.add(r)
    assert [p.records for p in writer.written] == [3, 3]  # flushed by size
    writer.flush()
    assert writer.flush() is None  # nothing buffered
    assert [p.records for p in writer.written] == [3, 3, 1]
    names = [p.key for p in writer.written]
    assert len(set(names)) == 3 and all(n.startswith("part-") for n in names)
    assert recording.list_keys(prefix) == sorted(join_key(prefix, n) for n in names)

    # a crashed writer's parts: visible to resume, not to readers of finished work
    assert run.finished_records(prefix, GenerationRecord) is None
    unfinished = run.unfinished_records(prefix, GenerationRecord)
    assert sorted(unfinished, key=lambda r: r.index) == records

    manifest = run.write_manifest(prefix, writer.written)
    assert manifest.records == 7
    assert recording.writes[-1] == join_key(prefix, MANIFEST)  # written last
    assert set(recording.writes[:-1]) == {join_key(prefix, n) for n in names}
    assert run.finished_records(prefix, GenerationRecord) == records
    assert run.manifest_prefixes("generations") == [prefix]
    assert run.generation_records() == records

    with pytest.raises(RunFailedError, match="another writer"):
        run.write_manifest(prefix, writer.written[:1])
    assert run.manifest(prefix) == manifest  # the first manifest stands

    # a stray part written after the manifest is not trusted by readers
    stray = join_key(prefix, "part-99999999T999999999999-stray000.jsonl")
    recording.write_bytes(stray, record(99).model_dump_json().encode() + b"\n")
    assert run.finished_records(prefix, GenerationRecord) == records
    assert len(run.unfinished_records(prefix, GenerationRecord)) == 8


def test_run_store_checks_parts_and_repairs_a_damaged_unit(store: ArtifactStore) -> None:
    run = RunStore(store.child("run-2"))
    prefix = generation_prefix("tiny", 2, 1)
    writer = run.writer(prefix, part_size=2, flush_seconds=3600)
    for i in range(4):
        writer.add(record(i))
    good, bad = writer.written
    run.write_manifest(prefix, writer.written)
    assert run.repair_unit(prefix, GenerationRecord) == []  # sound: nothing to do
    key = join_key(prefix, bad.key)
    store.child("run-2").write_bytes(key, record(2).model_dump_json().encode() + b"\n")
    with pytest.raises(DamagedUnit, match=f"{prefix}: damaged unit: part {bad.key} .*sha256"):
        run.finished_records(prefix, GenerationRecord)
    with pytest.raises(DamagedUnit, match="evaluate --resume"):
        run.generation_records()

    notes = run.repair_unit(prefix, GenerationRecord)
    assert len(notes) == 1 and bad.key in notes[0]
    assert run.manifest(prefix) is None  # unfinished again: resumes from the good part
    assert [p.key for p in run.part_infos(prefix)] == [good.key]
    aside = run.store.list_keys(join_key(prefix, "_damaged"))
    assert sorted(k.rsplit("/", 1)[1].split(".")[0] for k in aside) == sorted(
        [bad.key.split(".")[0], MANIFEST]
    )
    assert run.unfinished_records(prefix, GenerationRecord) == [record(0), record(1)]

    # unreadable parts of an unfinished unit are set aside too; a garbage manifest as well
    store.child("run-2").write_bytes(join_key(prefix, "part-9-cut.jsonl"), b'{"schema_ver')
    store.child("run-2").write_bytes(join_key(prefix, MANIFEST), b"")
    notes = run.repair_unit(prefix, GenerationRecord)
    assert len(notes) == 2 and "not a valid manifest" in notes[0] and "part-9-cut" in notes[1]
    assert [p.key for p in run.part_infos(prefix)] == [good.key]
    assert run.repair_unit(prefix, GenerationRecord) == []


def test_run_store_part_keys_unique_across_writers(store: ArtifactStore) -> None:
    run = RunStore(store)
    prefix = generation_prefix("tiny", 3, 2)
    writers = [run.writer(prefix, part_size=1) for _ in range(4)]
    for i, w in enumerate(writers):
        w.add(record(i))
        w.add(record(i + 10))
    keys = [p.key for w in writers for p in w.written]
    assert len(keys) == 8 == len(set(keys))
    assert len(run.part_infos(prefix)) == 8


def test_run_json(store: ArtifactStore) -> None:
    run = RunStore(store.child("run-2"))
    assert run.read_run_json() is None
    run.write_run_json({"name": "demo", "seed": 1, "text": "ünïcode"})
    assert run.read_run_json() == {"name": "demo", "seed": 1, "text": "ünïcode"}
    assert not run.is_empty()
    with pytest.raises(KeyExists):
        run.write_run_json({"name": "other"})
    assert run.read_run_json() == {"name": "demo", "seed": 1, "text": "ünïcode"}
    run.write_run_json({"name": "other"}, overwrite=True)
    assert run.read_run_json() == {"name": "other"}
    store.write_bytes("run-2/run.json", b"{not json")
    with pytest.raises(RunFailedError, match="corrupt JSON"):
        run.read_run_json()


# ---------------------------------------------------------------------------------------------
# S3 specifics
# ---------------------------------------------------------------------------------------------


def test_s3_uri_parsing() -> None:
    assert S3Store.from_uri("s3://bucket").uri == "s3://bucket"
    assert S3Store.from_uri("s3://bucket/").uri == "s3://bucket"
    store = S3Store.from_uri("s3://bucket/some/prefix/")
    assert (store.bucket, store.prefix, store.uri) == ("bucket", "some/prefix", store.uri)
    assert store.uri == "s3://bucket/some/prefix"
    assert repr(store) == "S3Store('s3://bucket/some/prefix')"
    for bad in ("s3://", "s3:///prefix", "s3://bucket/a//b", "s3://bucket/../x"):
        with pytest.raises(SkillmixError) as info:
            S3Store.from_uri(bad)
        assert not isinstance(info.value, RunFailedError)


def test_open_s3_store_needs_no_network(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    s3_test_env(monkeypatch, UNREACHABLE, tmp_path)

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("network used")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    store = open_store("s3://some-bucket/runs")
    assert isinstance(store, S3Store)
    assert store.uri == "s3://some-bucket/runs"
    assert store.endpoint_url == UNREACHABLE
    assert store.child("run-1").uri == "s3://some-bucket/runs/run-1"


def test_store_base_does_not_import_boto3() -> None:
    code = (
        "import sys\n"
        "from skillmix.store.uri import open_store\n"
        "import skillmix.store.s3\n"
        "s = open_store('s3://bucket/prefix').child('x')\n"
        "assert s.uri == 's3://bucket/prefix/x'\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('boto3', 'botocore')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"


def test_s3_missing_bucket(s3_env: str) -> None:
    with pytest.raises(SkillmixError) as info:
        open_store("s3://skillmix-missing-bucket/x").check()
    err = info.value
    assert not isinstance(err, RunFailedError)
    assert err.message == "s3://skillmix-missing-bucket: bucket does not exist"
    assert "skillmix-missing-bucket" in err.one_line()
    one_line(err)
    # data operations on a missing bucket: a one-line StoreError, never KeyNotFound
    with pytest.raises(StoreError) as data_err:
        open_store("s3://skillmix-missing-bucket/x").read_bytes("run.json")
    assert not isinstance(data_err.value, KeyNotFound)
    assert "NoSuchBucket" in str(data_err.value)
    one_line(data_err.value)


def test_s3_unreachable_endpoint(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    s3_test_env(monkeypatch, UNREACHABLE, tmp_path)
    store = S3Store.from_uri("s3://bucket/x", max_attempts=1, connect_timeout=2, read_timeout=2)
    start = time.monotonic()
    with pytest.raises(SkillmixError) as info:
        store.check()
    assert time.monotonic() - start < 5
    err = info.value
    assert not isinstance(err, RunFailedError)
    one_line(err)
    assert "s3://bucket" in err.message and UNREACHABLE in err.message
    assert "SKILLMIX_S3_ENDPOINT_URL" in err.one_line()
    with pytest.raises(StoreError) as data_err:
        store.read_bytes("run.json")
    one_line(data_err.value)
    assert "s3://bucket/x/run.json" in str(data_err.value)
    # AWS_MAX_ATTEMPTS is honoured when no max_attempts is given
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    start = time.monotonic()
    with pytest.raises(SkillmixError):
        open_store("s3://bucket/x").check()
    assert time.monotonic() - start < 5


def test_s3_errors_never_show_secrets(
    s3_env: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    errors: list[BaseException] = []
    attempts = [
        lambda: open_store("s3://skillmix-missing-bucket/x").check(),
        lambda: open_store("s3://skillmix-missing-bucket/x").read_bytes("k"),
        lambda: open_store("s3://skillmix-missing-bucket/x").write_bytes("k", b""),
        lambda: open_store("s3://skillmix-missing-bucket/x").list_keys(),
        lambda: open_store(s3_env).read_bytes("missing"),
        lambda: S3Store.from_uri(s3_env, endpoint_url=UNREACHABLE, max_attempts=1).check(),
        lambda: S3Store.from_uri(s3_env, endpoint_url=UNREACHABLE, max_attempts=1).exists("k"),
    ]
    for attempt in attempts:
        with pytest.raises(SkillmixError) as info:
            attempt()
        errors.append(info.value)
    for err in errors:
        text = "".join(traceback.format_exception(err)) + repr(err)
        if isinstance(err, SkillmixError):
            text += err.one_line()
        assert S3_TEST_SECRET not in text
        assert f"={S3_TEST_ACCESS_KEY}" not in text


def test_s3_if_absent_uses_a_conditional_put(s3_env: str) -> None:
    """moto enforces If-None-Match: *; the store maps the 412 to KeyExists."""
    store = S3Store.from_uri(s3_env)
    store.write_bytes("only-once", b"1", if_absent=True)
    with pytest.raises(KeyExists, match="already exists"):
        store.write_bytes("only-once", b"2", if_absent=True)
    assert store._client.conditional_puts


def test_s3_paging_batching_and_folder_markers(
    s3_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import skillmix.store.s3 as s3_module

    monkeypatch.setattr(s3_module, "LIST_PAGE_SIZE", 2)
    monkeypatch.setattr(s3_module, "DELETE_BATCH", 3)
    store = S3Store.from_uri(s3_env)
    keys = [f"p/{i:02d}" for i in range(8)]
    for key in keys:
        store.write_bytes(key, b"x")
    # a console-made "folder" object is not a key
    store._client.get().put_object(Bucket=store.bucket, Key=f"{store.prefix}/p/", Body=b"")
    assert store.list_keys("p") == keys
    assert store.list_keys() == keys
    assert store.delete_prefix("p") == 9  # the marker goes too
    assert store.list_keys() == []


def test_s3_child_shares_one_client(s3_env: str) -> None:
    store = S3Store.from_uri(s3_env)
    child = store.child("a").child("b")
    assert child._client is store._client
    child.write_bytes("k", b"v")
    assert store.read_bytes("a/b/k") == b"v"


def test_s3_store_in_a_fresh_bucket_without_prefix(s3_env: str, moto_server: str) -> None:
    bucket = create_bucket(moto_server)
    store = open_store(f"s3://{bucket}")
    store.check()
    store.write_bytes("run-1/run.json", json.dumps({"a": 1}).encode())
    assert store.list_keys() == ["run-1/run.json"]
    assert store.child("run-1").list_keys() == ["run.json"]
    assert store.delete_prefix("") == 1
