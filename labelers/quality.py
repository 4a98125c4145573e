"""Likely-wrong labels: out-of-fold student probabilities, cleanlab's label quality scores, review picks.

Pure functions on arrays; ``labelloop.flows.review`` reads and writes the files around them.

The label model gives each covered record a label (its argmax) and a confidence. A second, independent
opinion comes from the student trained *without* that record: ``out_of_fold_proba`` retrains a fresh
student on k-1 folds of the soft labels and predicts the held-out fold. ``rank_label_issues`` scores
each record with cleanlab's label quality score (``cleanlab.rank.get_label_quality_scores``, the
probability the model gives the record's label by default) twice, once under the out-of-fold student
and once under the label model itself, and averages the two (``weight`` on the student). The score
returned is one minus that average, so higher means more likely wrong.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import numpy as np

# The student's share of the quality score: benchmarks/label_quality.py chose it on YouTube records apart from the
# benchmark's (flipped-label AUROC 0.894 at 0.9, 0.891 at 1.0, 0.824 at 0.5, 0.525 at 0: the label model's confidence
# alone says little about a wrong label; as a tie-breaker beside the student it helps a little).
WEIGHT = 0.9
METHOD = "self_confidence"  # cleanlab's quality score: the probability given to the record's label


def _folds(labels: np.ndarray, folds: int, seed: int) -> list[np.ndarray]:
    """Held-out index sets: stratified by ``labels`` when every label has ``folds`` records, else shuffled."""
    from sklearn.model_selection import KFold, StratifiedKFold

    n = len(labels)
    if labels.ndim == 1 and np.bincount(labels).min(initial=n) >= folds:
        split = StratifiedKFold(folds, shuffle=True, random_state=seed).split(np.zeros(n), labels)
    else:
        split = KFold(folds, shuffle=True, random_state=seed).split(np.zeros(n))
    return [held for _, held in split]


def out_of_fold_proba(texts: list[str], P: np.ndarray, make: Callable[[], object], folds: int = 5, seed: int = 0,
                      multilabel: bool = False) -> np.ndarray:
    """Each record's probabilities from a student that never saw it.

    The records are split into ``folds`` folds (stratified by the label model's label when every
    label has enough records); for each fold a fresh student (``make()``) is trained on the other
    folds' soft labels and predicts the held-out one.

    Args:
        texts: n texts (records no labeler covered should already be left out).
        P: (n, k) label probabilities: multi-class rows sum to one; multi-label entries are per label.
        make: builds a fresh, unfitted student (``labelloop.labelers.student.make_student``).
        folds: number of folds (at least 2; at most n).
        seed: the fold split's seed.
        multilabel: one-vs-rest students on label sets instead of one multi-class student.

    Returns:
        (n, k) probabilities; a class the training folds never gave weight gets 0 (multi-class).

    Raises:
        ValueError: fewer than two folds' worth of records, or a fold whose training part covers
            fewer than two classes.
    """
    from labelloop.labelers.student import fit_multilabel_student, fit_student, predict_proba_full

    P = np.asarray(P, dtype=float)
    n, k = P.shape
    if len(texts) != n:
        raise ValueError(f"expected {n} texts for P of shape {P.shape}, got {len(texts)}")
    folds = min(folds, n)
    if folds < 2:
        raise ValueError(f"out-of-fold probabilities need at least 2 records, got {n}")
    out = np.zeros((n, k))
    labels = P.argmax(axis=1) if not multilabel else np.zeros(n, dtype=int)
    for held in _folds(labels, folds, seed):
        train = np.setdiff1d(np.arange(n), held)
        train_texts, held_texts = [texts[i] for i in train], [texts[i] for i in held]
        if multilabel:
            student = fit_multilabel_student(train_texts, P[train], student=make(), seed=seed)
            out[held] = student.predict_proba(held_texts)
        else:
            student = fit_student(train_texts, P[train], student=make(), seed=seed)
            out[held] = predict_proba_full(student, held_texts, k)
    return out


def label_sets(P: np.ndarray, threshold: float = 0.5) -> list[list[int]]:
    """Multi-label: the label ids at or above ``threshold`` per record."""
    return [np.flatnonzero(row >= threshold).tolist() for row in np.asarray(P)]


def _quality(given, pred_probs: np.ndarray, method: str, multilabel: bool) -> np.ndarray:
    """cleanlab's label quality score of ``given`` under ``pred_probs`` (1: surely right, 0: surely wrong)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if multilabel:
            from cleanlab.multilabel_classification.rank import get_label_quality_scores

            return np.asarray(get_label_quality_scores(given, _clip(pred_probs), method=method), dtype=float)
        from cleanlab.rank import get_label_quality_scores

        return np.asarray(get_label_quality_scores(np.asarray(given), _normalise(pred_probs), method=method), dtype=float)


