"""The distilled student: TF-IDF + logistic regression trained on the label model's probabilities."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import FeatureUnion, Pipeline

from programs.embeddings import DEFAULT_EMBEDDER

FEATURES = ("tfidf", "embeddings", "tfidf+embeddings")


class SentenceEmbedder(TransformerMixin, BaseEstimator):
    """Texts -> offline sentence embeddings. Holds only the package name: the weights stay in the package."""

    def __init__(self, package: str = DEFAULT_EMBEDDER):
        self.package = package

    def fit(self, X, y=None):
        return self

    def transform(self, X):
        from programs.embeddings import embed

        return embed(list(X), self.package)


def make_student(features: str = "tfidf+embeddings", max_features: int = 50_000, C: float = 4.0,
                 seed: int = 0) -> Pipeline:
    """A class-balanced logistic regression on TF-IDF word + character n-grams, sentence embeddings, or both."""
    if features not in FEATURES:
        raise ValueError(f"student features must be one of {FEATURES}, got {features!r}")
    parts = []
    if "tfidf" in features:
        parts += [("words", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, max_features=max_features)),
                  ("chars", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True,
                                            max_features=max_features))]
    if "embeddings" in features:
        parts.append(("embeddings", SentenceEmbedder()))
    clf = LogisticRegression(C=C, max_iter=2000, class_weight="balanced", random_state=seed)
    return Pipeline([("features", FeatureUnion(parts)), ("clf", clf)])


def fit_student(texts: list[str], P: np.ndarray, *, min_confidence: float = 0.0, student: Pipeline | None = None,
                seed: int = 0) -> Pipeline:
    """Train on soft labels: each record appears once per class, weighted by that class's probability.

    Args:
        texts: n training texts (records where every labeler abstained should already be removed).
        P: (n, k) label probabilities from the label model.
        min_confidence: drop records whose top probability is below this.
        student: the pipeline to fit; ``make_student()`` when omitted.

    Returns:
        The fitted pipeline; its ``classes_`` are the label ids that received weight.
    """
    P = np.asarray(P, dtype=float)
    if P.ndim != 2 or len(texts) != len(P):
        raise ValueError(f"expected P of shape ({len(texts)}, k), got {P.shape}")
    keep = P.max(axis=1) >= min_confidence
    texts, P = [t for t, k in zip(texts, keep) if k], P[keep]
    n, k = P.shape
    rows, cols = np.nonzero(P > 1e-6)
    if len(set(cols.tolist())) < 2:
        raise ValueError("the weak labels cover fewer than two classes; add labelers for the missing classes")
    student = student or make_student(seed=seed)
    student.fit([texts[i] for i in rows], cols, clf__sample_weight=P[rows, cols] * n / max(P[rows, cols].sum(), 1e-9))
    return student


def predict_proba_full(student: Pipeline, texts: list[str], cardinality: int) -> np.ndarray:
    """(n, cardinality) probabilities, with zeros for classes the student never saw."""
    out = np.zeros((len(texts), cardinality))
    out[:, student.classes_] = student.predict_proba(texts)
    return out
