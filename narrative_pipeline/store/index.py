"""In-memory index key_hash -> metadata offset: a numpy open-addressing hash table.

Why not a dict: a dict of 10M Python ints costs ~1 GB and seconds to build; two flat numpy
arrays cost 16 bytes a slot, build from a sort in one vectorised pass, and answer a whole batch
of lookups with a few array operations per probe round.

Layout: slot = top `bits` bits of the hash (xxh3 output is uniform), linear probing *without*
wrap-around (the arrays have spare slots past 2**bits; the last WINDOW slots stay empty).
Values: 0 = empty slot, -1 = key deleted (slot stays occupied so probe chains stay intact),
> 0 = offset of the entry's metadata (always >= 1, since a payload precedes it).
"""

from __future__ import annotations

import numpy as np

EMPTY = 0
DELETED = -1
MAX_LOAD = 0.6  # 10M keys still fit 2**24 slots (256 MiB); linear probing degrades past ~0.7
MIN_BITS = 10
WINDOW = 8  # the last WINDOW slots are kept empty, so probing never runs off the end
_SCALAR_BELOW = 8  # keys still probing when fewer than this remain finish in a scalar loop


def _bits_for(count: int) -> int:
    bits = MIN_BITS
    while (1 << bits) * MAX_LOAD < count + 1:
        bits += 1
    return bits


