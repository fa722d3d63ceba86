"""A/B of the embedded store's batch_write and random batch_read between two trees, in one run.

Run each side in a fresh process, alternating, with PYTHONPATH pointing at the tree to measure:
    git archive 4e82c29 narrative_pipeline | tar -x -C /tmp/ab/base
    for i in 1 2 3 4 5; do
      PYTHONPATH=/tmp/ab/base .venv/bin/python benchmarks/ab_store_batch.py base
      PYTHONPATH=$PWD .venv/bin/python benchmarks/ab_store_batch.py head
    done
Prints keys per CPU-second of this process (the machine is shared: CPU time is steadier than
wall time): batch_write of 1M new 16-byte keys with 8-byte values in batches of 1024, then the
best of three passes of batch_read in random order.
"""

import os
import sys
import tempfile
import time

import numpy as np

from narrative_pipeline.store.datastore import DataStore

N, BATCH = 1_000_000, 1024


def main() -> None:
    rng = np.random.default_rng(0)
    keys = [os.urandom(16) for _ in range(N)]
    values = [os.urandom(8) for _ in range(N)]
    writes = [
        list(zip(keys[i : i + BATCH], values[i : i + BATCH], strict=True))
        for i in range(0, N, BATCH)
    ]
    order = rng.permutation(N)
    reads = [[keys[j] for j in order[i : i + BATCH]] for i in range(0, N, BATCH)]
    store = DataStore(os.path.join(tempfile.mkdtemp(), "ab.bin"))
    start = time.process_time()
    for batch in writes:
        store.batch_write(batch)
    write_rate = N / (time.process_time() - start)
    read_rate = 0.0
    for _ in range(3):
        start = time.process_time()
        for batch in reads:
            store.batch_read(batch)
        read_rate = max(read_rate, N / (time.process_time() - start))
    label = sys.argv[1] if len(sys.argv) > 1 else "tree"
    print(f"{label} write {write_rate / 1e6:.3f} read {read_rate / 1e6:.3f}")


if __name__ == "__main__":
    main()