def _normalise(P: np.ndarray) -> np.ndarray:
    """Rows that sum to one (cleanlab checks it); an all-zero row becomes uniform."""
    P = np.clip(np.asarray(P, dtype=float), 0.0, 1.0)
    total = P.sum(axis=1, keepdims=True)
    return np.where(total > 0, P / np.where(total > 0, total, 1.0), 1.0 / P.shape[1])


def _clip(P: np.ndarray) -> np.ndarray:
    return np.clip(np.asarray(P, dtype=float), 0.0, 1.0)


def given_labels(P_label_model: np.ndarray, multilabel: bool = False):
    """The labels the label model gives: its argmax (multi-class) or its labels at >= 0.5 (multi-label)."""
    P = np.asarray(P_label_model, dtype=float)
    return label_sets(P) if multilabel else P.argmax(axis=1)


def rank_label_issues(P_label_model: np.ndarray, P_oof: np.ndarray, *, weight: float = WEIGHT, method: str = METHOD,
                      multilabel: bool = False, given=None) -> np.ndarray:
    """How likely each record's label is wrong: higher = more likely wrong, in [0, 1].

    The label is ``given`` (default: the label model's argmax, or its label set at >= 0.5 for
    multi-label). cleanlab scores it under the out-of-fold student (``P_oof``) and under the label
    model (``P_label_model``); the score is ``1 - (weight * q_student + (1 - weight) * q_label_model)``.
    ``weight=1`` ranks by the student alone, ``weight=0`` by the label model's own confidence.

    >>> P = np.array([[0.9, 0.1], [0.8, 0.2], [0.6, 0.4]])
    >>> S = np.array([[0.95, 0.05], [0.1, 0.9], [0.7, 0.3]])
    >>> np.argsort(-rank_label_issues(P, S)).tolist()  # the student disagrees on the second record
    [1, 2, 0]
    """
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"weight must be in [0, 1], got {weight}")
    P_label_model, P_oof = np.asarray(P_label_model, dtype=float), np.asarray(P_oof, dtype=float)
    if P_label_model.shape != P_oof.shape:
        raise ValueError(f"P_label_model {P_label_model.shape} and P_oof {P_oof.shape} differ in shape")
    if not len(P_label_model):
        return np.zeros(0)
    given = given_labels(P_label_model, multilabel) if given is None else given
    quality = np.zeros(len(P_label_model))
    if weight > 0:
        quality += weight * _quality(given, P_oof, method, multilabel)
    if weight < 1:
        quality += (1 - weight) * _quality(given, P_label_model, method, multilabel)
    return 1.0 - quality


def find_issues(P_label_model: np.ndarray, P_oof: np.ndarray, *, multilabel: bool = False, given=None) -> np.ndarray:
    """Boolean mask of the records cleanlab's ``find_label_issues`` flags (confident learning with per-class
    thresholds) for the label model's labels (or ``given``) under the out-of-fold student's probabilities.

    Only the out-of-fold opinion goes in: the label model's own probabilities made the labels, and mixing
    them in lifts every given label and hides the issues (on the synthetic set of the tests, 1 flipped
    label of 9 flagged with a tenth of them mixed in, 8 of 9 without). Multi-class goes through
    ``flag_label_issues`` (``prune_by_noise_rate``, cleanlab's default); a refused input flags nothing.
    """
    P_label_model, P_oof = np.asarray(P_label_model, dtype=float), np.asarray(P_oof, dtype=float)
    given = given_labels(P_label_model, multilabel) if given is None else given
    if not multilabel:
        return flag_label_issues(given, P_oof)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            from cleanlab.multilabel_classification.filter import find_label_issues

            # n_jobs=1: cleanlab's worker pool loses its globals in a Prefect-served process (NameError)
            return np.asarray(find_label_issues(given, _clip(P_oof), n_jobs=1), dtype=bool)
        except (ValueError, AssertionError, IndexError):  # a class with too few records for confident learning
            return np.zeros(len(P_label_model), dtype=bool)


FILTER_BY = "prune_by_noise_rate"  # cleanlab's default confident-learning filter


