"""Price lookup and the content-addressed response cache."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from skillmix.backends.cache import CACHE_PREFIX, ResponseCache, cache_key
from skillmix.backends.pricing import DEFAULT_PRICES, cost_usd, price_for
from skillmix.store.local import LocalStore

# ---- pricing -------------------------------------------------------------------------------


def test_price_for_known_model() -> None:
    assert price_for("openai", "gpt-4o") == DEFAULT_PRICES["gpt-4o"]
    assert price_for("openai", "gpt-4o-mini") == DEFAULT_PRICES["gpt-4o-mini"]
    assert price_for("openai", "gpt-4") == (30.0, 60.0)


def test_dated_snapshot_uses_base_model() -> None:
    assert price_for("openai", "gpt-4o-2024-08-06") == DEFAULT_PRICES["gpt-4o"]
    # the longest matching base wins: gpt-4o-mini, not gpt-4o or gpt-4
    assert price_for("openai", "gpt-4o-mini-2024-07-18") == DEFAULT_PRICES["gpt-4o-mini"]
    assert price_for("openai", "gpt-4-turbo-2024-04-09") == DEFAULT_PRICES["gpt-4-turbo"]
    assert price_for("openai", "gpt-4.1-nano-2025-04-14") == DEFAULT_PRICES["gpt-4.1-nano"]
    assert price_for("openai", "gpt-4-0613") == DEFAULT_PRICES["gpt-4"]


def test_prefix_without_dash_is_not_a_snapshot() -> None:
    assert price_for("openai", "gpt-4oo") is None
    assert price_for("openai", "gpt-4o2") is None


def test_overrides_win() -> None:
    overrides = {"gpt-4o": (1.0, 2.0), "my-model": (0.5, 0.5)}
    assert price_for("openai", "gpt-4o", overrides) == (1.0, 2.0)
    assert price_for("openai", "my-model", overrides) == (0.5, 0.5)
    # even for self-hosted backends (someone pays for the GPUs)
    assert price_for("vllm", "my-model", overrides) == (0.5, 0.5)
    assert price_for("openai", "gpt-4o-mini", overrides) == DEFAULT_PRICES["gpt-4o-mini"]
    assert price_for("openai", "gpt-4o", {}) == DEFAULT_PRICES["gpt-4o"]


@pytest.mark.parametrize("backend", ["mock", "vllm"])
def test_self_hosted_cost_nothing(backend: str) -> None:
    assert price_for(backend, "gpt-4o") == (0.0, 0.0)
    assert price_for(backend, "Qwen/Qwen2.5-7B-Instruct") == (0.0, 0.0)


def test_unknown_model() -> None:
    assert price_for("openai", "claude-3-opus") is None
    assert price_for("openai", "") is None


def test_cost_usd() -> None:
    assert cost_usd(1_000_000, 0, (2.5, 10.0)) == pytest.approx(2.5)
    assert cost_usd(0, 1_000_000, (2.5, 10.0)) == pytest.approx(10.0)
    assert cost_usd(2000, 500, (2.5, 10.0)) == pytest.approx((2000 * 2.5 + 500 * 10.0) / 1e6)
    assert cost_usd(123, 456, (0.0, 0.0)) == 0.0
    assert cost_usd(10, 10, None) is None


# ---- cache_key -----------------------------------------------------------------------------


def test_cache_key_stable_under_key_order() -> None:
    a = {
        "model": {"backend": "mock", "model": "m", "quality": 0.5},
        "messages": [{"role": "user", "content": "hi"}],
        "params": {"temperature": 0.7, "max_tokens": 10},
        "n": 1,
        "sample": "x",
    }
    b = {
        "sample": "x",
        "n": 1,
        "params": {"max_tokens": 10, "temperature": 0.7},
        "messages": [{"content": "hi", "role": "user"}],
        "model": {"quality": 0.5, "model": "m", "backend": "mock"},
    }
    assert cache_key(a) == cache_key(b)
    assert len(cache_key(a)) == 64
    assert int(cache_key(a), 16) >= 0


def test_cache_key_changes_with_content() -> None:
    base = {"messages": [{"role": "user", "content": "hi"}], "sample": "x", "n": 1}
    assert cache_key(base) != cache_key({**base, "sample": "y"})
    assert cache_key(base) != cache_key({**base, "n": 2})
    assert cache_key(base) != cache_key({**base, "messages": [{"role": "user", "content": "ho"}]})
    # list order matters (messages are a conversation)
    two = {"messages": ["a", "b"]}
    assert cache_key(two) != cache_key({"messages": ["b", "a"]})


def test_cache_key_unicode() -> None:
    assert cache_key({"t": "café ☕"}) == cache_key({"t": "café ☕"})
    assert cache_key({"t": "café"}) != cache_key({"t": "cafe"})


# ---- ResponseCache on a LocalStore -----------------------------------------------------------


VALUE = {
    "texts": ["Answer: Bees hum. ☕", "second"],
    "prompt_tokens": 12,
    "completion_tokens": 34,
    "finish_reasons": ["stop", "length"],
}


def test_round_trip(tmp_path: Path) -> None:
    cache = ResponseCache(LocalStore(tmp_path))
    key = cache_key({"sample": "x"})
    assert cache.get_sync(key) is None
    cache.put_sync(key, VALUE)
    assert cache.get_sync(key) == VALUE
    path = tmp_path / CACHE_PREFIX / key[:2] / f"{key}.json"
    assert path.is_file()
    assert json.loads(path.read_text(encoding="utf-8")) == VALUE
    # a fresh cache object on the same folder sees it (persistence across runs)
    assert ResponseCache(LocalStore(tmp_path)).get_sync(key) == VALUE


def test_round_trip_async(tmp_path: Path) -> None:
    cache = ResponseCache(LocalStore(tmp_path), prefix="elsewhere")
    key = cache_key({"sample": "async"})

    async def main() -> tuple[object, object]:
        before = await cache.get(key)
        await cache.put(key, VALUE)
        return before, await cache.get(key)

    before, after = asyncio.run(main())
    assert before is None and after == VALUE
    assert (tmp_path / "elsewhere" / key[:2] / f"{key}.json").is_file()


def test_overwrite_replaces(tmp_path: Path) -> None:
    cache = ResponseCache(LocalStore(tmp_path))
    key = cache_key({"sample": "x"})
    cache.put_sync(key, VALUE)
    cache.put_sync(key, {**VALUE, "texts": ["new"]})
    assert cache.get_sync(key) == {**VALUE, "texts": ["new"]}


@pytest.mark.parametrize(
    "damage",
    [
        b"",
        b"{not json",
        b'{"texts": ["cut',
        b"[1, 2, 3]",
        b'"a string"',
        b"\xff\xfe",
        b"\x80 not utf-8",
        '{"texts": ["café"]}'.encode()[:-4],  # cut inside a multi-byte character
        b'{"texts": ["caf\xe9"]}',  # latin-1 bytes
    ],
)
def test_damaged_entry_is_a_miss(tmp_path: Path, damage: bytes) -> None:
    cache = ResponseCache(LocalStore(tmp_path))
    key = cache_key({"sample": "damaged"})
    cache.put_sync(key, VALUE)
    path = tmp_path / CACHE_PREFIX / key[:2] / f"{key}.json"
    path.write_bytes(damage)
    assert cache.get_sync(key) is None
    cache.put_sync(key, VALUE)  # and it can be rewritten
    assert cache.get_sync(key) == VALUE


def test_unreadable_entry_is_a_miss(tmp_path: Path) -> None:
    cache = ResponseCache(LocalStore(tmp_path))
    key = cache_key({"sample": "dir"})
    # a directory where the entry should be: the store cannot read it
    (tmp_path / CACHE_PREFIX / key[:2] / f"{key}.json").mkdir(parents=True)
    assert cache.get_sync(key) is None
