"""UsGaapStore over WebSocket: our server, with our client and with the official simd-r-drive client."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from narrative_pipeline.us_gaap import layout
from narrative_pipeline.us_gaap_store import UsGaapStore
from narrative_pipeline_tests import ws_fixtures
from narrative_pipeline_tests.test_us_gaap_store_fakes import CountingEmbedder, sqlite_facts_db

store_server = ws_fixtures.store_server  # the store tests' reusable fixture


def _client(kind: str, host: str, port: int):
    if kind == "official":
        if importlib.util.find_spec("simd_r_drive_ws_client") is None:
            pytest.skip("simd-r-drive-ws-client not installed (test extra)")
        from simd_r_drive_ws_client import DataStoreWsClient
    else:
        from narrative_pipeline.store import DataStoreWsClient
    return DataStoreWsClient(host, port)


@pytest.mark.parametrize("client", ["ours", "official"])
def test_build_rebuild_and_reads_over_websocket(store_server, client: str, tmp_path: Path) -> None:
    n = layout.CHUNK_CELLS + 4464  # two chunks
    rng = np.random.default_rng(0)
    facts = pd.DataFrame(
        {
            "ticker": np.repeat([f"T{i:03d}" for i in range(70)], 1000)[:n],
            "accn": [f"a{i // 50:05d}" for i in range(n)],
            "concept": [f"C{i % 50:02d}" for i in range(n)],
            "unit": "USD",
            "value": rng.normal(0, 1e6, n).round(),
        }
    )
    handle = _client(client, store_server.host, store_server.port)
    store = UsGaapStore(handle)
    db = sqlite_facts_db(facts, tmp_path / "all.sqlite")
    store.build_from_db(db, embedder=CountingEmbedder(), make_plots=False)
    assert store.get_triplet_count() == n
    cells = store.batch_lookup_by_indices(np.arange(0, n, 97))
    for cell in cells:
        assert cell.scaler.transform([[cell.unscaled_value]])[0][0] == cell.scaled_value
    first = cells[5]
    assert (
        store.lookup_by_triplet(first.concept, first.uom, first.unscaled_value).unscaled_value
        == first.unscaled_value
    )

    smaller = sqlite_facts_db(facts.head(1000), tmp_path / "head.sqlite")
    store.build_from_db(smaller, force=True, embedder=CountingEmbedder(), make_plots=False)
    fresh = UsGaapStore(handle)  # another reader sees the new generation
    assert fresh.get_triplet_count() == 1000
    np.testing.assert_array_equal(
        fresh.read_cell_range(0, 1000).unscaled,
        smaller.facts_frame()["value"].to_numpy(),
    )
    assert (
        handle.read(layout.cell_column_key(1, "unscaled", 1)) is None
    )  # the old generation is gone
