"""Denoise votes with the label model and distil them into the student; export it safely with skops."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import skops.io as sio
from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from sklearn.pipeline import Pipeline

from flows.config import ConfigError
from flows.io import atomic_path
from labelers.label_model import estimate_class_balance, make_label_model
from labelers.labels import ABSTAIN
from labelers.multilabel import MultiLabelModel, gold_matrix, label_prevalence
from labelers.student import fit_multilabel_student, fit_student, make_student

# The only types a labelloop student file may contain besides skops' defaults.
TRUSTED_TYPES = {
    "sklearn.pipeline.FeatureUnion", "sklearn.feature_extraction.text.TfidfVectorizer",
    "sklearn.feature_extraction.text.TfidfTransformer", "builtins.str", "numpy.float64", "numpy.int64",
    "numpy.dtype", "builtins.dict", "builtins.list", "builtins.tuple", "builtins.type",
    "labelers.student.SentenceEmbedder", "labelers.student.SoftOneVsRest",
}


@task(cache_policy=NO_CACHE)
def fit_label_model(kind: str, L: np.ndarray, cardinality: int, y_dev=None, seed: int = 0):
    """Fit the configured label model and majority vote; class balance comes from gold dev labels when given."""
    balance = estimate_class_balance(y_dev, cardinality) if y_dev is not None and len(y_dev) else None
    if kind == "snorkel" and L.shape[1] < 3:
        kind = "majority"  # Snorkel refuses fewer than three labelers
    model = make_label_model(kind, cardinality, seed).fit(L, class_balance=balance)
    majority = make_label_model("majority", cardinality, seed).fit(L, class_balance=balance)
    return model, majority, kind


@task(cache_policy=NO_CACHE)
def fit_multilabel_model(kind: str, V: list, cardinality: int, y_dev=None, seed: int = 0):
    """One binary label model per label, and majority vote; label prevalence comes from gold dev labels."""
    prevalence = label_prevalence(gold_matrix(y_dev, cardinality)) if y_dev else None
    model = MultiLabelModel(kind, seed).fit(V, prevalence)
    return model, MultiLabelModel("majority", seed), kind


@task(cache_policy=NO_CACHE)
def train_multilabel_on_probs(texts: list[str], P: np.ndarray, covered: np.ndarray, *, features: str, max_features: int,
                              C: float, seed: int) -> Pipeline:
    """Train the one-vs-rest student on records where at least one labeler voted."""
    if covered.sum() < 2:
        raise ConfigError(f"only {int(covered.sum())} record(s) got any vote; add labelers or data before training")
    try:
        return fit_multilabel_student([t for t, c in zip(texts, covered) if c], P[covered], seed=seed,
                                      student=make_student(features, max_features=max_features, C=C, seed=seed, multilabel=True))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


@task(cache_policy=NO_CACHE)
def train_on_probs(texts: list[str], P: np.ndarray, covered: np.ndarray, *, features: str, max_features: int,
                   C: float, min_confidence: float, seed: int) -> Pipeline:
    """Train the student on records where at least one labeler voted."""
    if covered.sum() < 2:
        raise ConfigError(f"only {int(covered.sum())} record(s) got any vote; add labelers or data before training")
    return fit_student([t for t, c in zip(texts, covered) if c], P[covered], min_confidence=min_confidence,
                       student=make_student(features, max_features=max_features, C=C, seed=seed), seed=seed)


def save_student(student: Pipeline, path: Path) -> Path:
    with atomic_path(path) as tmp:
        sio.dump(student, tmp)
    return path


def load_student(path: Path) -> Pipeline:
    """Load a student file, refusing any type outside the short list a labelloop student contains."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"model file {path} does not exist")
    try:
        unknown = set(sio.get_untrusted_types(file=path))
    except Exception as exc:
        raise ConfigError(f"{path} is not a skops model file: {exc}") from None
    refused = sorted(unknown - TRUSTED_TYPES)
    if refused:
        raise ConfigError(f"{path} contains types a labelloop student never holds: {refused}; refusing to load it")
    return sio.load(path, trusted=sorted(unknown))


@flow(name="train-student")
def train_student(texts: list[str], L: np.ndarray, cardinality: int, *, label_model: str = "snorkel", y_dev=None,
                  features: str = "tfidf+embeddings", max_features: int = 50_000, C: float = 4.0, min_confidence: float = 0.0,
                  seed: int = 0):
    """Label model -> probabilistic labels -> student.

    Returns:
        (student, label model, majority vote, P, the label model kind actually used).
    """
    model, majority, kind = fit_label_model(label_model, L, cardinality, y_dev, seed)
    P = model.predict_proba(L)
    covered = (L != ABSTAIN).any(axis=1)
    student = train_on_probs(texts, P, covered, features=features, max_features=max_features, C=C,
                             min_confidence=min_confidence, seed=seed)
    return student, model, majority, P, kind
