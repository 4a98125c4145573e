"""The distilled student: TF-IDF + logistic regression trained on the label model's probabilities."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import FeatureUnion, Pipeline

from labelloop.programs.embeddings import DEFAULT_EMBEDDER

FEATURES = ("tfidf", "embeddings", "tfidf+embeddings")


class SentenceEmbedder(TransformerMixin, BaseEstimator):
    """Texts -> offline sentence embeddings. Holds only the package name: the weights stay in the package."""

    def __init__(self, package: str = DEFAULT_EMBEDDER):
        self.package = package

    def fit(self, X, y=None):
        return self

    def transform(self, X):
        from labelloop.programs.embeddings import embed

        return embed(list(X), self.package)


class SoftOneVsRest(ClassifierMixin, BaseEstimator):
    """Multi-label student: one logistic regression per label, trained on that label's probability.

    Each record appears twice per label, as positive with weight p and negative with weight 1 - p.
    Labels with too little evidence either way (less than ``min_weight`` total probability on one
    side) get no model and a constant probability: their mean over the training records.
    """

    def __init__(self, C: float = 4.0, min_weight: float = 1.0, seed: int = 0):
        self.C, self.min_weight, self.seed = C, min_weight, seed

    def fit(self, X, P):
        P = np.asarray(P, dtype=float)
        n, k = P.shape
        self.n_labels_ = k
        self.prior_ = P.mean(axis=0)
        self.estimators_, self.labels_ = [], []
        X2 = _stack_rows(X, X)
        for j in range(k):
            p = P[:, j]
            if p.sum() < self.min_weight or (1 - p).sum() < self.min_weight:
                continue
            clf = LogisticRegression(C=self.C, max_iter=2000, class_weight="balanced", random_state=self.seed)
            clf.fit(X2, np.r_[np.ones(n), np.zeros(n)], sample_weight=np.r_[p, 1 - p] + 1e-9)
            self.estimators_.append(clf)
            self.labels_.append(j)
        self.labels_ = np.array(self.labels_, dtype=int)
        return self

    def predict_proba(self, X) -> np.ndarray:
        """(n, k) probability that each label applies."""
        out = np.tile(self.prior_, (X.shape[0], 1))
        for j, clf in zip(self.labels_, self.estimators_):
            out[:, j] = clf.predict_proba(X)[:, 1]
        return out

    def predict(self, X) -> np.ndarray:
        return self.predict_proba(X) >= 0.5


def _stack_rows(a, b):
    from scipy import sparse

    return sparse.vstack([a, b]).tocsr() if sparse.issparse(a) else np.vstack([a, b])


def make_student(features: str = "tfidf+embeddings", max_features: int = 50_000, C: float = 4.0,
                 seed: int = 0, multilabel: bool = False) -> Pipeline:
    """A class-balanced logistic regression on TF-IDF word + character n-grams, sentence embeddings, or both.

    With ``multilabel`` the classifier is one logistic regression per label (``SoftOneVsRest``).
    """
    if features not in FEATURES:
        raise ValueError(f"student features must be one of {FEATURES}, got {features!r}")
    parts = []
    if "tfidf" in features:
        parts += [("words", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, max_features=max_features)),
                  ("chars", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True,
                                            max_features=max_features))]
    if "embeddings" in features:
        parts.append(("embeddings", SentenceEmbedder()))
    clf = SoftOneVsRest(C=C, seed=seed) if multilabel else \
        LogisticRegression(C=C, max_iter=2000, class_weight="balanced", random_state=seed)
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


def predict_proba_full(student: Pipeline, texts: list[str], cardinality: int, temperature: float = 1.0) -> np.ndarray:
    """(n, cardinality) probabilities, with zeros for classes the student never saw; ``temperature`` rescales
    the probabilities of the classes it saw (``labelloop.labelers.calibration.with_temperature``)."""
    from labelloop.labelers.calibration import with_temperature

    out = np.zeros((len(texts), cardinality))
    P = student.predict_proba(texts)
    out[:, student.classes_] = P if temperature == 1.0 else with_temperature(P, temperature)
    return out


def fit_multilabel_student(texts: list[str], P: np.ndarray, *, student: Pipeline | None = None, seed: int = 0) -> Pipeline:
    """Train the one-vs-rest student on (n, k) label probabilities."""
    P = np.asarray(P, dtype=float)
    if P.ndim != 2 or len(texts) != len(P):
        raise ValueError(f"expected P of shape ({len(texts)}, k), got {P.shape}")
    student = student or make_student(seed=seed, multilabel=True)
    student.fit(list(texts), P)
    if not len(student[-1].labels_):
        raise ValueError("no label has enough weak-label evidence to train on; add labelers or data")
    return student
