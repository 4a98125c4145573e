"""Labeling-function analysis: coverage, overlaps, conflicts and accuracy on gold."""

from __future__ import annotations

import numpy as np
import pandas as pd

from labelloop.labelers.labels import ABSTAIN


def lf_summary(L: np.ndarray, names: list[str], *, L_dev: np.ndarray | None = None, y_dev=None,
               invalid: dict[str, int] | None = None) -> pd.DataFrame:
    """One row per labeler, computed with vectorised numpy (Snorkel's version loops in Python).

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
    voted = L != ABSTAIN
    n_voting = voted.sum(axis=1)
    rows = {}
    for j, name in enumerate(names):
        col, v = L[:, j], voted[:, j]
        others = L[:, [k for k in range(len(names)) if k != j]]
        disagree = ((others != ABSTAIN) & (others != col[:, None])).any(axis=1) if others.size else np.zeros(len(L), bool)
        row = {
            "polarity": sorted(set(col[v].tolist())),
            "coverage": v.mean() if len(L) else 0.0,
            "overlaps": (v & (n_voting > 1)).mean() if len(L) else 0.0,
            "conflicts": (v & disagree).mean() if len(L) else 0.0,
        }
        if L_dev is not None and y_dev is not None:
            dv = L_dev[:, j] != ABSTAIN
            row["dev_coverage"] = dv.mean() if len(dv) else 0.0
            row["dev_accuracy"] = (L_dev[dv, j] == np.asarray(y_dev)[dv]).mean() if dv.any() else np.nan
        if invalid is not None:
            row["invalid_answers"] = invalid.get(name, 0)
        rows[name] = row
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
