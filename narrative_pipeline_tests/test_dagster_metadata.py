"""Metadata helpers: figures a person reads, and plots that the UI shows without a click.

Dagster 1.13's UI renders Markdown metadata inline only under 1,000 characters; longer values
(any PNG data URI) sit behind "[Show Markdown]". The sparkline must stay under that size
whatever the length of the series, and still be a well-formed SVG of every series.
"""

from __future__ import annotations

import base64
import re
import xml.etree.ElementTree as ET

import pytest

from narrative_pipeline.assets.metadata import (
    INLINE_MARKDOWN_CHARS,
    sparkline_markdown,
    tensorboard_sparkline,
)


def svg_of(markdown: str) -> ET.Element:
    encoded = re.search(r"data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)\)", markdown).group(1)
    return ET.fromstring(base64.b64decode(encoded))


def polylines(svg: ET.Element) -> list[list[tuple[int, int]]]:
    out = []
    for line in svg.iter("{http://www.w3.org/2000/svg}polyline"):
        out.append([tuple(map(int, p.split(","))) for p in line.get("points").split()])
    return out


@pytest.mark.parametrize("n", [1, 2, 20, 1000, 100_000])
def test_sparkline_stays_inline_for_any_series_length(n):
    markdown = sparkline_markdown(
        {
            "train": [1.0 / (i + 1) for i in range(n)],
            "validation": [2.0 / (i + 1) for i in range(n)],
        },
        "loss per epoch",
    ).value
    assert len(markdown) < INLINE_MARKDOWN_CHARS
    lines = polylines(svg_of(markdown))
    assert len(lines) == 2
    for points in lines:
        assert points[0][0] == 1  # starts at the left edge
        assert points[-1][0] == (199 if n > 1 else 1)  # the last value is always drawn
        assert all(1 <= x <= 199 and 1 <= y <= 47 for x, y in points)


def test_sparkline_draws_a_falling_series_falling_and_says_its_scale():
    markdown = sparkline_markdown({"loss": [100.0, 10.0, 1.0, 0.1]}, "loss").value
    assert "(log scale)" in markdown and "loss" in markdown
    [points] = polylines(svg_of(markdown))
    ys = [y for _, y in points]
    assert ys == sorted(ys) and ys[0] == 1 and ys[-1] == 47  # SVG y grows downwards
    assert [y for _, y in points] == [1, 16, 32, 47]  # equal steps on a log scale

    linear = sparkline_markdown({"share": [0.2, 0.5, 0.9]}, "variance").value
    assert "log scale" not in linear


def test_sparkline_skips_non_finite_values_and_empty_input():
    markdown = sparkline_markdown({"a": [1.0, float("nan"), 2.0, float("inf")]}, "t").value
    assert len(polylines(svg_of(markdown))[0]) == 2
    assert sparkline_markdown({"a": []}, "t").value == "**t**: no data"


def test_tensorboard_sparkline_reads_the_logged_epochs(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(tmp_path))
    for step, (train, val) in enumerate([(4.0, 5.0), (2.0, 3.0), (1.0, 2.5)]):
        writer.add_scalar("train_loss_epoch", train, step)
        writer.add_scalar("val_loss_epoch", val, step)
    writer.close()

    value = tensorboard_sparkline(
        tmp_path, {"train": "train_loss_epoch", "validation": "val_loss_epoch"}, "loss"
    )
    lines = polylines(svg_of(value.value))
    assert [len(points) for points in lines] == [3, 3]
    assert lines[0][-1][1] == 47  # the lowest value of both series: train's last
    assert tensorboard_sparkline(tmp_path / "missing", {"t": "x"}, "loss") is None
    assert tensorboard_sparkline(tmp_path, {"t": "not_logged"}, "loss") is None
