"""The numpy hash index and the vectorised CRC against plain Python models."""

from __future__ import annotations

import random
import zlib
from pathlib import Path

import numpy as np
import pytest

from narrative_pipeline.store import DataStore
from narrative_pipeline.store.crc import SMALL_CRC_MAX, crc32_fixed
from narrative_pipeline.store.index import DELETED, HashIndex


def clustered_hashes(rng: random.Random, count: int) -> list[int]:
    """Hashes that pile into few home slots (same top bits) to force long probe runs, plus 0."""
    out = {0, 2**64 - 1}
    while len(out) < count:
        top = rng.randrange(256) << 56
        out.add(top | rng.randrange(1 << 20) if rng.random() < 0.5 else rng.randrange(2**64))
    return list(out)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_index_matches_dict_model(seed: int) -> None:
    rng = random.Random(seed)
    pool = clustered_hashes(rng, 4000)
    index, model = HashIndex(), {}
    for _step in range(60):
        batch = rng.sample(pool, rng.randrange(1, 700))
        values = [rng.randrange(1, 2**40) for _ in batch]
        index.insert_many(np.array(batch, np.uint64), np.array(values, np.int64))
        model.update(zip(batch, values, strict=True))
        for h in rng.sample(pool, 20):  # scalar deletes and sets
            if rng.random() < 0.5:
                if index.get(h) > 0:
                    index.set(h, DELETED)
                model.pop(h, None)
            else:
                v = rng.randrange(1, 2**40)
                index.set(h, v)
                model[h] = v
        assert index.live_count == len(model)
        probe = np.array(rng.sample(pool, 500), np.uint64)
        got = index.lookup(probe)
        assert [max(int(v), 0) for v in got] == [model.get(int(h), 0) for h in probe]
    hashes, offsets = index.live_items()
    assert dict(zip(hashes.tolist(), offsets.tolist(), strict=True)) == model


def test_index_built_from_sorted_arrays() -> None:
    rng = np.random.default_rng(0)
    hashes = np.unique(
        rng.integers(0, 2**63, 50_000, dtype=np.int64).astype(np.uint64) << np.uint64(1)
    )
    offsets = np.arange(1, len(hashes) + 1, dtype=np.int64)
    index = HashIndex.from_sorted(hashes, offsets)
    assert index.live_count == len(hashes)
    assert (index.lookup(hashes) == offsets).all()
    assert (index.lookup(hashes | np.uint64(1)) <= 0).all()  # odd hashes are absent


@pytest.mark.parametrize("length", [1, 2, 8, 13, SMALL_CRC_MAX])
def test_crc32_fixed_equals_zlib(length: int) -> None:
    rows = np.random.default_rng(length).integers(0, 256, (300, length), dtype=np.uint8)
    expected = [zlib.crc32(row.tobytes()) for row in rows]
    assert crc32_fixed(rows).tolist() == expected


def test_batch_fast_path_writes_the_same_bytes_as_single_writes(tmp_path: Path) -> None:
    items = [(b"key%d" % i, b"%08d" % i) for i in range(300)]
    items += [(b"big%d" % i, bytes([i % 250 + 1]) * 100) for i in range(50)]
    with DataStore(tmp_path / "batch.bin") as store:
        store.write(b"lead", b"x" * 5)  # unaligned tail before the batch
        store.batch_write(items[:300])  # equal sizes: vectorised encoder
        store.batch_write(items[300:])
    with DataStore(tmp_path / "single.bin") as store:
        store.write(b"lead", b"x" * 5)
        for key, value in items:
            store.write(key, value)
    assert (tmp_path / "batch.bin").read_bytes() == (tmp_path / "single.bin").read_bytes()


def test_live_entry_iteration(tmp_path: Path) -> None:
    with DataStore(tmp_path / "s.bin") as store:
        store.batch_write([(b"a", b"1" * 2), (b"b", b"2" * 2), (b"c", b"3" * 2)])
        store.delete(b"b")
        store.write(b"a", b"new")
        from xxhash import xxh3_64_intdigest as h

        assert list(store.iter_live_entries()) == [(h(b"c"), b"33"), (h(b"a"), b"new")]
        assert sorted(store.live_key_hashes().tolist()) == sorted([h(b"a"), h(b"c")])
