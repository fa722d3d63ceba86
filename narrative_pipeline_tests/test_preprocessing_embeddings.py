"""Pair texts, model resolution, and the packaged all-MiniLM-L6-v2 loading offline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from narrative_pipeline.preprocessing import embeddings


@pytest.mark.parametrize(
    ("concept", "expected"),
    [
        ("AccountsPayableCurrent", "accounts payable current"),
        ("EBITDA", "ebitda"),
        ("IncomeTaxesPaidNetOfRefundsUSD", "income taxes paid net of refunds usd"),
        ("Level1FairValue", "level1 fair value"),
        ("CommonStockSharesOutstanding", "common stock shares outstanding"),
    ],
)
def test_camel_case_split(concept: str, expected: str) -> None:
    assert embeddings.split_camel_case(concept) == expected


def test_pair_text_prefers_taxonomy_and_always_names_the_unit() -> None:
    assert (
        embeddings.pair_text("AccountsPayableCurrent", "USD")
        == "accounts payable current measured in USD"
    )
    text = embeddings.pair_text("Assets", "USD", "Assets", "Sum of the carrying amounts.")
    assert text == "Assets: Sum of the carrying amounts. measured in USD"
    long_doc = " ".join(["word"] * 500)
    text = embeddings.pair_text("Assets", "USD/SHARES", "Assets", long_doc)
    assert text.endswith("measured in USD/SHARES")
    assert len(text.split()) <= embeddings.MAX_DOCUMENTATION_WORDS + 5


def test_resolve_model_default_is_the_packaged_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(embeddings.MODEL_ENV, raising=False)
    choice = embeddings.resolve_model()
    assert (Path(choice.source) / "model.safetensors").is_file()
    monkeypatch.setenv(embeddings.MODEL_ENV, choice.source)
    from_env = embeddings.resolve_model()
    assert from_env.source == str(Path(choice.source).resolve())
    assert from_env.model_id.startswith("path:")


@pytest.mark.slow  # imports sentence-transformers (10-20 s on a loaded machine)
def test_unknown_model_fails_with_a_clear_message() -> None:
    choice = embeddings.resolve_model("no-such-org/no-such-model-xyz")
    with pytest.raises(RuntimeError, match="offline"):
        embeddings.load_sentence_embedder(choice)


@pytest.mark.slow
def test_packaged_model_embeds_offline() -> None:
    embed = embeddings.load_sentence_embedder(embeddings.resolve_model(None))
    texts = [
        "accounts payable current measured in USD",
        "assets measured in USD",
        "shares outstanding measured in SHARES",
    ]
    vectors = embed(texts)
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    again = embed(texts)
    np.testing.assert_array_equal(vectors, again)
    # Related financial texts sit closer than a different unit of a different concept.
    cos = (
        vectors
        @ vectors.T
        / np.outer(np.linalg.norm(vectors, axis=1), np.linalg.norm(vectors, axis=1))
    )
    assert cos[0, 1] > 0.3