def flag_label_issues(given, pred_probs: np.ndarray, *, filter_by: str = FILTER_BY) -> tuple[np.ndarray, str | None]:
    """Multi-class: cleanlab's ``find_label_issues`` (confident learning) on ``given`` label ids under
    ``pred_probs`` (rows are normalised to sum to one); the one place that calls it.

    Returns:
        (boolean mask of the flagged records, None), or (all False, why) when cleanlab refuses the input:
        e.g. the labels hold a single class other than the first, or a class has too few records.
    """
    given = np.asarray(given)
    with warnings.catch_warnings():  # small sets: cleanlab warns about classes with few labels
        warnings.simplefilter("ignore")
        try:
            from cleanlab.filter import find_label_issues

            # n_jobs=1: cleanlab's worker pool loses its globals in a Prefect-served process (NameError)
            return np.asarray(find_label_issues(given, _normalise(pred_probs), filter_by=filter_by, n_jobs=1),
                              dtype=bool), None
        except (ValueError, AssertionError, IndexError) as exc:  # a class with too few records for confident learning
            return np.zeros(len(given), dtype=bool), f"{type(exc).__name__}: {exc}".strip()


def auroc(score: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of ``score`` for the boolean ``positive`` (ties count half).

    >>> auroc(np.array([0.9, 0.8, 0.1, 0.2]), np.array([True, False, False, False]))
    1.0
    """
    from scipy.stats import rankdata

    score, positive = np.asarray(score, dtype=float), np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if not n_pos or not n_neg:
        return float("nan")
    ranks = rankdata(score)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def precision_at(score: np.ndarray, positive: np.ndarray, share: float) -> float:
    """Share of positives among the ``share`` highest-scored records (at least one record).

    >>> precision_at(np.array([0.9, 0.8, 0.1, 0.2]), np.array([True, False, False, False]), 0.25)
    1.0
    """
    top = np.argsort(-np.asarray(score, dtype=float), kind="stable")[:max(1, round(share * len(score)))]
    return float(np.asarray(positive, dtype=bool)[top].mean())


def margins(P: np.ndarray, multilabel: bool = False) -> np.ndarray:
    """How sure the label model is: top-two probability margin (multi-class), or the smallest
    ``|2p - 1|`` over labels (multi-label: the label decision closest to a coin flip).

    >>> margins(np.array([[0.5, 0.3, 0.2], [0.9, 0.05, 0.05]])).round(2).tolist()
    [0.2, 0.85]
    """
    P = np.asarray(P, dtype=float)
    if multilabel:
        return np.abs(2 * P - 1).min(axis=1) if P.shape[1] else np.ones(len(P))
    top = np.sort(P, axis=1)[:, ::-1]
    return top[:, 0] - (top[:, 1] if P.shape[1] > 1 else 0.0)


def disagreement(P_label_model: np.ndarray, P_student: np.ndarray, multilabel: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Where the student and the label model disagree, and by how much.

    Returns:
        (mask, strength): multi-class, the argmaxes differ and strength is the total variation
        distance between the two distributions; multi-label, the label sets (>= 0.5) differ and
        strength is the largest per-label probability gap.
    """
    A, B = np.asarray(P_label_model, dtype=float), np.asarray(P_student, dtype=float)
    if multilabel:
        return ((A >= 0.5) != (B >= 0.5)).any(axis=1), np.abs(A - B).max(axis=1, initial=0.0)
    return A.argmax(axis=1) != B.argmax(axis=1), 0.5 * np.abs(A - B).sum(axis=1)


def select_diverse(order: np.ndarray, groups: list, budget: int, texts: list[str] | None = None) -> list[int]:
    """Pick ``budget`` records from ``order`` (indices, best first), spread over ``groups``.

    First pass: in rank order, each group (e.g. the suggested label) takes at most
    ``ceil(budget / number of groups among the candidates)`` records. Second pass: slots the first
    left free go to the next best records whatever their group. A text seen already (same text,
    case and spacing aside) is never picked twice. Returns the picks in rank order.

    >>> select_diverse(np.array([0, 1, 2, 3]), ["a", "a", "a", "b"], 2)
    [0, 3]
    """
    order = [int(i) for i in order]
    if budget <= 0 or not order:
        return []
    keys = {i: " ".join(texts[i].lower().split()) for i in order} if texts is not None else {i: i for i in order}
    present = {_group_key(groups[i]) for i in order}
    quota = math.ceil(budget / max(len(present), 1))
    taken, seen, per_group = [], set(), {}
    for strict in (True, False):
        for i in order:
            if len(taken) >= budget:
                break
            if keys[i] in seen:
                continue
            g = _group_key(groups[i])
            if strict and per_group.get(g, 0) >= quota:
                continue
            taken.append(i)
            seen.add(keys[i])
            per_group[g] = per_group.get(g, 0) + 1
    rank = {i: r for r, i in enumerate(order)}
    return sorted(taken, key=rank.__getitem__)


def _group_key(group):
    return tuple(group) if isinstance(group, (list, tuple, np.ndarray)) else group
