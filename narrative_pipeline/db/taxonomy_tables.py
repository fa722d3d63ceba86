"""The taxonomy tables (us_gaap_concept and its type tables): replaced whole, read back.

Owns the SQL side of the taxonomy; reading the taxonomy files is db/taxonomy.py's.
"""

from __future__ import annotations

import pandas as pd
from sqlalchemy import select

from narrative_pipeline.core.columns import TAXONOMY_COLUMNS
from narrative_pipeline.db import models
from narrative_pipeline.db.engine import Backend, none_if_na

TYPE_COLUMNS = ("concept_type", "balance_type", "period_type")


def replace_taxonomy(db: Backend, frame: pd.DataFrame) -> dict[str, int]:
    """Replace the whole taxonomy with `frame` (columns TAXONOMY_COLUMNS; type columns
    hold names such as 'credit', 'instant', 'xbrli:monetaryItemType'). One transaction."""
    frame = frame.drop_duplicates(subset=["name"], keep="last").reset_index(drop=True)
    type_ids = {
        column: {v: i + 1 for i, v in enumerate(sorted(frame[column].dropna().unique()))}
        for column in TYPE_COLUMNS
    }
    p = db.ph
    with db.transaction() as cur:
        for table in models.TAXONOMY_TABLES:
            cur.execute(f"DELETE FROM {table.name}")
        for column, ids in type_ids.items():
            cur.executemany(
                f"INSERT INTO us_gaap_{column} (id, {column}) VALUES ({p},{p})",
                [(i, name) for name, i in ids.items()],
            )
        cur.executemany(
            "INSERT INTO us_gaap_concept (id, name, concept_type_id, balance_type_id, "
            f"period_type_id, label, documentation) VALUES ({p},{p},{p},{p},{p},{p},{p})",
            _concept_rows(frame, type_ids),
        )
    counts = {"concepts": len(frame)}
    counts.update({f"{c}s": len(ids) for c, ids in type_ids.items()})
    return counts


def taxonomy_frame(db: Backend) -> pd.DataFrame:
    """DataFrame[name, label, documentation, balance_type, period_type, concept_type]."""
    c, b, pt, ct = models.concept, models.balance_type, models.period_type, models.concept_type
    query = (
        select(
            c.c.name,
            c.c.label,
            c.c.documentation,
            b.c.balance_type,
            pt.c.period_type,
            ct.c.concept_type,
        )
        .select_from(
            c.outerjoin(b, c.c.balance_type_id == b.c.id)
            .outerjoin(pt, c.c.period_type_id == pt.c.id)
            .outerjoin(ct, c.c.concept_type_id == ct.c.id)
        )
        .order_by(c.c.name)
    )
    with db.engine.connect() as conn:
        rows = conn.execute(query).all()
    return pd.DataFrame([tuple(r) for r in rows], columns=TAXONOMY_COLUMNS)


def taxonomy_concepts(db: Backend) -> set[str]:
    """Concept names of the loaded taxonomy (empty set: no taxonomy loaded)."""
    return {r[0] for r in db.query("SELECT name FROM us_gaap_concept")}


def _concept_rows(frame: pd.DataFrame, type_ids: dict[str, dict[str, int]]) -> list[tuple]:
    def ids(column: str) -> list:
        lookup = type_ids[column]
        return [lookup.get(v) for v in none_if_na(frame[column].astype(object).tolist())]

    return list(
        zip(
            range(1, len(frame) + 1),
            frame["name"].astype(object).tolist(),
            ids("concept_type"),
            ids("balance_type"),
            ids("period_type"),
            none_if_na(frame["label"].astype(object).tolist()),
            none_if_na(frame["documentation"].astype(object).tolist()),
            strict=True,
        )
    )
