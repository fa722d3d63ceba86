"""`narrative-pipeline demo`: the main job on the embedded defaults, so a new user sees it all work.

It first exercises the embedded simd-r-drive store (write, read, delete, compact) on a scratch file,
then materialises the whole Dagster asset graph in-process on a generated sample of sec-fetcher
CSVs (or on `NARRATIVE_CSV_DIR` when it holds CSVs), and prints what each asset produced.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="run the store demo and the whole asset graph")
    parser.add_argument("--store-only", action="store_true", help="only the store demo")
    parser.add_argument(
        "--epochs", type=int, default=None,
        help="training epochs (default: the launchpad's bounded default, as 'Materialize all')",
    )  # fmt: skip
    parser.set_defaults(func=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    demo_store()
    if not args.store_only:
        demo_pipeline(epochs=args.epochs)
    return 0


def demo_store() -> None:
    """Write, read, delete and compact, showing the file shrink: the store's whole life cycle."""
    from narrative_pipeline.store import DataStore, NamespaceHasher

    print("== Embedded simd-r-drive store")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "demo.bin"
        hasher = NamespaceHasher(b"demo")
        keys = [hasher.namespace(f"key-{i}".encode()) for i in range(10_000)]
        with DataStore(str(path)) as store:
            started = time.perf_counter()
            store.batch_write([(k, i.to_bytes(8, "little")) for i, k in enumerate(keys)])
            print(f"wrote {len(keys):,} entries in {time.perf_counter() - started:.3f}s")
            values = store.batch_read(keys[:5])
            print("read back:", [int.from_bytes(v or b"", "little") for v in values])
            for key in keys[::2]:
                store.delete(key)
            store.batch_write([(k, b"overwritten") for k in keys[1:100:2]])
            print(
                f"deleted {len(keys[::2]):,}, overwrote 50: {len(store):,} live, "
                f"file {store.file_size():,} bytes"
            )
            store.compact()
            print(f"compacted: {len(store):,} live, file {store.file_size():,} bytes")
            assert store.read(keys[0]) is None and store.read(keys[1]) == b"overwritten"
        with DataStore(str(path)) as reopened:
            print(f"reopened: {len(reopened):,} live entries, key-1 = {reopened.read(keys[1])!r}")


def demo_pipeline(epochs: int | None) -> None:
    """Materialise every asset in-process: the same asset graph and, unless `epochs` is given,
    the same bounded training budget as "Materialize all" in the UI (fewer epochs leave the
    model at its PCA start, and the evaluation's PCA check says so)."""
    from narrative_pipeline.definitions import materialize_all, training_run_config
    from narrative_pipeline.resources import PathsResource

    data_dir = PathsResource().data_path.resolve()
    print("\n== Dagster asset graph on the embedded defaults")
    print(f"data folder: {data_dir}")
    # Dagster's console logger defaults to DEBUG (one line per engine event); INFO keeps the counts.
    run_config = {
        **(training_run_config(max_epochs=epochs) if epochs else {}),
        "loggers": {"console": {"config": {"log_level": "INFO"}}},
    }
    result = materialize_all(run_config=run_config)
    for line in result:
        print(line)
    print()
    print(where_to_look(data_dir))


def where_to_look(data_dir: Path) -> str:
    """Where the demo left its products and how to look at them (only what exists is named)."""
    from narrative_pipeline.resources import DatabaseResource, StoreResource

    training = data_dir / "training"
    checkpoints = sorted((training / "checkpoints").glob("*.ckpt"))
    plots = sorted((data_dir / "plots").glob("*.png"))
    lines = ["== Where things are"]
    if checkpoints:
        lines.append(f"checkpoint:   {', '.join(str(p) for p in checkpoints)}")
    if plots:
        lines.append(f"plots:        {', '.join(str(p) for p in plots)}")
    if training.is_dir():
        lines.append(f"TensorBoard:  .venv/bin/tensorboard --logdir {training}")
    lines += [
        f"store:        {StoreResource().describe()}",
        f"database:     {DatabaseResource().describe()}",
        "the UI:       make ui (or make ui PORT=3001), then open http://127.0.0.1:3000 and",
        "              click 'Materialize all' (this demo ran in-process, so its run is not in",
        "              the UI's history; the UI run reuses the data above)",
    ]
    return "\n".join(lines)
