"""Step 4 with the live input scaling kept: `fit_new_pair_scalers`.

Why: a trained model expects each pair's values scaled as they were when it was trained. The
usual update refits the scaler of every pair a new ticker touches (its values change the
pair's median and IQR), which shifts the model's input for every company in that pair. With
`freeze_scalers` (update option) / `freeze_existing` (the `scalers` asset's config) a pair the
live generation already scales keeps its parameters bit for bit, like the PCA basis keeps its
components; only pairs the live generation holds no value of (new pairs) are fitted, on the
values they have now. Pairs are matched by (concept, unit), so this holds after a full pairs
build (which numbers pairs afresh) as well as after an incremental one (ids never move).
"""

from __future__ import annotations

import time

import numpy as np

from narrative_pipeline.us_gaap import layout, model_steps
from narrative_pipeline.us_gaap.generations import StoreState
from narrative_pipeline.us_gaap.reports import ScalerReport


def fit_new_pair_scalers(state: StoreState, kind: str) -> ScalerReport:
    """Scalers of the working generation: the live parameters for pairs the live generation
    has values of, a fit for the others (a full fit when nothing is live)."""
    live = state.live()
    if live is None or not live.get("scalers"):
        report = model_steps.fit_scalers(state, kind)
        report.frozen_pairs = 0
        return report
    if live["scalers"]["kind"] != kind:
        raise ValueError(
            f"cannot freeze the live {live['scalers']['kind']!r} scalers while fitting "
            f"{kind!r} ones: keep kind={live['scalers']['kind']!r} or do not freeze"
        )
    started = time.perf_counter()
    record = state.working()
    new_ids, live_ids = known_pairs(state, record, live)
    fit = model_steps.ScalerFit(state, record, kind)
    kinds, center, scale = state.scaler_params(live)
    fit.kinds[new_ids], fit.center[new_ids], fit.scale[new_ids] = (
        kinds[live_ids],
        center[live_ids],
        scale[live_ids],
    )
    if kind == "quantile":
        _copy_quantile_pickles(state, live, fit, new_ids, live_ids)
    unknown = np.setdiff1d(np.arange(record["n_pairs"]), new_ids)
    fit.refit(unknown)
    fit.save()
    report = fit.report(started, refitted_pairs=len(unknown))
    report.frozen_pairs = len(new_ids)
    return report


def known_pairs(state: StoreState, record: dict, live: dict) -> tuple[np.ndarray, np.ndarray]:
    """(ids in `record`, ids in `live`) of the pairs `live` holds at least one value of."""
    live_ids = state.pair_ids(live)
    live_counts = state.pair_counts(live)
    matched = [
        (new_id, live_ids[key])
        for new_id, key in enumerate(tuple(p) for p in state.pairs(record))
        if key in live_ids and live_counts[live_ids[key]] > 0
    ]
    both = np.asarray(matched, dtype=np.int64).reshape(-1, 2)
    return both[:, 0], both[:, 1]


def _copy_quantile_pickles(
    state: StoreState,
    live: dict,
    fit: model_steps.ScalerFit,
    new_ids: np.ndarray,
    live_ids: np.ndarray,
) -> None:
    """A frozen quantile scaler is a pickle under (index generation, pair id): put the live
    one under the working record's key when that key differs."""
    quantile = layout.SCALER_KIND_CODES["quantile"]
    live_gens = state.pair_index_generations(live)
    moves = [
        (layout.scaler_key(int(live_gens[old]), old), layout.scaler_key(int(fit.gens[new]), new))
        for new, old in zip(new_ids.tolist(), live_ids.tolist(), strict=True)
        if fit.kinds[new] == quantile
    ]
    moves = [(src, dst) for src, dst in moves if src != dst]
    state.copy_entries(moves, missing_error="live quantile scalers are missing from the store")
