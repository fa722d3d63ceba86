"""A synthetic SEC companyfacts bulk archive shaped like the real one (for bench_whole_sec.py).

The real `companyfacts.zip` holds 19,215 `CIK##########.json` members, about 2,600 of them
empty, about 18 GB unzipped, on the order of 1e8 fact entries (about 6,600 entries per MB of
JSON, measured on AAPL/GOOG/MSFT: 6,626 / 6,606 / 6,693). At `scale` s the archive holds
round(19,215 s) members in the same JSON shape (`cik`, `entityName`, `facts -> {us-gaap, dei}
-> concept -> {label, description, units -> UNIT -> [{end, val, accn, fy, fp, form, filed,
start?, frame?}]}}`), with:

- empty members: 2,600 / 19,215 of them (`"facts": {}`), at random positions;
- entries per non-empty company: lognormal. The fit: the mean is pinned by the real totals
  (1.1e8 entries / 16,615 non-empty members = 6,600) and sigma (0.85) by the three real
  large caps (AAPL 24,579, GOOG 19,836, MSFT 31,574 entries, mean 25,300) sitting at the 99th
  percentile, i.e. median exp(mu) = 4,200; clipped to [20, 200,000];
- entries per (accn, concept, unit): 1-4 (the prior periods a filing repeats), mean 2.36,
  so that the reader keeps 42% of the entries, as it does on the real files (10,428 of
  24,579 for AAPL, 8,880 of 19,836 for GOOG, 13,018 of 31,574 for MSFT);
- filings per company: one per ~350 entries (AAPL 70 accns, GOOG 43, MSFT 69), each filling
  30% of the company's (filing, concept) cells, which gives AAPL's ~500 concepts;
- concepts: the real US-GAAP taxonomy's names, labels and documentation (../shared/data/
  taxonomy), each company's drawn without replacement with popularity ~ 1/rank^1.1 (a common
  core used by every filer, a long tail), else the vocabulary of `sample_data.py` when the
  taxonomy file is absent;
- units: from the concept's XBRL item type (monetary -> USD, shares, per share -> USD/shares,
  pure), other types drawn with the real files' unit mix.

Deterministic for a (scale, seed); members are deflated at level 1 (the real zip is ~14x
smaller than its content; level 1 gives ~8x, fast to write).
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REAL_MEMBERS = 19_215
REAL_EMPTY = 2_600
MEAN_ENTRIES = 6_600
SIGMA = 0.85
MU = float(np.log(MEAN_ENTRIES) - SIGMA**2 / 2)
MIN_ENTRIES, MAX_ENTRIES = 20, 200_000
ENTRIES_PER_FILING = 350
REPEATS = np.array([1, 2, 3, 4])
REPEAT_WEIGHTS = np.array([0.30, 0.20, 0.34, 0.16])
MEAN_REPEATS = float((REPEATS * REPEAT_WEIGHTS).sum())  # 2.36 entries per kept fact
DENSITY = 0.3  # share of (filing, concept) cells a company fills (AAPL: 10,428 / (70 x 505))
ZIPF = 1.1  # concept popularity ~ 1 / rank^ZIPF
OTHER_UNITS = (("USD", 0.87), ("shares", 0.05), ("USD/shares", 0.04), ("pure", 0.035))
OTHER_UNITS_TAIL = ("Year", "Segment", "Store", "Employee", "EUR")
FORMS = ("10-Q", "10-Q", "10-Q", "10-K")
FPS = ("Q1", "Q2", "Q3", "FY")


@dataclass(frozen=True)
class Vocabulary:
    """Concepts with their label, documentation and unit, most popular first."""

    names: list[str]
    labels: list[str]
    docs: list[str]
    units: list[str]
    source: str

    @property
    def popularity(self) -> np.ndarray:
        weights = 1.0 / np.arange(1, len(self.names) + 1) ** ZIPF
        return weights / weights.sum()


def load_vocabulary(taxonomy_path: Path | None, seed: int = 7) -> Vocabulary:
    """The taxonomy's concepts (popularity order shuffled by `seed`), else sample_data's."""
    if taxonomy_path is not None and taxonomy_path.exists():
        from narrative_pipeline.db.taxonomy import read_taxonomy

        frame = read_taxonomy(taxonomy_path)
        frame = frame[frame["concept_type"].fillna("").str.contains("ItemType")]
        frame = frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)
        rng = np.random.default_rng(seed)
        units = [_unit_of(t, rng) for t in frame["concept_type"].fillna("").tolist()]
        return Vocabulary(
            frame["name"].tolist(),
            frame["label"].fillna("").tolist(),
            frame["documentation"].fillna("").tolist(),
            units,
            f"taxonomy {taxonomy_path.name} ({len(frame)} concepts)",
        )
    from narrative_pipeline.sample_data import CONCEPTS

    names = [c.name for c in CONCEPTS]
    return Vocabulary(
        names,
        names,
        [""] * len(names),
        [c.unit for c in CONCEPTS],
        f"sample_data.py ({len(names)} concepts)",
    )


def _unit_of(concept_type: str, rng: np.random.Generator) -> str:
    kind = concept_type.lower()
    if "monetary" in kind:
        return "USD"
    if "pershare" in kind:
        return "USD/shares"
    if "shares" in kind:
        return "shares"
    if "pure" in kind or "percent" in kind:
        return "pure"
    if rng.random() < 0.9:
        names, weights = zip(*OTHER_UNITS, strict=True)
        return str(rng.choice(names, p=np.asarray(weights) / sum(weights)))
    return str(rng.choice(OTHER_UNITS_TAIL))


def entries_per_company(n: int, rng: np.random.Generator) -> np.ndarray:
    """Lognormal(MU, SIGMA) entry counts, clipped (the fit in the module docstring)."""
    drawn = rng.lognormal(MU, SIGMA, size=n)
    return np.clip(np.rint(drawn), MIN_ENTRIES, MAX_ENTRIES).astype(np.int64)


def company_document(cik: int, n_entries: int, vocab: Vocabulary, rng: np.random.Generator) -> str:
    """One member's JSON text with about `n_entries` fact entries."""
    n_filings = max(1, n_entries // ENTRIES_PER_FILING)
    first_year = int(rng.integers(2009, 2024 - min(14, n_filings // 4)))
    n_facts = max(1, round(n_entries / MEAN_REPEATS))
    n_concepts = min(len(vocab.names), max(1, round(n_facts / (n_filings * DENSITY))))
    concepts = rng.choice(len(vocab.names), size=n_concepts, replace=False, p=vocab.popularity)
    present = rng.random((n_filings, n_concepts)) < DENSITY
    filing, column = np.nonzero(present)
    repeats = rng.choice(REPEATS, size=len(filing), p=REPEAT_WEIGHTS)
    scale = 10.0 ** rng.uniform(5, 10)
    vals = np.rint(rng.lognormal(0, 1.5, size=int(repeats.sum())) * scale).astype(np.int64)
    by_concept: dict[int, list[str]] = {}
    k = 0
    for f, col, r in zip(filing.tolist(), column.tolist(), repeats.tolist(), strict=True):
        year = first_year + f // 4
        fp = FPS[f % 4]
        accn = f"{cik:010d}-{year % 100:02d}-{f:06d}"
        items = by_concept.setdefault(int(concepts[col]), [])
        for back in range(r):
            items.append(
                f'{{"end":"{year - back}-{3 * (f % 4) + 3:02d}-28","val":{vals[k]},'
                f'"accn":"{accn}","fy":{year},"fp":"{fp}","form":"{FORMS[f % 4]}",'
                f'"filed":"{year}-{3 * (f % 4) + 4:02d}-15"}}'
            )
            k += 1
    parts = []
    for c, items in by_concept.items():
        body = (
            f'{{"label":{json.dumps(vocab.labels[c])},"description":{json.dumps(vocab.docs[c])},'
            f'"units":{{"{vocab.units[c]}":[{",".join(items)}]}}}}'
        )
        parts.append(f'"{vocab.names[c]}":{body}')
    return (
        f'{{"cik":{cik},"entityName":"SYNTHETIC {cik}","facts":{{"us-gaap":{{'
        + ",".join(parts)
        + "}}}"
    )


def empty_document(cik: int) -> str:
    return f'{{"cik":{cik},"entityName":"SYNTHETIC {cik}","facts":{{}}}}'


def write_archive(
    path: Path, scale: float, taxonomy_path: Path | None, seed: int = 13
) -> dict[str, float | int | str]:
    """Write the archive; returns what it holds (members, empty, entries, unzipped bytes)."""
    rng = np.random.default_rng(seed)
    vocab = load_vocabulary(taxonomy_path)
    n_members = max(2, round(REAL_MEMBERS * scale))
    empty = rng.random(n_members) < REAL_EMPTY / REAL_MEMBERS
    counts = entries_per_company(n_members, rng)
    ciks = np.sort(rng.choice(np.arange(1_000, 2_000_000), size=n_members, replace=False))
    raw_bytes = entries = 0
    tmp = path.with_suffix(".part")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for cik, is_empty, n in zip(ciks.tolist(), empty.tolist(), counts.tolist(), strict=True):
            text = empty_document(cik) if is_empty else company_document(cik, n, vocab, rng)
            data = text.encode()
            archive.writestr(f"CIK{cik:010d}.json", data)
            raw_bytes += len(data)
            entries += 0 if is_empty else n
    tmp.rename(path)
    return {
        "members": n_members,
        "empty_members": int(empty.sum()),
        "entries_drawn": int(entries),
        "unzipped_bytes": raw_bytes,
        "zip_bytes": path.stat().st_size,
        "vocabulary": vocab.source,
    }