class HashIndex:
    """Maps 64-bit key hashes to positive offsets; see the module docstring for the layout."""

    def __init__(self) -> None:
        self._install(np.zeros(0, np.uint64), np.zeros(0, np.int64))

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def from_sorted(cls, hashes: np.ndarray, offsets: np.ndarray) -> HashIndex:
        """Build from unique hashes sorted by their top bits (ascending) and positive offsets."""
        index = cls.__new__(cls)
        index._install(hashes, offsets)
        return index

    def _install(self, hashes: np.ndarray, offsets: np.ndarray) -> None:
        count = len(hashes)
        bits = _bits_for(count)
        self._shift = np.uint64(64 - bits)
        self._shift_int = 64 - bits
        capacity = 1 << bits
        positions = (hashes >> self._shift).astype(np.int64)  # home slots, ascending
        ramp = np.arange(count, dtype=np.int64)
        # Sorted homes: each key lands at max(home, previous position + 1) -- linear probing's
        # placement, computed for all keys at once (in place: 10M keys are 80 MB an array).
        positions -= ramp
        np.maximum.accumulate(positions, out=positions)
        positions += ramp
        del ramp
        end = int(positions[-1]) + 1 if count else 0
        length = max(capacity, end) + max(64, capacity >> 8)
        # Key and value of a slot side by side (one cache line) -- a random lookup then costs
        # one memory miss instead of two.
        slots = np.empty((length, 2), np.int64)
        slots.fill(0)  # np.empty gets transparent huge pages (np.zeros' calloc does not): 8x faster
        self._keys = slots.view(np.uint64)[:, 0]
        self._vals = slots[:, 1]
        self._keys[positions] = hashes
        self._vals[positions] = offsets
        self._capacity = capacity
        self._occupied = count
        self._live = int(np.count_nonzero(offsets > 0))

    def _rebuild(self, extra_hashes: np.ndarray, extra_values: np.ndarray) -> None:
        """Re-place every live key plus `extra_*` (which win over existing values), growing if needed."""
        live = self._vals > 0
        hashes = np.concatenate([self._keys[live], extra_hashes.astype(np.uint64)])
        values = np.concatenate([self._vals[live], extra_values.astype(np.int64)])
        order = np.argsort(hashes, kind="stable")
        hashes, values = hashes[order], values[order]
        last_of_group = np.ones(len(hashes), bool)
        last_of_group[:-1] = hashes[1:] != hashes[:-1]
        keep = last_of_group & (values > 0)
        self._install(hashes[keep], values[keep])

    # ---- size ---------------------------------------------------------------------------
    @property
    def live_count(self) -> int:
        return self._live

    @property
    def nbytes(self) -> int:
        return self._keys.nbytes + self._vals.nbytes  # = the (slots, 2) array

    def live_items(self) -> tuple[np.ndarray, np.ndarray]:
        """(hashes, offsets) of every live key, in slot order."""
        live = self._vals > 0
        return self._keys[live], self._vals[live]

    # ---- scalar operations --------------------------------------------------------------
    def get(self, key_hash: int) -> int:
        """The offset stored for `key_hash`, or <= 0 when missing or deleted."""
        key_at, value_at = self._keys.item, self._vals.item  # .item(): no numpy scalar objects
        pos = key_hash >> self._shift_int
        while True:
            value = value_at(pos)
            if value == EMPTY:
                return EMPTY
            if key_at(pos) == key_hash:
                return value
            pos += 1

    def set(self, key_hash: int, value: int) -> int:
        """Store `value` (> 0 live offset, or DELETED) for `key_hash`; returns the value it replaced."""
        keys, vals = self._keys, self._vals
        pos = key_hash >> self._shift_int
        while True:
            old = int(vals[pos])
            if old == EMPTY:
                if pos >= len(vals) - WINDOW or self._occupied + 1 > self._capacity * MAX_LOAD:
                    self._rebuild(np.array([key_hash], np.uint64), np.array([value], np.int64))
                    return EMPTY
                keys[pos] = key_hash
                vals[pos] = value
                self._occupied += 1
                self._live += value > 0
                return EMPTY
            if int(keys[pos]) == key_hash:
                vals[pos] = value
                self._live += (value > 0) - (old > 0)
                return old
            pos += 1

    # ---- vectorised operations ----------------------------------------------------------
    def lookup(self, hashes: np.ndarray) -> np.ndarray:
        """Offsets for a uint64 array of hashes (<= 0 where missing or deleted)."""
        return self._find_slots(hashes)[1]

    def _probe(self, key_hash: int, pos: int) -> tuple[int, int]:
        """(slot, value) of `key_hash` from `pos` on: its slot, or the first empty one (value 0)."""
        key_at, value_at = self._keys.item, self._vals.item
        while True:
            value = value_at(pos)
            if value == EMPTY or key_at(pos) == key_hash:
                return pos, value
            pos += 1

    def _find_slots(self, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For each hash: (slot, value) -- its own slot, or the first empty slot of its probe run.

        Vectorised rounds (one slot each) run while many keys are still probing; the last few,
        in long clusters, finish in a scalar loop, since a numpy round costs microseconds even
        for a handful of keys. (Comparing 8-slot windows per round measured slower: the 2-D
        gathers cost more than they save.)
        """
        keys, vals = self._keys, self._vals
        pos = (hashes >> self._shift).astype(np.int64)
        values = vals[pos]
        pending = np.flatnonzero((values != EMPTY) & (keys[pos] != hashes))
        while pending.size > _SCALAR_BELOW:
            p = pos[pending] + 1
            pos[pending] = p
            v = vals[p]
            values[pending] = v
            pending = pending[(v != EMPTY) & (keys[p] != hashes[pending])]
        for i in pending.tolist():
            pos[i], values[i] = self._probe(int(hashes[i]), int(pos[i]) + 1)
        return pos, values

    def insert_many(self, hashes: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Store values for *unique* hashes (the caller resolves duplicates, last write wins).

        Returns the values they replaced (<= 0 where the key was new or deleted), in input order,
        so the store can count the bytes that just became dead.
        """
        replaced = np.zeros(len(hashes), np.int64)
        if self._occupied + len(hashes) > self._capacity * MAX_LOAD:
            replaced[:] = self.lookup(hashes)
            self._rebuild(hashes, values)
            return replaced
        keys, vals = self._keys, self._vals
        todo = np.arange(len(hashes))
        while len(hashes):
            slots, old = self._find_slots(hashes)
            if slots.max() >= len(vals) - WINDOW:  # would fill the empty tail: grow instead
                replaced[todo] = old
                self._rebuild(hashes, values)
                return replaced
            existing = old != EMPTY
            self._live += int(np.count_nonzero(values > 0)) - int(np.count_nonzero(old > 0))
            fresh = np.flatnonzero(~existing)
            fresh_slots = slots[fresh]
            # Two new keys racing for one empty slot: the first takes it, the rest probe again.
            order = np.argsort(fresh_slots, kind="stable")
            sorted_slots = fresh_slots[order]
            clash = np.zeros(len(fresh), bool)
            clash[order[1:]] = sorted_slots[1:] == sorted_slots[:-1]
            settled = np.ones(len(hashes), bool)
            settled[fresh[clash]] = False
            replaced[todo[settled]] = old[settled]
            todo = todo[~settled]
            keys[slots[settled]] = hashes[settled]
            vals[slots[settled]] = values[settled]
            self._occupied += int(np.count_nonzero(~existing & settled))
            # Undo the live count for the ones that will be retried.
            self._live -= int(np.count_nonzero(values[~settled] > 0))
            hashes, values = hashes[~settled], values[~settled]
        return replaced
