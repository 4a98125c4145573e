"""Confidence that means something: calibration error, temperature scaling and abstain thresholds.

Pure functions over a student's probabilities and gold labels; ``labelloop.flows.run_project``
fits them on the gold dev records and scores them on test, ``labelloop.flows.predict`` applies them.

- ``ece``: expected calibration error of the top-class confidence (equal-width bins).
- ``fit_temperature`` / ``with_temperature``: one temperature for all classes, fitted on dev by
  log-loss (Guo et al., 2017). It never changes the argmax, only how sure the model says it is.
- ``abstain_threshold``: the lowest confidence a prediction needs so that the answered dev
  records reach a target precision, or so that a target share of them is answered.
- ``label_thresholds``: multi-label, one threshold per label, the one with the best F1 on dev.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar

GRID = np.linspace(0.05, 0.95, 19)  # the thresholds label_thresholds tries


def ece(P, y, bins: int = 10) -> float:
    """Expected calibration error: the mean over equal-width confidence bins of |accuracy - confidence|, by bin size.

    >>> round(ece(np.array([[0.9, 0.1], [0.8, 0.2], [0.4, 0.6]]), np.array([0, 0, 1])), 3)
    0.233
    """
    P, y = np.asarray(P, dtype=float), np.asarray(y, dtype=int)
    if not len(P):
        return 0.0
    confidence, correct = P.max(axis=1), (P.argmax(axis=1) == y).astype(float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            total += mask.mean() * abs(correct[mask].mean() - confidence[mask].mean())
    return float(total)


def with_temperature(P, temperature: float) -> np.ndarray:
    """Probabilities rescaled as softmax(log P / T): T > 1 softens them, T < 1 sharpens them.

    >>> with_temperature(np.array([[0.8, 0.2]]), 2.0).round(3).tolist()
    [[0.667, 0.333]]
    """
    logits = np.log(np.clip(np.asarray(P, dtype=float), 1e-12, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    out = np.exp(logits)
    return out / out.sum(axis=1, keepdims=True)


def log_loss(P, y) -> float:
    P = np.asarray(P, dtype=float)
    return float(-np.log(np.clip(P[np.arange(len(P)), np.asarray(y, dtype=int)], 1e-12, 1.0)).mean())


def fit_temperature(P, y, bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """The temperature with the lowest log-loss of ``with_temperature(P, T)`` against ``y`` (1.0 without records).

    >>> P, y = np.array([[0.99, 0.01], [0.99, 0.01], [0.01, 0.99], [0.99, 0.01]]), np.array([0, 0, 1, 1])
    >>> fit_temperature(P, y) > 1  # one confident mistake in four: soften
    True
    """
    P, y = np.asarray(P, dtype=float), np.asarray(y, dtype=int)
    if not len(P):
        return 1.0
    found = minimize_scalar(lambda t: log_loss(with_temperature(P, np.exp(t)), y),
                            bounds=tuple(np.log(bounds)), method="bounded")
    temperature = float(np.exp(found.x))
    return temperature if log_loss(with_temperature(P, temperature), y) < log_loss(P, y) else 1.0


def abstain_threshold(confidence, correct, *, precision: float | None = None, coverage: float | None = None) -> float:
    """The confidence a prediction needs to be answered, chosen on dev records.

    With ``precision``: the lowest threshold at which the answered records are at least that
    accurate (the highest confidence seen when no threshold reaches it: answer only the surest).
    With ``coverage``: the threshold that answers that share of the records.

    >>> conf, ok = np.array([0.95, 0.9, 0.8, 0.7, 0.6]), np.array([1, 1, 1, 0, 1])
    >>> float(abstain_threshold(conf, ok, precision=1.0)), float(abstain_threshold(conf, ok, coverage=0.4))
    (0.8, 0.9)
    """
    if (precision is None) == (coverage is None):
        raise ValueError("give exactly one of precision and coverage")
    confidence, correct = np.asarray(confidence, dtype=float), np.asarray(correct, dtype=float)
    if not len(confidence):
        return 0.0
    order = np.argsort(-confidence, kind="stable")
    sorted_conf, hits = confidence[order], np.cumsum(correct[order])
    if coverage is not None:
        answered = max(1, int(np.ceil(coverage * len(confidence))))
        return float(sorted_conf[answered - 1])
    answered_precision = hits / np.arange(1, len(confidence) + 1)
    ok = np.flatnonzero(answered_precision >= precision)
    # a cut between equal confidences answers all of them: keep only cuts at the last of a run of ties
    last_of_ties = np.r_[sorted_conf[1:] < sorted_conf[:-1], True]
    ok = ok[last_of_ties[ok]]
    return float(sorted_conf[ok[-1]] if len(ok) else sorted_conf[0])


def abstain_scores(P, y, threshold: float) -> dict:
    """Coverage (share answered) and precision (accuracy on the answered) of ``P`` at ``threshold``."""
    P, y = np.asarray(P, dtype=float), np.asarray(y, dtype=int)
    answered = P.max(axis=1) >= threshold
    correct = P.argmax(axis=1) == y
    return {"coverage": float(answered.mean()) if len(P) else 0.0,
            "precision": float(correct[answered].mean()) if answered.any() else None, "n": int(len(P))}


def label_thresholds(P, Y, grid=GRID) -> np.ndarray:
    """Multi-label: per label, the threshold on its probability with the best F1 on dev (0.5 for labels without gold).

    >>> P = np.array([[0.3, 0.9], [0.2, 0.8], [0.1, 0.7]]); Y = np.array([[1, 1], [1, 0], [0, 0]])
    >>> label_thresholds(P, Y).round(2).tolist()
    [0.15, 0.85]
    """
    P, Y = np.asarray(P, dtype=float), np.asarray(Y, dtype=bool)
    out = np.full(P.shape[1], 0.5)
    for j in range(P.shape[1]):
        if not Y[:, j].any():
            continue
        best = -1.0
        for t in grid:
            pred = P[:, j] >= t
            tp = (pred & Y[:, j]).sum()
            f1 = 2 * tp / max(pred.sum() + Y[:, j].sum(), 1)
            if f1 > best + 1e-12:
                best, out[j] = f1, t
    return out
