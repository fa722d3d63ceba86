"""Test helpers for the UsGaapStore tests: a dict-backed fake store and a real SQLite database.

`FakeDictStore` has exactly the simd-r-drive client API the facade may use and enforces the
store's payload rules (never empty, never b"\\x00"), so a facade bug that would corrupt a real
store fails here. The database is never faked: `sqlite_facts_db` writes synthetic facts into a
SQLite `DbUsGaap` through the production write path. Neither is used outside tests.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from narrative_pipeline.db import DbUsGaap
from narrative_pipeline.readers import ReadResult
from narrative_pipeline.readers.base import concat_fact_columns


class FakeDictStore:
    """Test fake: the simd-r-drive API (write, batch_write, read, batch_read, exists, delete)."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}
        self.calls: dict[str, int] = {}

    def _count(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1

    @staticmethod
    def _check(key: bytes, payload: bytes) -> None:
        if not isinstance(key, bytes | bytearray) or not key:
            raise TypeError(f"key must be non-empty bytes, got {key!r}")
        if not isinstance(payload, bytes | bytearray):
            raise TypeError(f"payload must be bytes, got {type(payload).__name__}")
        if len(payload) == 0 or bytes(payload) == b"\x00":
            raise ValueError("simd-r-drive payloads may not be empty or exactly b'\\x00'")

    def write(self, key: bytes, payload: bytes) -> int:
        self._count("write")
        self._check(key, payload)
        self.data[bytes(key)] = bytes(payload)
        return len(self.data)

    def batch_write(self, entries: list[tuple[bytes, bytes]]) -> int:
        self._count("batch_write")
        for key, payload in entries:
            self._check(key, payload)
        for key, payload in entries:
            self.data[bytes(key)] = bytes(payload)
        return len(self.data)

    def read(self, key: bytes) -> bytes | None:
        self._count("read")
        return self.data.get(bytes(key))

    def batch_read(self, keys: list[bytes]) -> list[bytes | None]:
        self._count("batch_read")
        return [self.data.get(bytes(k)) for k in keys]

    def exists(self, key: bytes) -> bool:
        return bytes(key) in self.data

    def delete(self, key: bytes) -> int:
        self._count("delete")
        self.data.pop(bytes(key), None)
        return len(self.data)


def sqlite_facts_db(
    facts: pd.DataFrame, path: Path, taxonomy: pd.DataFrame | None = None
) -> DbUsGaap:
    """A SQLite DbUsGaap at `path` holding `facts` (DataFrame[ticker, accn, concept, unit,
    value]) and `taxonomy`, written with `replace_fact_columns` like ingestion writes."""
    db = DbUsGaap(f"sqlite:///{path}")
    results = [
        ReadResult(
            source=f"{ticker}.csv",
            ticker=str(ticker),
            filings=pd.DataFrame({"accn": sorted(set(group["accn"]))}),
            facts=group[["accn", "concept", "unit", "value"]].reset_index(drop=True),
        )
        for ticker, group in facts.groupby("ticker", sort=True)
    ]
    outcomes = db.replace_fact_columns(concat_fact_columns([r.fact_columns() for r in results]))
    refused = [outcome for outcome in outcomes if isinstance(outcome, Exception)]
    if refused:
        raise refused[0]
    if taxonomy is not None:
        db.replace_taxonomy(taxonomy)
    return db


class CountingEmbedder:
    """Test fake embedder: deterministic vectors from a text hash; counts texts it embedded."""

    def __init__(self, dim: int = 24) -> None:
        self.dim = dim
        self.embedded = 0

    def __call__(self, texts: list[str]) -> np.ndarray:
        import zlib

        self.embedded += len(texts)
        rows = [
            np.random.default_rng(zlib.crc32(t.encode())).standard_normal(self.dim) for t in texts
        ]
        return np.asarray(rows, dtype=np.float32)


def synthetic_facts(n_tickers: int = 6, filings: int = 8, seed: int = 0) -> pd.DataFrame:
    """Facts with awkward pairs: a single value, a zero IQR with median 0, an IQR of exactly 1."""
    rng = np.random.default_rng(seed)
    concepts = [
        "Assets",
        "Liabilities",
        "Revenues",
        "EarningsPerShareBasic",
        "CashAndCashEquivalents",
    ]
    units = {"EarningsPerShareBasic": "USD/SHARES"}
    rows = []
    for t in range(n_tickers):
        ticker = f"T{t:03d}"
        for f in range(filings):
            accn = f"0000{t:04d}-24-{f:06d}"
            for concept in concepts:
                value = float(np.round(rng.lognormal(18, 2), 0)) * (1 if rng.random() > 0.1 else -1)
                if concept == "EarningsPerShareBasic":
                    value = float(np.round(rng.normal(2, 1), 2))
                rows.append((ticker, accn, concept, units.get(concept, "USD"), value))
            rows.append((ticker, accn, "ZeroMostly", "USD", 5.0 if (t + f) % 7 == 0 else 0.0))
            rows.append(
                (ticker, accn, "HalfSteps", "PURE", [-0.5, -0.5, 0.0, 0.5, 0.5][(t + f) % 5])
            )
    rows.append(("T000", "0000000000-24-000000", "OnlyOnce", "USD", 1234.0))
    return pd.DataFrame(rows, columns=["ticker", "accn", "concept", "unit", "value"])


@pytest.fixture
def fake_store() -> FakeDictStore:
    return FakeDictStore()


def test_fake_store_rejects_what_simd_r_drive_rejects() -> None:
    store = FakeDictStore()
    with pytest.raises(ValueError):
        store.write(b"k", b"")
    with pytest.raises(ValueError):
        store.batch_write([(b"a", b"ok"), (b"b", b"\x00")])
    assert store.read(b"a") is None  # the bad batch wrote nothing


def test_sqlite_facts_db_serves_the_facts_it_was_given_in_key_order(tmp_path: Path) -> None:
    facts = synthetic_facts()
    db = sqlite_facts_db(facts.sample(frac=1, random_state=3), tmp_path / "facts.sqlite")
    try:
        keys = ["ticker", "accn", "concept", "unit"]
        expected = facts.sort_values(keys, kind="stable").reset_index(drop=True)
        assert db.tickers() == sorted(set(facts["ticker"])) and db.fact_count() == len(facts)
        pd.testing.assert_frame_equal(
            db.facts_frame().astype({c: object for c in keys}),
            expected.astype({c: object for c in keys}),
        )
    finally:
        db.close()


def assert_exact_round_trip(store, whole) -> None:
    """Every cell of `whole` (read_cell_range arrays): its pair's scaler gives back `scaled`
    exactly from `unscaled` (one batch call per pair, element-wise identical to one-cell calls),
    and scaling changed every non-zero value."""
    scalers = store.load_scalers()
    for pair_id in np.unique(whole.pair_id):
        mask = whole.pair_id == pair_id
        again = scalers[pair_id].transform(whole.unscaled[mask].reshape(-1, 1))[:, 0]
        np.testing.assert_array_equal(again, whole.scaled[mask])
    assert not np.any((whole.scaled == whole.unscaled) & (whole.unscaled != 0))
