"""Two modes of bench_model_quality.py (issue 11, helper 11b): the held-out leak and the
original design at equal epochs. Kept apart from the sweep/seeds code so both can change alone.

- `strict_heldout`: the usual store fits the per-pair scalers and the embedding PCA on ALL
  cells, held-out tickers included (transductive). The strict store is built WITHOUT the
  held-out tickers (scalers and PCA fitted on the training tickers only); the held-out tickers
  then come in through the incremental update with frozen scalers and the PCA kept (new pairs
  projected, `pca_floor=0`), as they would reach a deployed model. Both stores are trained with
  the same seeds and epochs and evaluated alike; held-out cells of pairs no training cell has
  are reported separately (their scaler is fitted on the held-out ticker's own values, as the
  pipeline fits any new pair, and their embedding is projected with the training PCA).
- `original_equal_epochs`: our reimplementation of the original design (NOT its code: an MLP
  with value-modulated (FiLM) layers standing in for its value-modulated attention) with the
  original hyper-parameters, against our default, for the same number of epochs.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from narrative_pipeline.training import TrainConfig, train_stage1
from narrative_pipeline.training.cli import StoreOpener

FIGURES = ("value_median_rel_error", "value_within_1pct", "embedding_cosine")

# The original hyper-parameters (../shared/reference/narrative-stack.md, "Stage 1 autoencoder")
# as far as TrainConfig expresses them. Differences, stated in RESULTS.md: value-modulated
# MLP (FiLM) instead of value-modulated attention; hidden 512 x 2 (the original's widths are
# not in the design notes); MSE (the seed's; the last original used weighted L1); our streaming
# loader, cell-key split and held-out tickers; max_epochs bounded here instead of 1000.
ORIGINAL_DESIGN: dict[str, Any] = dict(
    architecture="mlp",
    latent_dim=256,
    learning_rate=5e-5,
    weight_decay=5.2e-7,
    lr_schedule="cosine_periodic",
    t_max=15,
    eta_min=1e-6,
    gradient_clip_val=0.5,
    batch_size=64,
    loss="mse",
    monitor="val_loss_epoch",
    patience=20,
    save_top_k=1,
)
OUR_DEFAULT: dict[str, Any] = {}  # TrainConfig's defaults (pca_residual, latent 96, lr 1e-4)


def epoch_bounded(max_epochs: int, seed: int, torch_threads: int | None, **extra: Any) -> dict:
    """Settings of a run bounded by epochs only (no time limit: the machine's load must not
    change what is compared)."""
    return dict(max_epochs=max_epochs, max_time=None, seed=seed, torch_threads=torch_threads,
                **extra)  # fmt: skip


def train_and_evaluate(store_path: Path, out: Path, label: str, config: TrainConfig) -> dict:
    """One run and the evaluation of its best checkpoint (held-out tickers, original units)."""
    from narrative_pipeline.training.evaluation import evaluate_checkpoint, judge

    started = time.perf_counter()
    result = train_stage1(
        StoreOpener(str(store_path)), config, out / label, progress=lambda _: None
    )
    seconds = time.perf_counter() - started
    evaluation, _ = evaluate_checkpoint(result.best_checkpoint_path, StoreOpener(str(store_path))())
    row: dict[str, Any] = {
        "label": label,
        "architecture": config.architecture,
        "latent_dim": config.latent_dim,
        "learning_rate": config.learning_rate,
        "batch_size": config.batch_size,
        "seed": config.seed,
        "max_epochs": config.max_epochs,
        "epochs": result.epochs_run,
        "train_seconds": round(seconds, 1),
        "checkpoint": result.best_checkpoint_path,
        "split": evaluation["headline_split"],
        "cells": evaluation["split"]["cells"],
        "checks": {v.name: v.passed for v in judge(evaluation)},
    }
    for name, figures in (
        ("model", evaluation["model"]),
        ("pca", evaluation["baselines"]["pca"]),
        ("pair_median", evaluation["baselines"]["pair_median"]),
    ):
        row[name] = {k: figures.get(k) for k in FIGURES}
        row[name]["pair_median_rel_error"] = figures.get("pair_median_rel_error")
    row["pca"]["latent_dim"] = evaluation["baselines"]["pca"].get("latent_dim")
    print(json.dumps(row), flush=True)
    return row


def save_partial(path: Path, results: dict) -> None:
    """Rewrite the results file after every run, so a cut-short benchmark keeps what it did."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2))


