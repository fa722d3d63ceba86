"""The per-pair value indexes an incremental update writes: a delta where it can, a full index
where it must.

A pair that an update touches (cells added, or cells moved or dropped with a rewritten chunk)
used to get its whole index rewritten: 16 bytes per cell of the pair, and the popular pairs a
company touches hold most of the corpus' cells, so each update grew the store file by a
large share of the corpus' index bytes (~280 MB at 44M facts) for compaction to return. Now
the update writes a *delta* against the pair's full index (the base, written by an earlier
generation and shared, not copied): the cells added since the base (sorted by value, with
their locators) and the chunk refs whose cells left it (layout.encode_pair_index_delta).
Reading merges the two (layout.merge_pair_index), in the order a rewrite would have given.

The delta replaces the previous one (it carries every addition and drop since the base), so a
read is always one base plus at most one delta. When the cells the delta describes (added,
or of the base but dropped) pass `DELTA_SHARE` of its base, or the pair has no base yet (a new
pair), the full index is written instead and becomes the base of later deltas.
"""

from __future__ import annotations

import numpy as np

from narrative_pipeline.us_gaap import layout
from narrative_pipeline.us_gaap.generations import StoreState

INDEX_PAIRS_PER_READ = 256
DELTA_SHARE = 0.25  # a delta holding more cells than this share of its base: write it whole

Index = tuple[np.ndarray, np.ndarray]  # (values sorted ascending, locators)
Delta = tuple[np.ndarray, np.ndarray, np.ndarray]  # (values, locators, dropped chunk refs)


class IndexDeltas:
    """Writes the touched pairs' indexes of one update (generation `generation`, built on
    the `live` record)."""

    def __init__(self, state: StoreState, live: dict, generation: int) -> None:
        self.state, self.live, self.generation = state, live, generation
        self.live_gens = state.pair_index_generations(live)
        self.live_bases = state.pair_index_bases(live)

    def write(
        self,
        touched: list[int],
        dropped: set[int],
        added: list[tuple],
        gens: np.ndarray,
        bases: np.ndarray,
    ) -> None:
        """Each touched pair's new index: its cells outside the `dropped` chunks plus its
        `added` cells [(pair_id, value, locator) arrays]. Sets `gens[p]` (this generation) and
        `bases[p]` (where its full index is) of every touched pair."""
        pid, values, locators = _by_pair(added)
        dropped_refs = np.array(sorted(dropped), dtype=np.uint64)
        for first in range(0, len(touched), INDEX_PAIRS_PER_READ):
            group = touched[first : first + INDEX_PAIRS_PER_READ]
            bases_now, deltas_now = self._read_live(group)
            batch = []
            for p in group:
                lo, hi = np.searchsorted(pid, [p, p + 1])
                entry = self._new_index(
                    p, bases_now.get(p), deltas_now.get(p), values[lo:hi], locators[lo:hi],
                    dropped_refs,
                )  # fmt: skip
                gens[p] = self.generation
                if entry is None:  # no cell left and none added
                    bases[p] = self.generation
                    continue
                key, payload, base = entry
                bases[p] = base
                batch.append((key, payload))
            if batch:
                self.state.data_store.batch_write(batch)

    def _read_live(self, group: list[int]) -> tuple[dict[int, Index], dict[int, Delta]]:
        """The live base index and delta (if any) of each pair of `group` the live record has."""
        n_live = self.live["n_pairs"]
        old = [p for p in group if p < n_live]
        gens, bases = self.live_gens, self.live_bases
        base_payloads = self.state.batch_read(
            [layout.pair_index_key(int(bases[p]), p) for p in old]
        )
        with_delta = [p for p in old if gens[p] != bases[p]]
        delta_payloads = self.state.batch_read(
            [layout.pair_index_delta_key(int(gens[p]), p) for p in with_delta]
        )
        base_of = {
            p: layout.decode_pair_index(payload)
            for p, payload in zip(old, base_payloads, strict=True)
            if payload is not None
        }
        delta_of = {}
        for p, payload in zip(with_delta, delta_payloads, strict=True):
            if payload is None:
                raise LookupError(
                    f"value index delta of pair {p} (generation {gens[p]}) is missing"
                )
            delta_of[p] = layout.decode_pair_index_delta(payload)
        return base_of, delta_of

    def _new_index(
        self,
        pair_id: int,
        base: Index | None,
        delta: Delta | None,
        values: np.ndarray,
        locators: np.ndarray,
        dropped: np.ndarray,
    ) -> tuple[bytes, bytes, int] | None:
        """(key, payload, base generation) of the pair's new index, or None when it is empty."""
        if delta is not None:  # the previous delta's cells still in place come first
            keep = ~np.isin(layout.locator_chunks(delta[1]), dropped)
            values = np.concatenate([delta[0][keep], values])
            locators = np.concatenate([delta[1][keep], locators])
            dropped = np.union1d(delta[2], dropped).astype(np.uint64)
        if base is not None and _changed_cells(base, values, dropped) <= DELTA_SHARE * len(base[0]):
            order = np.argsort(values, kind="stable")
            payload = layout.encode_pair_index_delta(values[order], locators[order], dropped)
            key = layout.pair_index_delta_key(self.generation, pair_id)
            return key, payload, int(self.live_bases[pair_id])
        if base is not None:
            values, locators = layout.merge_pair_index(base, (values, locators, dropped))
        else:
            order = np.argsort(values, kind="stable")
            values, locators = values[order], locators[order]
        if not len(values):
            return None
        payload = layout.encode_pair_index(values, locators)
        return layout.pair_index_key(self.generation, pair_id), payload, self.generation


def _changed_cells(base: Index, added: np.ndarray, dropped: np.ndarray) -> int:
    """Cells a delta would describe: those added, and the base's in dropped chunks (a base
    that lost most of its cells is written anew, not kept alive for the few it still has)."""
    gone = np.isin(layout.locator_chunks(base[1]), dropped).sum() if len(dropped) else 0
    return len(added) + int(gone)


def _by_pair(added: list[tuple]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The added cells [(pair_id, value, locator) arrays] as three arrays sorted by pair (a
    pair's cells keep their order)."""
    parts = [a for a in added if len(a[0])]
    if not parts:
        return np.zeros(0, np.int64), np.zeros(0), np.zeros(0, np.uint64)
    pid = np.concatenate([p[0] for p in parts]).astype(np.int64)
    values = np.concatenate([p[1] for p in parts])
    locators = np.concatenate([p[2] for p in parts])
    order = np.argsort(pid, kind="stable")
    return pid[order], values[order], locators[order]
