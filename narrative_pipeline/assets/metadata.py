"""Turning the data layer's reports into Dagster metadata the UI shows well."""

from __future__ import annotations

import base64
import dataclasses
import json
import math
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg

PREVIEW_ROWS = 10


def markdown_table(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> dg.MetadataValue:
    """A Markdown table (pipes in cells escaped) for previews in the asset's metadata."""
    header = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    body = "\n".join("| " + " | ".join(_cell(value) for value in row) + " |" for row in rows)
    return dg.MetadataValue.md(header + body)


def _cell(value: Any) -> str:
    text = f"{value:.6g}" if isinstance(value, float) else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def figure_text(value: float) -> str:
    """A metric as a person reads it: 4 significant digits, whole numbers from 1,000 up
    (`0.1235`, `12.35`, `612,346`); the metadata itself keeps full precision."""
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    return str(value)


def png_markdown(png: bytes, title: str) -> dg.MetadataValue:
    """A PNG shown inline in the UI (Markdown image with a base64 data URI)."""
    encoded = base64.b64encode(png).decode("ascii")
    return dg.MetadataValue.md(f"**{title}**\n\n![{title}](data:image/png;base64,{encoded})")


def save_png(png: bytes, folder: Path, name: str) -> Path:
    """Keep the plot as a file too, so it outlives the run's event log."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(png)
    return path


def report_metadata(report: Any, skip: Iterable[str] = ()) -> dict[str, Any]:
    """Scalar fields of a report dataclass as metadata; lists/dicts as JSON; bytes left out.

    Field names differ per step; converting generically keeps this layer thin and shows every
    figure the data layer measured.
    """
    if report is None:
        return {}
    if dataclasses.is_dataclass(report):
        items = {f.name: getattr(report, f.name) for f in dataclasses.fields(report)}
    elif isinstance(report, dict):
        items = dict(report)
    else:
        items = {k: v for k, v in vars(report).items() if not k.startswith("_")}
    metadata: dict[str, Any] = {}
    for name, value in items.items():
        if name in skip or isinstance(value, bytes | bytearray):
            continue
        converted = _metadata_value(value)
        if converted is not None:
            metadata[name] = converted
    return metadata


def _metadata_value(value: Any) -> Any:
    if isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Path):
        return dg.MetadataValue.path(str(value))
    if hasattr(value, "item") and not hasattr(value, "__len__"):  # numpy scalar
        return _metadata_value(value.item())
    if isinstance(value, list | tuple | dict | set):
        if not value:
            return dg.MetadataValue.json([] if not isinstance(value, dict) else {})
        try:
            return dg.MetadataValue.json(json.loads(json.dumps(_jsonable(value), default=str)))
        except (TypeError, ValueError):
            return str(value)[:2000]
    if value is None:
        return None
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dg.MetadataValue.json(json.loads(json.dumps(dataclasses.asdict(value), default=str)))
    return str(value)[:2000]


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_jsonable(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


@contextmanager
def timed(metadata: dict[str, Any], name: str = "step_seconds") -> Iterator[None]:
    """Record the block's wall time in `metadata[name]`."""
    started = time.perf_counter()
    try:
        yield
    finally:
        metadata[name] = round(time.perf_counter() - started, 3)