# ---------------------------------------------------------------------- original, equal epochs
def original_equal_epochs(
    store_path: Path,
    runs: Path,
    epochs_list: list[int],
    seeds: list[int],
    heldout: list[str],
    torch_threads: int | None,
    save: Callable[[list[dict]], None],
    designs: tuple[str, ...] = ("original", "ours"),
    original_latent: int = 256,
) -> list[dict]:
    """The original design and our default, trained for each epoch count and seed alike
    (`original_latent`: the original design at another latent size, e.g. ours, 96)."""
    chosen = {"original": {**ORIGINAL_DESIGN, "latent_dim": original_latent}, "ours": OUR_DEFAULT}
    rows: list[dict] = []
    for epochs in epochs_list:
        for seed in seeds:
            for design in designs:
                config = TrainConfig(
                    **epoch_bounded(epochs, seed, torch_threads, heldout_tickers=heldout),
                    **chosen[design],
                )
                label = f"{design}_l{config.latent_dim}_e{epochs}_s{seed}"
                row = train_and_evaluate(store_path, runs, label, config)
                rows.append({"design": design, **row})
                save(rows)
    return rows


def equal_epochs_table(rows: list[dict]) -> str:
    """RESULTS.md rows: design, epochs, seed, model vs same-size PCA vs per-pair median."""
    lines = [
        "| design | epochs | seed | model value err | within 1% | cosine | PCA-k value err "
        "| PCA-k cosine | per-pair median value err | check vs PCA |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        m, p, med = r["model"], r["pca"], r["pair_median"]
        lines.append(
            f"| {r['design']} (latent {r['latent_dim']}) | {r['epochs']} | {r['seed']} "
            f"| {m['value_median_rel_error']:.3g} | {m['value_within_1pct']:.3f} "
            f"| {m['embedding_cosine']:.4f} | {p['value_median_rel_error']:.3g} (k={p['latent_dim']}) "
            f"| {p['embedding_cosine']:.4f} | {med['value_median_rel_error']:.3g} "
            f"| {'pass' if r['checks']['not_worse_than_same_size_pca_on_both'] else 'FAIL'} |"
        )
    return "\n".join(lines)


def summarise(values: list[float]) -> str:
    return f"{np.median(values):.3g} [{min(values):.3g}..{max(values):.3g}]"


# ---------------------------------------------------------------------- strict held-out
def strict_heldout(
    data: Path,
    workdir: Path,
    transductive: Path,
    runs: Path,
    seeds: list[int],
    heldout: list[str],
    epochs: int,
    torch_threads: int | None,
    save: Callable[[dict], None],
) -> dict:
    """The same runs on the usual store and on the strict one (see the module docstring)."""
    strict, build = build_strict_store(data, workdir, heldout)
    build["transductive_pca_components"] = _pca_components(transductive)
    report: dict[str, Any] = {"build": build, "rows": []}
    for seed in seeds:
        for name, store in (("transductive", transductive), ("strict", strict)):
            config = TrainConfig(
                **epoch_bounded(epochs, seed, torch_threads, heldout_tickers=heldout)
            )
            row = train_and_evaluate(store, runs, f"{name}_e{epochs}_s{seed}", config)
            row["store"] = name
            row["by_pair_seen"] = seen_and_unseen_pairs(Path(row["checkpoint"]), store, heldout)
            print(json.dumps(row["by_pair_seen"]), flush=True)
            report["rows"].append(row)
            save(report)
    return report


def _pca_components(store_path: Path) -> int:
    return int(StoreOpener(str(store_path))().load_pca_model().n_components_)


def build_strict_store(data: Path, workdir: Path, heldout: list[str]) -> tuple[Path, dict]:
    """A store built from the other tickers' files, then the held-out tickers' files added by
    the incremental update with frozen scalers and the PCA kept (cached under `workdir`)."""
    from narrative_pipeline.db.database import DbUsGaap
    from narrative_pipeline.store import DataStore
    from narrative_pipeline.us_gaap_store import UsGaapStore

    path = workdir / "strict_robust.store"
    info_path = workdir / "strict_robust.json"
    if path.is_file() and info_path.is_file():
        return path, json.loads(info_path.read_text())
    for stale in (path, workdir / "strict.sqlite"):
        stale.unlink(missing_ok=True)
    train_src, heldout_src = _split_source_files(data, workdir / "strict_src", heldout)
    db = DbUsGaap(f"sqlite:///{workdir / 'strict.sqlite'}")
    data_store = DataStore(str(path))
    store = UsGaapStore(data_store)
    _ingest(store, db, train_src)
    built = store.build_from_db(db, force=True, scaler_kind="robust", make_plots=False)
    if built.pca_report is None:
        raise RuntimeError(f"the training tickers' store has no PCA: {built.messages}")
    tickers_before = list(store.get_tickers())
    if set(heldout) & set(tickers_before):
        raise RuntimeError(f"held-out tickers reached the training store: {tickers_before}")
    before = {"tickers": tickers_before, "cells": store.get_triplet_count(),
              "pairs": store.get_pair_count(),
              "pca_components": int(store.load_pca_model().n_components_)}  # fmt: skip
    _ingest(store, db, heldout_src)
    update = store.update_from_db(db, freeze_scalers=True, pca_floor=0.0, make_plots=False)
    if not update.messages[-1].startswith("incremental"):
        raise RuntimeError(f"the held-out tickers did not come in incrementally: {update.messages}")
    assert update.scaler_report is not None and update.pca_report is not None
    info = {
        "before_update": before,
        "after_update": {
            "tickers": list(store.get_tickers()),
            "cells": store.get_triplet_count(),
            "pairs": store.get_pair_count(),
        },  # fmt: skip
        "update_message": update.messages[-1],
        "scalers_frozen": update.scaler_report.frozen_pairs,
        "scalers_fitted_new_pairs": update.scaler_report.refitted_pairs,
        "pca_refitted": update.pca_report.refitted,
        "pca_kept_variance_all_pairs": update.pca_report.explained_variance,
    }
    data_store.close()
    info_path.write_text(json.dumps(info, indent=2))
    return path, info


def _split_source_files(data: Path, root: Path, heldout: list[str]) -> tuple[Path, Path]:
    """Folders (csv/, companyfacts/) of the training tickers' and the held-out
    tickers' files; a file belongs to the ticker its name starts with (AAPL.csv,
    AAPL_companyfacts.json.gz)."""
    wanted = {t.upper() for t in heldout}
    for side in ("train", "heldout"):
        for kind in ("csv", "companyfacts"):
            (root / side / kind).mkdir(parents=True, exist_ok=True)
    sources = [("csv", f) for f in sorted((data / "sec-fetcher-csvs").glob("*.csv"))]
    if (data / "companyfacts").is_dir():
        sources += [("companyfacts", f) for f in sorted((data / "companyfacts").iterdir())]
    for kind, file in sources:
        ticker = file.name.split(".")[0].split("_")[0].upper()
        copy = root / ("heldout" if ticker in wanted else "train") / kind / file.name
        if not copy.is_file():  # a copy: the loaders do not follow symbolic links
            shutil.copyfile(file, copy)
    if not any((root / "heldout" / "csv").iterdir()):
        raise SystemExit(f"no file of {sorted(wanted)} under {data}")
    return root / "train", root / "heldout"


def _ingest(store: Any, db: Any, source: Path) -> None:
    store.ingest_us_gaap_csvs(source / "csv", db, downstream=False)
    if any((source / "companyfacts").iterdir()):
        store.ingest_companyfacts(source / "companyfacts", db, downstream=False)


SCALED_BANDS = ((0.0, 10.0), (10.0, 1e2), (1e2, 1e4), (1e4, np.inf))  # |scaled value|


def seen_and_unseen_pairs(checkpoint: Path, store_path: Path, heldout: list[str]) -> dict:
    """Held-out cells of pairs some training cell has vs pairs no training cell has, and by
    the size of their scaled value (frozen scalers can map a new company's values far out):
    model, same-size PCA and per-pair median, fitted and scored as in training/evaluation.py."""
    from narrative_pipeline.training import evaluation as ev
    from narrative_pipeline.training.inference import load_model
    from narrative_pipeline.training.metrics import cell_value_metrics

    store = StoreOpener(str(store_path))()
    model = load_model(checkpoint, device="cpu")
    matrix, _ = store.get_embedding_matrix()
    matrix = np.asarray(matrix, dtype=np.float32)
    scalers = store.load_scalers()
    val_fraction = float(model.training_inputs.get("val_fraction", 0.1))
    indices = ev.split_indices(store, heldout, val_fraction)
    train = ev.read_split(store, "train", indices["train"], matrix, len(indices["train"]), 0)
    cells = ev.read_split(store, "heldout", indices["heldout"], matrix, len(indices["heldout"]), 0)
    predictions = {
        "model": ev.CheckpointPredictor(model, scalers).predict(cells),
        "pca": ev.PcaAutoencoder(train.x, model.typed_hparams.latent_dim, scalers).predict(cells),
        "pair_median": ev.PairMedianPredictor(train.pair_id, train.unscaled, scalers).predict(
            cells
        ),
    }
    cosines = {name: _cosine(p.embedding, cells.x[:, :-1]) for name, p in predictions.items()}
    seen = np.isin(cells.pair_id, np.unique(train.pair_id))
    size = np.abs(cells.x[:, -1].astype(np.float64))
    masks = {"seen_pairs": seen, "unseen_pairs": ~seen}
    masks.update(
        {f"scaled_abs_{lo:g}_{hi:g}": (size >= lo) & (size < hi) for lo, hi in SCALED_BANDS}
    )
    result: dict[str, Any] = {
        "heldout_cells": len(cells),
        "unseen_pair_cells": int((~seen).sum()),
        "unseen_pair_count": int(len(np.unique(cells.pair_id[~seen]))),
        "train_scaled_abs_max": float(np.abs(train.x[:, -1]).max()),
        "heldout_scaled_abs_p99": float(np.quantile(size, 0.99)),
    }
    for part, mask in masks.items():
        result[part] = {"cells": int(mask.sum())}
        for name, prediction in predictions.items():
            figures = cell_value_metrics(prediction.value[mask], cells.unscaled[mask])
            figures["embedding_cosine"] = float(cosines[name][mask].mean()) if mask.any() else None
            result[part][name] = {k: figures.get(k) for k in FIGURES}
    return result


def _cosine(embedding: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per-row cosine (0 where a row is zero), as training/evaluation.py's `score` takes it."""
    a, b = np.asarray(embedding, np.float64), np.asarray(target, np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return (a * b).sum(axis=1) / np.where(norms > 0, norms, 1.0)


def bands_table(report: dict) -> str:
    """RESULTS.md rows: held-out cells by |scaled value|, model and PCA cosine per store."""
    lines = ["| store | seed | abs(scaled) band | cells | model cosine | PCA cosine |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for r in report["rows"]:
        b = r["by_pair_seen"]
        for lo, hi in SCALED_BANDS:
            part = b.get(f"scaled_abs_{lo:g}_{hi:g}", {})
            if not part.get("cells"):
                continue
            lines.append(
                f"| {r['store']} | {r['seed']} | [{lo:g}, {hi:g}) | {part['cells']} "
                f"| {part['model']['embedding_cosine']:.4f} | {part['pca']['embedding_cosine']:.4f} |"
            )
    return "\n".join(lines)


def strict_table(report: dict) -> str:
    """RESULTS.md rows: store, seed, held-out figures (all cells, then by seen/unseen pair)."""
    lines = [
        "| store | seed | model value err | cosine | PCA value err | PCA cosine "
        "| per-pair median | seen-pair cells: model err / cos | unseen-pair cells (n): "
        "model err / cos | unseen: PCA err / pair-median err |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        m, p, med, b = r["model"], r["pca"], r["pair_median"], r["by_pair_seen"]
        seen, unseen = b["seen_pairs"], b["unseen_pairs"]

        def err(figures: dict) -> str:
            value = figures.get("value_median_rel_error")
            return "-" if value is None else f"{value:.3g}"

        def cos(figures: dict) -> str:
            value = figures.get("embedding_cosine")
            return "-" if value is None else f"{value:.4f}"

        lines.append(
            f"| {r['store']} | {r['seed']} | {err(m)} | {cos(m)} | {err(p)} | {cos(p)} "
            f"| {err(med)} | {err(seen['model'])} / {cos(seen['model'])} "
            f"| ({b['unseen_pair_cells']}) {err(unseen.get('model', {}))} / "
            f"{cos(unseen.get('model', {}))} | {err(unseen.get('pca', {}))} / "
            f"{err(unseen.get('pair_median', {}))} |"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------- command line
def add_arguments(parser: Any) -> None:
    parser.add_argument("--epochs-list", default="3,10,30",
                        help="original_equal_epochs: epoch counts")  # fmt: skip
    parser.add_argument("--seeds", default="0,1", help="seeds of the two modes")
    parser.add_argument("--designs", default="original,ours",
                        help="original_equal_epochs: which designs")  # fmt: skip
    parser.add_argument("--original-latent", type=int, default=256,
                        help="original_equal_epochs: the original design's latent size")  # fmt: skip
    parser.add_argument("--strict-epochs", type=int, default=10, help="strict_heldout: epochs")
    parser.add_argument("--heldout", default="MSFT", help="held-out tickers of the two modes")


def run_selected(
    experiments: set[str], args: Any, data: Path | None, workdir: Path, store: Path, results: dict
) -> None:
    """Run the modes named in `experiments` on `store` (the usual, transductive store)."""
    seeds = [int(s) for s in args.seeds.split(",")]
    heldout = [t.strip() for t in args.heldout.split(",") if t.strip()]
    out = Path(args.out)
    runs = workdir / "runs"

    def saver(name: str) -> Callable[[Any], None]:
        def save(rows: Any) -> None:
            results["runs"][name] = rows
            save_partial(out, results)

        return save

    if "original_equal_epochs" in experiments:
        epochs_list = [int(e) for e in args.epochs_list.split(",")]
        rows = original_equal_epochs(
            store, runs, epochs_list, seeds, heldout, args.torch_threads,
            saver("original_equal_epochs"), tuple(args.designs.split(",")), args.original_latent,
        )  # fmt: skip
        print(equal_epochs_table(rows))
    if "strict_heldout" in experiments:
        if data is None:
            raise SystemExit("strict_heldout needs the real data (--data with sec-fetcher-csvs/)")
        report = strict_heldout(
            data, workdir, store, runs, seeds, heldout, args.strict_epochs, args.torch_threads,
            saver("strict_heldout"),
        )  # fmt: skip
        print(strict_table(report))
        print(bands_table(report))
