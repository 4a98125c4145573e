"""Labeling-function analysis: coverage, overlaps, conflicts and accuracy on gold."""

from __future__ import annotations

import numpy as np
import pandas as pd

from labelloop.labelers.label_model import vote_counts
from labelloop.labelers.labels import ABSTAIN


def _polarities(L: np.ndarray, voted: np.ndarray) -> list[list[int]]:
    """Sorted distinct non-abstain votes of each labeler, without a sort of each column.

    Integer votes: ``vote_counts`` over the labelers (the label models' count of votes per class).
    Anything else (floats, negative codes): np.unique per column.
    """
    m = L.shape[1]
    if not (L.size and np.issubdtype(L.dtype, np.integer) and L.min() >= ABSTAIN):
        return [np.unique(L[voted[:, j], j]).tolist() for j in range(m)]
    seen = vote_counts(L.T, int(L.max()) + 1)  # (labelers, classes): how often each labeler gave each class
    return [np.flatnonzero(row).tolist() for row in seen]


def lf_summary(L: np.ndarray, names: list[str], *, L_dev: np.ndarray | None = None, y_dev=None,
               invalid: dict[str, int] | None = None) -> pd.DataFrame:
    """One row per labeler, in a few whole-matrix numpy passes, fast at a million records.

    Snorkel's LFAnalysis takes seconds there (sparse copies, a set and a confusion matrix per
    labeler); the figures here are the same: coverage, overlaps and conflicts equal its
    ``lf_coverages``, ``lf_overlaps`` and ``lf_conflicts``, polarity its ``lf_polarities``, and
    dev_accuracy its "Emp. Acc." on the dev records. Conflicts rest on one fact: a labeler that
    voted on a record disagrees with another voter there exactly when not every voter gave the
    record's largest vote, so one row reduction replaces a comparison with every other labeler.

    Args:
        L: (n, m) votes on the unlabeled records.
        names: the m labeler names.
        L_dev, y_dev: votes and gold label ids on dev records, for empirical accuracy.
        invalid: per labeler, LLM answers outside the allowed options (counted as abstains).

    Returns:
        A frame indexed by labeler: polarity, coverage, overlaps, conflicts, and when gold is given
        dev_coverage and dev_accuracy; ``invalid_answers`` when given.

    >>> L = np.array([[0, 0], [1, -1], [-1, 0]])
    >>> lf_summary(L, ["a", "b"])[["coverage", "overlaps", "conflicts"]].round(2).values.tolist()
    [[0.67, 0.33, 0.0], [0.67, 0.33, 0.0]]
    """
    L = np.asarray(L)
    if L.shape[1] != len(names):
        raise ValueError(f"L has {L.shape[1]} columns but {len(names)} labeler names were given")
    n, m = L.shape
    voted = L != ABSTAIN
    rows: dict[str, dict] = {name: {} for name in names}
    if n and m:
        n_voting = voted.sum(axis=1)
        high = L.max(axis=1)  # abstain (-1) is below every class: the largest vote wherever anyone voted
        conflicted = np.count_nonzero(L == high[:, None], axis=1) < n_voting  # some voter is below the largest vote
        # per-labeler counts of the records it voted on, that are overlapped, that are conflicted, in one product
        # (float64 sums of 0/1 are exact up to 2**53 records)
        counts = np.stack([np.ones(n), n_voting > 1, conflicted]) @ voted.astype(np.float64)
        coverage, overlaps, conflicts = counts / n
    else:
        coverage = overlaps = conflicts = np.zeros(m)
    for j, polarity in enumerate(_polarities(L, voted)):
        rows[names[j]].update(polarity=polarity, coverage=coverage[j], overlaps=overlaps[j], conflicts=conflicts[j])
    if L_dev is not None and y_dev is not None:
        L_dev = np.asarray(L_dev)
        dv = L_dev != ABSTAIN
        n_dev = dv.sum(axis=0)
        correct = (dv & (L_dev == np.asarray(y_dev).reshape(-1, 1))).sum(axis=0)
        dev_coverage = n_dev / len(L_dev) if len(L_dev) else np.zeros(m)
        with np.errstate(divide="ignore", invalid="ignore"):
            dev_accuracy = np.where(n_dev > 0, correct / n_dev, np.nan)
        for j, name in enumerate(names):
            rows[name].update(dev_coverage=dev_coverage[j], dev_accuracy=dev_accuracy[j])
    if invalid is not None:
        for name in names:
            rows[name]["invalid_answers"] = invalid.get(name, 0)
    return pd.DataFrame.from_dict(rows, orient="index")


def scores(y_true, y_pred, cardinality: int) -> dict:
    """Accuracy (abstains count as wrong), macro F1 and coverage.

    >>> scores([0, 1, 1], [0, 1, -1], 2)["accuracy"]
    0.667
    """
    from sklearn.metrics import f1_score

    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if len(y_true) == 0:
        return {"n": 0}
    f1 = f1_score(y_true, y_pred, labels=list(range(cardinality)), average="macro", zero_division=0)
    return {"n": int(len(y_true)), "accuracy": round(float((y_true == y_pred).mean()), 3),
            "macro_f1": round(float(f1), 3), "coverage": round(float((y_pred != ABSTAIN).mean()), 3)}
