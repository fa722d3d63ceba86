"""Pure functions on arrays: per-pair scalers, pair-text embeddings, PCA and its plots."""
