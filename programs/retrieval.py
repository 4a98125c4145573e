"""Map free-text label guesses to the nearest labels of a large taxonomy.

A label's score is its best similarity over all guesses (as in Infer-Retrieve-Rank). Similarity
comes from offline sentence embeddings (cosine), from BM25 over the label names (`bm25s`), or
from both (``hybrid``: the mean of the cosine and the per-guess max-normalised BM25 score).
"""

from __future__ import annotations

import hashlib
import json
import re

import numpy as np

from labelloop.programs.embeddings import DEFAULT_EMBEDDER, embed

RETRIEVERS = ("embeddings", "bm25", "hybrid")
_TOKEN = re.compile(r"\w+")


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def label_fingerprint(label_texts: list[str], embedder: str = DEFAULT_EMBEDDER) -> str:
    """A stable key for a label set's embeddings: changes when any label text or the embedder changes."""
    return hashlib.sha256(json.dumps([embedder, list(label_texts)]).encode()).hexdigest()[:16]


class LabelIndex:
    """Nearest-label search over a fixed label set.

    Args:
        names: the label names, in taxonomy order (a label's id is its position).
        vectors: (len(names), d) L2-normalised label embeddings; computed when omitted
            (callers that keep them across runs pass the stored array).
        retriever: ``embeddings``, ``bm25`` or ``hybrid``.
        embedder: the package carrying the sentence-embedding model.
    """

    def __init__(self, names: list[str], vectors: np.ndarray | None = None, *, retriever: str = "embeddings",
                 embedder: str = DEFAULT_EMBEDDER):
        if retriever not in RETRIEVERS:
            raise ValueError(f"retriever must be one of {RETRIEVERS}, got {retriever!r}")
        if not names:
            raise ValueError("a label index needs at least one label")
        self.names = list(names)
        self.retriever = retriever
        self.embedder = embedder
        self.vectors = None
        if retriever != "bm25":
            self.vectors = embed(self.names, embedder) if vectors is None else np.asarray(vectors, dtype=np.float32)
            if self.vectors.shape[0] != len(self.names):
                raise ValueError(f"expected {len(self.names)} label vectors, got {self.vectors.shape[0]}")
        self._bm25 = None
        if retriever != "embeddings":
            import bm25s

            self._bm25 = bm25s.BM25()
            self._bm25.index([_tokens(n) for n in self.names], show_progress=False)
            self._vocab = self._bm25.vocab_dict

    def __deepcopy__(self, memo):  # immutable and possibly large: DSPy's program copies share it
        return self

    def _bm25_scores(self, queries: list[str]) -> np.ndarray:
        out = np.zeros((len(queries), len(self.names)), dtype=np.float32)
        for i, query in enumerate(queries):
            ids = [t for t in _tokens(query) if t in self._vocab]
            if ids:
                scores = self._bm25.get_scores(ids)
                top = scores.max()
                out[i] = scores / top if top > 0 else scores
        return out

    def scores(self, queries: list[str]) -> np.ndarray:
        """(len(queries), len(names)) similarity of every query to every label."""
        if self.retriever == "bm25":
            return self._bm25_scores(queries)
        sims = embed(queries, self.embedder) @ self.vectors.T
        if self.retriever == "hybrid":
            sims = (sims + self._bm25_scores(queries)) / 2
        return sims

    def search(self, queries: list[str], n: int) -> list[tuple[str, float]]:
        """The n labels with the highest best-over-queries score, best first.

        >>> index = LabelIndex(["python programming", "cooking pasta", "team leadership"], retriever="bm25")
        >>> [name for name, _ in index.search(["write python code"], 2)][0]
        'python programming'
        """
        queries = [q for q in queries if q and q.strip()]
        if not queries:
            return []
        best = self.scores(queries).max(axis=0)
        n = min(n, len(self.names))
        top = np.argpartition(-best, n - 1)[:n]
        top = top[np.argsort(-best[top], kind="stable")]
        return [(self.names[i], float(best[i])) for i in top]
