"""What each UsGaapStore step reports: plain dataclasses (Dagster turns them into metadata)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SkippedFile:
    path: str
    reason: str


@dataclass
class PairsReport:
    generation: int
    n_cells: int
    n_pairs: int
    n_chunks: int
    new_pairs: int  # pairs absent from the previous live generation
    seconds: float
    incremental: bool = False  # only changed tickers were re-read (us_gaap/incremental.py)
    changed_tickers: int = 0  # added or changed (incremental)
    removed_tickers: int = 0
    touched_pairs: int = 0  # pairs whose value index was rewritten (incremental)
    value_changed_pairs: int = 0  # pairs whose values changed: their scalers are refitted


@dataclass
class EmbeddingReport:
    model: str
    n_pairs: int
    dim: int
    cache_hits: int
    embedded: int
    texts_with_taxonomy: int  # pairs whose text came from the taxonomy label/documentation
    seconds: float
    example_texts: list[str] = field(default_factory=list)


@dataclass
class ScalerReport:
    kind: str
    n_pairs: int
    single_value_pairs: int
    zero_iqr_pairs: int  # robust rule: scale from the largest deviation instead of the IQR
    robust_fallback_pairs: int  # quantile kind: pairs that used the robust rule instead
    scale_doublings: int  # pairs whose scale was doubled so no non-zero value maps onto itself
    seconds: float
    refitted_pairs: int | None = None  # incremental: pairs refitted (None: every pair)
    frozen_pairs: int | None = None  # freeze_scalers: pairs that kept the live parameters


@dataclass
class PcaReport:
    n_pairs: int
    input_dim: int
    n_components: int
    explained_variance: float  # kept by the chosen components
    configured_variance: float | None
    configured_components: int | None
    seconds: float
    refitted: bool = True  # False: the live model kept, new pairs projected with it
    explained_variance_png: bytes = b""
    scatter_png: bytes = b""
    plot_paths: list[str] = field(default_factory=list)


@dataclass
class TripletReport:
    generation: int
    n_triplets: int
    n_pairs: int
    scaler_kind: str
    seconds: float
    cells_per_second: float


@dataclass
class IngestReport:
    """Files -> database (step 1), then the downstream steps when they ran."""

    source: str
    files_seen: int = 0
    files_loaded: int = 0
    files_unchanged: int = 0
    skipped_files: list[SkippedFile] = field(default_factory=list)  # failed: stored data kept
    facts_written: int = 0
    conflicting_facts: int = 0  # same filing and (concept, unit) from two sources, values differ
    skipped_cells: int = 0
    non_numeric_units: dict[str, int] = field(default_factory=dict)
    skipped_columns: int = 0
    messages: list[str] = field(default_factory=list)
    triplets: int = 0
    pairs: int = 0
    downstream_ran: bool = False
    timings: dict[str, float] = field(default_factory=dict)
    triplets_per_second: float = 0.0
    pairs_report: PairsReport | None = None
    embedding_report: EmbeddingReport | None = None
    scaler_report: ScalerReport | None = None
    pca_report: PcaReport | None = None
    triplet_report: TripletReport | None = None
