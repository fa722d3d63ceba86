"""Turning the data layer's reports into Dagster metadata the UI shows well."""

from __future__ import annotations

import base64
import dataclasses
import json
import math
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
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


# Dagster 1.13's UI shows a Markdown metadata value in the metadata table only when it is under
# 1,000 characters (MarkdownMetadataEntry: `expandSmallValues && mdStr.length < 1e3`); a longer
# one, such as any PNG as a data URI, sits behind a "[Show Markdown]" link.
INLINE_MARKDOWN_CHARS = 1000
_SPARK_W, _SPARK_H = 200, 48
_SPARK_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c")


def png_markdown(png: bytes, title: str) -> dg.MetadataValue:
    """A PNG as Markdown (base64 data URI): full size, but behind "[Show Markdown]" in the UI;
    pair it with `sparkline_markdown` for a figure that shows without a click."""
    encoded = base64.b64encode(png).decode("ascii")
    return dg.MetadataValue.md(f"**{title}**\n\n![{title}](data:image/png;base64,{encoded})")


def sparkline_markdown(series: Mapping[str, Sequence[float]], title: str) -> dg.MetadataValue:
    """Small line chart (inline SVG) that the UI shows directly in the metadata table.

    Each named series is drawn on a shared y range (log scale when every value is positive and
    they span more than a factor of 10), thinned to as few points as keep the Markdown under
    INLINE_MARKDOWN_CHARS; the legend is the series names in their colours' order.
    """
    finite = {k: [float(v) for v in vs if math.isfinite(v)] for k, vs in series.items()}
    finite = {k: vs for k, vs in finite.items() if vs}
    if not finite:
        return dg.MetadataValue.md(f"**{title}**: no data")
    for points in (48, 32, 24, 16, 12, 8, 6, 4, 2):
        text = _sparkline_md(finite, title, points)
        if len(text) < INLINE_MARKDOWN_CHARS:
            return dg.MetadataValue.md(text)
    return dg.MetadataValue.md(f"**{title}**")


def _sparkline_md(series: dict[str, list[float]], title: str, points: int) -> str:
    values = [v for vs in series.values() for v in vs]
    log = min(values) > 0 and max(values) / min(values) > 10
    scale = (lambda v: math.log10(v)) if log else (lambda v: v)
    low, high = scale(min(values)), scale(max(values))
    span = (high - low) or 1.0
    lines = []
    for colour, values_of in zip(_SPARK_COLOURS, series.values(), strict=False):
        step = max(1, math.ceil(len(values_of) / points))
        kept = list(range(0, len(values_of), step))
        if kept[-1] != len(values_of) - 1:
            kept.append(len(values_of) - 1)
        last = max(1, len(values_of) - 1)
        xy = " ".join(
            f"{round(i * (_SPARK_W - 2) / last) + 1},"
            f"{round((high - scale(values_of[i])) * (_SPARK_H - 2) / span) + 1}"
            for i in kept
        )
        lines.append(f'<polyline points="{xy}" fill="none" stroke="{colour}" stroke-width="2"/>')
    svg = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_SPARK_W}" height="{_SPARK_H}">'
        + "".join(lines)
        + "</svg>"
    )
    encoded = base64.b64encode(svg.encode()).decode("ascii")
    legend = ", ".join(series)
    scale_note = " (log scale)" if log else ""
    return f"**{title}**{scale_note}: {legend}\n\n![{title}](data:image/svg+xml;base64,{encoded})"


def tensorboard_sparkline(
    log_dir: str | Path, tags: dict[str, str], title: str
) -> dg.MetadataValue | None:
    """`sparkline_markdown` of scalars logged to TensorBoard under `log_dir` (name -> tag, e.g.
    {"train": "train_loss_epoch"}), in step order; None when no event file holds any of them."""
    if not log_dir or not Path(log_dir).is_dir():
        return None
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    events.Reload()
    logged = set(events.Tags().get("scalars", []))
    series = {
        name: [e.value for e in sorted(events.Scalars(tag), key=lambda e: e.step)]
        for name, tag in tags.items()
        if tag in logged
    }
    return sparkline_markdown(series, title) if series else None


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
