"""Stage 1 data-loader and training throughput (samples/s), for benchmarks/RESULTS.md.

Builds (once, cached under --workdir) a real store file through the UsGaapStore steps from a
synthetic facts table (`SyntheticFactsDb`, a stand-in for the database) with a stand-in hash
embedder (no model download; the dimension matters here, not the meaning), then measures:

1. loader: samples/s delivered by `DataLoader(IterableConceptValueDataset, batch_size=None)`
   into collated batches, for the embedded store and the WebSocket store, 0 and 2 workers;
2. the per-sample path (`return_scaler=True` + `collate_with_scaler`) for comparison;
3. training: samples/s of `Stage1Autoencoder` under `pl.Trainer` fed by the loader (CPU, or
   the GPU with `--accelerator gpu`).

Run: `.venv/bin/python benchmarks/bench_loader.py [--cells 2000000] [--quick]`.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from narrative_pipeline.db import TAXONOMY_COLUMNS  # noqa: E402 (no SQLAlchemy needed)


class SyntheticFactsDb:
    """Stand-in for DbUsGaap's read methods: a generated facts table (no database needed)."""

    def __init__(self, n_cells: int, n_pairs: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        per_filing = 120
        n_filings = max(1, n_cells // per_filing)
        filing = np.repeat(np.arange(n_filings), per_filing)[:n_cells]
        n = len(filing)
        concept = rng.integers(0, n_pairs, n)
        # A concept appears at most once per filing: drop repeats.
        frame = pd.DataFrame({"filing": filing, "concept": concept}).drop_duplicates()
        magnitude = rng.lognormal(mean=(frame["concept"].to_numpy() % 9) + 12, sigma=1.5)
        sign = np.where(rng.random(len(frame)) < 0.1, -1.0, 1.0)
        self.facts = pd.DataFrame(
            {
                "ticker": [f"T{f // 40:05d}" for f in frame["filing"]],
                "accn": [f"{f:010d}-24-000001" for f in frame["filing"]],
                "concept": [f"SyntheticConcept{c:05d}" for c in frame["concept"]],
                "unit": np.where(frame["concept"].to_numpy() % 11 == 0, "SHARES", "USD"),
                "value": np.round(magnitude * sign, 0),
            }
        ).sort_values(["ticker", "accn", "concept", "unit"], kind="stable", ignore_index=True)

    def tickers(self) -> list[str]:
        return sorted(self.facts["ticker"].unique().tolist())

    def facts_frame(self, tickers: list[str] | None = None) -> pd.DataFrame:
        if tickers is None:
            return self.facts
        return self.facts[self.facts["ticker"].isin(tickers)].reset_index(drop=True)

    def fact_count(self) -> int:
        return len(self.facts)

    def taxonomy_frame(self) -> pd.DataFrame:
        return pd.DataFrame(columns=TAXONOMY_COLUMNS)


def hash_embedder(texts: list[str], dim: int = 384) -> np.ndarray:
    """Stand-in embedder: deterministic random vectors of all-MiniLM-L6-v2's width."""
    rows = [np.random.default_rng(zlib.crc32(t.encode())).standard_normal(dim) for t in texts]
    return np.asarray(rows, dtype=np.float32)


def build_store(path: Path, n_cells: int, n_pairs: int, pca_dim: int) -> dict:
    """Write the store file through the real UsGaapStore steps (skipped when cached)."""
    from narrative_pipeline.store import DataStore
    from narrative_pipeline.us_gaap_store import UsGaapStore

    meta_path = path.with_suffix(".json")
    if path.exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("requested") == [n_cells, n_pairs, pca_dim]:
            return meta
        path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    db = SyntheticFactsDb(n_cells, n_pairs)
    data_store = DataStore(str(path))
    store = UsGaapStore(data_store)
    store.build_concept_unit_pairs(db)
    store.generate_embeddings(db, embedder=hash_embedder, model_id="bench-hash-384")
    store.fit_scalers("robust")
    store.fit_pca(None, pca_dim)
    store.write_triplets()
    meta = {
        "requested": [n_cells, n_pairs, pca_dim],
        "cells": store.get_triplet_count(),
        "pairs": store.get_pair_count(),
        "input_dim": int(store.get_embedding_matrix()[0].shape[1]) + 1,
        "build_seconds": round(time.perf_counter() - started, 1),
        "file_mib": round(path.stat().st_size / 2**20, 1),
    }
    data_store.close()
    meta_path.write_text(json.dumps(meta))
    return meta


def loader_rate(factory, *, num_workers: int, batch_size: int, per_sample: bool = False,
                max_samples: int | None = None) -> dict:  # fmt: skip
    """Samples/s through one epoch of the DataLoader (worker start-up and store opening included)."""
    from torch.utils.data import DataLoader

    from narrative_pipeline.training import IterableConceptValueDataset, collate_with_scaler

    dataset = IterableConceptValueDataset(
        factory, split="all", batch_size=batch_size, return_scaler=per_sample
    )
    loader = (
        DataLoader(dataset, batch_size=batch_size, collate_fn=collate_with_scaler,
                   num_workers=num_workers)
        if per_sample
        else DataLoader(dataset, batch_size=None, num_workers=num_workers)
    )  # fmt: skip
    samples, started = 0, time.perf_counter()
    for batch in loader:
        samples += len(batch["x"])
        if max_samples and samples >= max_samples:
            break
    seconds = time.perf_counter() - started
    return {
        "samples": samples,
        "seconds": round(seconds, 3),
        "samples_per_s": round(samples / seconds),
    }


def training_rate(
    factory,
    *,
    accelerator: str,
    batch_size: int,
    batches: int,
    workers: int,
    precision: str = "32-true",
    matmul: str = "highest",
) -> dict:
    """Samples/s of Stage1Autoencoder training steps under pl.Trainer, the loader feeding it."""
    import pytorch_lightning as pl
    import torch
    from torch.utils.data import DataLoader

    from narrative_pipeline.training import IterableConceptValueDataset, Stage1Autoencoder

    class StepTimer(pl.Callback):
        def __init__(self) -> None:
            self.times: list[float] = []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            if trainer.strategy.root_device.type == "cuda":
                torch.cuda.synchronize()
            self.times.append(time.perf_counter())

    torch.set_float32_matmul_precision(matmul)
    store = factory()
    input_dim = store.get_embedding_matrix()[0].shape[1] + 1
    dataset = IterableConceptValueDataset(factory, split="train", batch_size=batch_size)
    loader = DataLoader(dataset, batch_size=None, num_workers=workers,
                        pin_memory=accelerator != "cpu")  # fmt: skip
    model = Stage1Autoencoder(input_dim=input_dim)  # default widths: latent 256, hidden 512
    timer = StepTimer()
    trainer = pl.Trainer(
        max_epochs=-1, max_steps=batches, accelerator=accelerator, devices=1,
        limit_val_batches=0, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[timer],
        gradient_clip_val=0.5, precision=precision,
    )  # fmt: skip
    trainer.fit(model, train_dataloaders=loader)
    warm = 10 if len(timer.times) > 20 else 1  # skip start-up (workers, first kernels)
    seconds = timer.times[-1] - timer.times[warm - 1]
    steps = len(timer.times) - warm
    device = (
        torch.cuda.get_device_name(0) if trainer.strategy.root_device.type == "cuda"
        else platform.processor() or "cpu"
    )  # fmt: skip
    return {
        "device": device, "batch_size": batch_size, "steps_timed": steps,
        "samples_per_s": round(steps * batch_size / seconds), "input_dim": int(input_dim),
        "torch_threads": torch.get_num_threads(), "loader_workers": workers,
        "precision": precision, "float32_matmul_precision": matmul,
    }  # fmt: skip


class WsStoreFactory:
    """Opens the UsGaapStore over our WebSocket client (picklable for DataLoader workers)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port

    def __call__(self):
        from narrative_pipeline.store import DataStoreWsClient
        from narrative_pipeline.us_gaap_store import UsGaapStore

        return UsGaapStore(DataStoreWsClient(self.host, self.port))


def start_ws_server(path: Path) -> tuple[subprocess.Popen, int]:
    process = subprocess.Popen(
        [sys.executable, "-m", "narrative_pipeline.store.serve", str(path), "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    line = process.stdout.readline()
    if "listening on" not in line:
        process.kill()
        raise RuntimeError(f"store server did not start: {line!r}")
    port = int(line.strip().rsplit(":", 1)[1].split("/")[0])
    return process, port


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=2_000_000)
    parser.add_argument("--pairs", type=int, default=2000)
    parser.add_argument("--pca-dim", type=int, default=243, help="the last original's PCA width")
    parser.add_argument("--workdir", default="/tmp/bench_loader")
    parser.add_argument("--batch-sizes", default="1024,8192")
    parser.add_argument("--workers", default="0,2")
    parser.add_argument("--no-ws", action="store_true", help="skip the WebSocket store")
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--train-batch-sizes", default="1024", help="comma-separated")
    parser.add_argument("--train-batches", type=int, default=60)
    parser.add_argument("--train-workers", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=0,
        help="torch intra-op threads for training (0: torch's default)",
    )  # fmt: skip
    parser.add_argument(
        "--train-precisions", default="32-true/highest",
        help="comma-separated PRECISION/MATMUL pairs for training, e.g. 32-true/highest,bf16-mixed/high",
    )  # fmt: skip
    parser.add_argument("--skip-loader", action="store_true")
    parser.add_argument("--out", help="also write the results as JSON here")
    args = parser.parse_args()

    from narrative_pipeline.training.cli import StoreOpener

    path = Path(args.workdir) / f"bench_{args.cells}_{args.pairs}_{args.pca_dim}.store"
    meta = build_store(path, args.cells, args.pairs, args.pca_dim)
    print("store:", json.dumps(meta), flush=True)
    results: dict = {"store": meta, "loader": [], "training": []}
    embedded = StoreOpener(str(path))
    if not args.skip_loader:
        for workers in [int(w) for w in args.workers.split(",")]:
            for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
                row = {"store": "embedded", "workers": workers, "batch_size": batch_size,
                       **loader_rate(embedded, num_workers=workers, batch_size=batch_size)}  # fmt: skip
                print("loader:", json.dumps(row), flush=True)
                results["loader"].append(row)
        row = {"store": "embedded", "workers": 0, "batch_size": 1024, "path": "per-sample",
               **loader_rate(embedded, num_workers=0, batch_size=1024, per_sample=True,
                             max_samples=200_000)}  # fmt: skip
        print("loader:", json.dumps(row), flush=True)
        results["loader"].append(row)
        if not args.no_ws:
            server, port = start_ws_server(path)
            try:
                ws = WsStoreFactory("127.0.0.1", port)
                for workers in [int(w) for w in args.workers.split(",")]:
                    row = {"store": "websocket", "workers": workers, "batch_size": 8192,
                           **loader_rate(ws, num_workers=workers, batch_size=8192)}  # fmt: skip
                    print("loader:", json.dumps(row), flush=True)
                    results["loader"].append(row)
            finally:
                server.terminate()
                server.wait(timeout=30)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    results["training"] = []
    for setting in args.train_precisions.split(","):
        precision, matmul = setting.split("/")
        for batch_size in [int(b) for b in args.train_batch_sizes.split(",")]:
            row = training_rate(
                embedded, accelerator=args.accelerator, batch_size=batch_size,
                batches=args.train_batches, workers=args.train_workers,
                precision=precision, matmul=matmul,
            )  # fmt: skip
            print("training:", json.dumps(row), flush=True)
            results["training"].append(row)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
