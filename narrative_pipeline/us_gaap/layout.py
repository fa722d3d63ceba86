"""Where the UsGaapStore keeps things in a simd-r-drive store, and how values are encoded.

Every key is namespaced (NamespaceHasher, 16 bytes) except the original's two counters
`__triplet_count__` and `__pair_count__` (u64 little-endian). Cells live in chunked columnar
arrays, `CHUNK_CELLS` cells per chunk and one key per (column, chunk), never one key per cell.

Everything a build or an incremental update writes carries its *generation* number in its
key, so it writes beside the live data and switches over only when complete (a crash midway
leaves the previous triplets readable). The manifest says which generation is live. A live
generation may reference chunks and per-pair indexes written by earlier generations (an
incremental update rewrites only what changed): its chunk table lists the (generation, chunk)
of each chunk in i_cell order, and its pair-index table the generation of each pair's index
(an update may write a pair's index as a delta against a full one an earlier generation wrote:
the pair-index bases table says which, `merge_pair_index` reads the two as one).

Scaled values are not stored: a chunk's scaled column is computed when it is read, with the
live scalers (`robust_transform` is `RobustScaler.transform`'s arithmetic, so the value is
bit-identical to `scaler.transform([[unscaled]])[0][0]`); refitting a scaler rewrites no cell.

Payloads are never empty and never exactly b"\\x00" (simd-r-drive reserves that byte for
deletions): arrays are only written when non-empty, counters are 8 bytes, the rest is JSON or
pickle framing.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np

from narrative_pipeline.store.hashing import NamespaceHasher

CHUNK_SHIFT = 16
CHUNK_CELLS = 1 << CHUNK_SHIFT  # 65,536 cells per chunk

# Column name -> dtype of the cell arrays a read returns.
CELL_COLUMNS: dict[str, np.dtype] = {
    "pair_id": np.dtype("<u4"),
    "unscaled": np.dtype("<f8"),
    "scaled": np.dtype("<f8"),
    "cell_key": np.dtype("<u8"),
    "ticker_id": np.dtype("<u4"),
}
# The columns kept in the store (scaled is computed on read).
STORED_COLUMNS = ("pair_id", "unscaled", "cell_key", "ticker_id")

TRIPLET_COUNT_KEY = b"__triplet_count__"
PAIR_COUNT_KEY = b"__pair_count__"

MANIFEST = NamespaceHasher(b"us-gaap-manifest")
CELL_COLUMN = NamespaceHasher(b"cell-column-chunk")
CONCEPT_UNIT_PAIRS = NamespaceHasher(b"concept-unit-pair")
PAIR_VALUE_INDEX = NamespaceHasher(b"triplet-reverse-index")
SCALER_PARAMS = NamespaceHasher(b"scaler-params")
SCALER = NamespaceHasher(b"scaler")
EMBEDDING_CACHE = NamespaceHasher(b"embedding-cache")
PCA_MODEL = NamespaceHasher(b"pca-model")
PCA_REDUCED = NamespaceHasher(b"pca-reduced-embedding")
GENERATION_TABLES = NamespaceHasher(b"generation-tables")
PAIR_VALUE_INDEX_DELTA = NamespaceHasher(b"triplet-reverse-index-delta")

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


def manifest_key() -> bytes:
    return MANIFEST.namespace(b"manifest")


def cell_column_key(generation: int, column: str, chunk: int) -> bytes:
    return CELL_COLUMN.namespace(_U32.pack(generation) + column.encode() + b"/" + _U64.pack(chunk))


def pairs_key(generation: int) -> bytes:
    return CONCEPT_UNIT_PAIRS.namespace(_U32.pack(generation))


def pair_index_key(generation: int, pair_id: int) -> bytes:
    return PAIR_VALUE_INDEX.namespace(_U32.pack(generation) + _U32.pack(pair_id))


def scaler_params_key(generation: int) -> bytes:
    return SCALER_PARAMS.namespace(_U32.pack(generation))


def scaler_key(generation: int, pair_id: int) -> bytes:
    return SCALER.namespace(_U32.pack(generation) + _U32.pack(pair_id))


def embedding_cache_key(model_id: str, text: str) -> bytes:
    return EMBEDDING_CACHE.namespace(model_id.encode() + b"\x00" + text.encode())


def pca_model_key(generation: int) -> bytes:
    return PCA_MODEL.namespace(_U32.pack(generation))


def pca_reduced_key(generation: int) -> bytes:
    return PCA_REDUCED.namespace(_U32.pack(generation))


def pca_model_generation(record: dict) -> int:
    """The generation whose key holds the record's PCA model (an update that projected with
    the live model shares it)."""
    return int(record["pca"].get("model_generation", record["generation"]))


def reduced_parts(record: dict) -> list[list]:
    """[[generation, rows or None], ...]: the keys (`pca_reduced_key`) whose matrices, stacked
    in order, are the record's PCA-reduced embeddings (one part: the record's own key)."""
    return record["pca"].get("reduced_parts") or [[record["generation"], None]]


def encode_count(n: int) -> bytes:
    return _U64.pack(n)


def decode_count(payload: bytes | None) -> int | None:
    if payload is None:
        return None
    return int.from_bytes(bytes(payload), "little", signed=False)


def encode_json(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


def decode_json(payload: bytes | None) -> Any:
    return None if payload is None else json.loads(bytes(payload))


def encode_matrix(matrix: np.ndarray) -> bytes:
    """2-D float array: u64 rows, u64 cols, u8 itemsize, then the C-order little-endian data."""
    m = np.ascontiguousarray(matrix)
    dtype = np.dtype(f"<f{m.dtype.itemsize}")
    rows, cols = m.shape
    return _U64.pack(rows) + _U64.pack(cols) + bytes([dtype.itemsize]) + m.astype(dtype).tobytes()


def decode_matrix(payload: bytes) -> np.ndarray:
    rows = _U64.unpack_from(payload, 0)[0]
    cols = _U64.unpack_from(payload, 8)[0]
    itemsize = payload[16]
    return np.frombuffer(payload, dtype=f"<f{itemsize}", offset=17).reshape(rows, cols)


def encode_pair_index(values: np.ndarray, locators: np.ndarray) -> bytes:
    """One pair's values sorted ascending, with each cell's locator: u64 n, f64[n], u64[n]."""
    n = len(values)
    return (
        _U64.pack(n)
        + np.ascontiguousarray(values, dtype="<f8").tobytes()
        + np.ascontiguousarray(locators, dtype="<u8").tobytes()
    )


def decode_pair_index(payload: bytes) -> tuple[np.ndarray, np.ndarray]:
    n = _U64.unpack_from(payload, 0)[0]
    values = np.frombuffer(payload, dtype="<f8", count=n, offset=8)
    locators = np.frombuffer(payload, dtype="<u8", count=n, offset=8 + 8 * n)
    return values, locators


def pair_index_delta_key(generation: int, pair_id: int) -> bytes:
    return PAIR_VALUE_INDEX_DELTA.namespace(_U32.pack(generation) + _U32.pack(pair_id))


def encode_pair_index_delta(values: np.ndarray, locators: np.ndarray, dropped: np.ndarray) -> bytes:
    """What an update changed in a pair's index, against its base (a full index written by
    an earlier generation): the cells added (values sorted ascending, with their locators)
    and the chunk refs (`chunk_ref`) whose cells left it. u64 n, f64[n], u64[n], u64 m, u64[m]."""
    return (
        encode_pair_index(values, locators)
        + _U64.pack(len(dropped))
        + np.ascontiguousarray(dropped, dtype="<u8").tobytes()
    )


def decode_pair_index_delta(payload: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    values, locators = decode_pair_index(payload)
    at = 8 + 16 * len(values)
    m = _U64.unpack_from(payload, at)[0]
    return values, locators, np.frombuffer(payload, dtype="<u8", count=m, offset=at + 8)


def merge_pair_index(
    base: tuple[np.ndarray, np.ndarray], delta: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """A pair's index from its base and a delta: the base's cells outside the dropped chunks,
    then the added ones, sorted by value (stable: ties keep that order, as a rewrite would)."""
    base_values, base_locators = base
    added_values, added_locators, dropped = delta
    keep = ~np.isin(locator_chunks(base_locators), dropped)
    values = np.concatenate([base_values[keep], added_values])
    locators = np.concatenate([base_locators[keep], added_locators])
    order = np.argsort(values, kind="stable")
    return values[order], locators[order]


def pair_texts_key(generation: int) -> bytes:
    return CONCEPT_UNIT_PAIRS.namespace(_U32.pack(generation) + b"/texts")


# Scaler kind codes in the params array.
SCALER_KIND_CODES = {"robust": 0, "quantile": 1}


def encode_scaler_params(kinds: np.ndarray, center: np.ndarray, scale: np.ndarray) -> bytes:
    """Per pair: u8 kind code, f64 center, f64 scale (center/scale of the robust rule)."""
    n = len(kinds)
    return (
        _U64.pack(n)
        + np.ascontiguousarray(kinds, dtype="u1").tobytes()
        + np.ascontiguousarray(center, dtype="<f8").tobytes()
        + np.ascontiguousarray(scale, dtype="<f8").tobytes()
    )


def decode_scaler_params(payload: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = _U64.unpack_from(payload, 0)[0]
    kinds = np.frombuffer(payload, dtype="u1", count=n, offset=8)
    center = np.frombuffer(payload, dtype="<f8", count=n, offset=8 + n)
    scale = np.frombuffer(payload, dtype="<f8", count=n, offset=8 + 9 * n)
    return kinds, center, scale


def chunk_table_key(generation: int) -> bytes:
    return GENERATION_TABLES.namespace(_U32.pack(generation) + b"/chunks")


def tickers_key(generation: int) -> bytes:
    return GENERATION_TABLES.namespace(_U32.pack(generation) + b"/tickers")


def pair_index_generations_key(generation: int) -> bytes:
    return GENERATION_TABLES.namespace(_U32.pack(generation) + b"/pair-index-generations")


def pair_index_bases_key(generation: int) -> bytes:
    """Per pair, the generation of its full index; where it differs from the pair's entry in
    the pair-index table, that generation holds a delta against it (absent: no deltas)."""
    return GENERATION_TABLES.namespace(_U32.pack(generation) + b"/pair-index-bases")


# A cell's place independent of i_cell (which moves when chunks before it change): the
# (generation, chunk number) of its chunk and its offset there, packed in a u64.
LOCATOR_CHUNK_BITS = 24
LOCATOR_OFFSET_BITS = 16  # CHUNK_CELLS = 2**16


def encode_locators(generation: int, chunk: int, offsets: np.ndarray) -> np.ndarray:
    base = (generation << (LOCATOR_CHUNK_BITS + LOCATOR_OFFSET_BITS)) | (
        chunk << LOCATOR_OFFSET_BITS
    )
    return np.asarray(offsets, dtype=np.uint64) | np.uint64(base)


def locator_chunks(locators: np.ndarray) -> np.ndarray:
    """The (generation, chunk) part of each locator, as one u64 (see `chunk_ref`)."""
    return np.asarray(locators, dtype=np.uint64) >> np.uint64(LOCATOR_OFFSET_BITS)


def chunk_ref(generation: int, chunk: int) -> int:
    """What `locator_chunks` gives for the cells of chunk (generation, chunk)."""
    return (generation << LOCATOR_CHUNK_BITS) | chunk


def encode_array(values: np.ndarray) -> bytes:
    """A 1-D array: u8 dtype-string length, the dtype string, then the data (never empty)."""
    values = np.ascontiguousarray(values)
    name = values.dtype.str.encode()
    return bytes([len(name)]) + name + values.tobytes()


def decode_array(payload: bytes) -> np.ndarray:
    n = payload[0]
    return np.frombuffer(payload, dtype=np.dtype(bytes(payload[1 : 1 + n]).decode()), offset=1 + n)
