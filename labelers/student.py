"""The distilled student: TF-IDF + logistic regression trained on the label model's probabilities."""

from __future__ import annotations

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline


def make_student(max_features: int = 50_000, C: float = 4.0, seed: int = 0) -> Pipeline:
    """A word + character n-gram TF-IDF and a class-balanced logistic regression."""
    from sklearn.pipeline import FeatureUnion

    features = FeatureUnion([
        ("words", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1, max_features=max_features)),
        ("chars", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, max_features=max_features)),
    ])
    clf = LogisticRegression(C=C, max_iter=2000, class_weight="balanced", random_state=seed)
    return Pipeline([("features", features), ("clf", clf)])


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
