"""narrative_pipeline: SEC US-GAAP facts -> simd-r-drive store -> Stage 1 autoencoder, as Dagster assets.

Layers (arrows point down only):
    definitions / assets / resources / sensors / schedules / checks   (Dagster, thin)
    training/                                                          (Lightning model, dataset, loop)
    us_gaap_store.py, readers/, preprocessing/                         (the data layer)
    store/ (simd-r-drive format + protocol)   db/ (SQLAlchemy models + loaders)
"""

__version__ = "0.1.0"
