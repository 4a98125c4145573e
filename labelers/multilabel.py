"""Multi-label weak supervision: votes on sets of labels, one binary label model per label, scores.

Each labeler's votes on a split are an (n, k) sparse int8 matrix: +1 "the label applies", -1 "it
does not", 0 abstain. Single-label labelers (keywords, regexes, prompted questions, Python LFs)
vote +1 on their label. For label j the binary label matrix holds the labelers that voted on j;
Snorkel's LabelModel denoises it where at least three labelers vote on j, majority vote elsewhere.
A record nobody voted on for label j gets probability 0 for it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import sparse

from labelloop.labelers.label_model import LabelModelWrapper
from labelloop.labelers.labels import ABSTAIN
from labelloop.programs.metrics import rp_at_k


def gold_matrix(gold_sets: list[list[int]], k: int) -> np.ndarray:
    """(n, k) boolean indicator of gold label ids."""
    Y = np.zeros((len(gold_sets), k), dtype=bool)
    for i, ids in enumerate(gold_sets):
        Y[i, list(ids)] = True
    return Y


def label_prevalence(Y: np.ndarray, smoothing: float = 1.0) -> np.ndarray:
    """Per-label share of records that have it, smoothed (add-``smoothing``) and kept inside (0, 1)."""
    return (Y.sum(axis=0) + smoothing) / (len(Y) + 2 * smoothing)


def _binary_column(V: sparse.csr_matrix, j: int) -> np.ndarray:
    """Snorkel coding of one label's votes: 1 present, 0 absent, -1 abstain."""
    col = V[:, j].toarray().ravel()
    return np.where(col > 0, 1, np.where(col < 0, 0, ABSTAIN))


class MultiLabelModel:
    """One binary label model per label (Snorkel where >= ``min_labelers`` vote on it, else majority).

    Args:
        kind: ``snorkel`` or ``majority`` (majority everywhere).
        seed: Snorkel's seed.
        min_labelers: the fewest labelers voting on a label for Snorkel to be used (Snorkel needs 3).
    """

    def __init__(self, kind: str = "snorkel", seed: int = 0, min_labelers: int = 3):
        if kind not in ("snorkel", "majority"):
            raise ValueError(f"label model must be snorkel or majority, got {kind!r}")
        self.kind, self.seed, self.min_labelers = kind, seed, max(3, min_labelers)
        self.models_: dict[int, tuple[list[int], LabelModelWrapper]] = {}

    def fit(self, votes: list[sparse.csr_matrix], prevalence: np.ndarray | None = None) -> MultiLabelModel:
        """Fit Snorkel on every label enough labelers vote on; ``prevalence`` (per label) sets its class balance."""
        self.models_ = {}
        if self.kind == "majority" or not votes:
            return self
        voted = np.stack([np.asarray((abs(V) > 0).sum(axis=0)).ravel() > 0 for V in votes])  # (m, k)
        for j in np.flatnonzero(voted.sum(axis=0) >= self.min_labelers):
            cols = np.flatnonzero(voted[:, j]).tolist()
            L = np.stack([_binary_column(votes[c], j) for c in cols], axis=1)
            if not (L == 1).any():
                continue
            balance = None if prevalence is None else np.array([1 - prevalence[j], prevalence[j]])
            self.models_[int(j)] = (cols, LabelModelWrapper(cardinality=2, seed=self.seed).fit(L, class_balance=balance))
        return self

    def predict_proba(self, votes: list[sparse.csr_matrix]) -> np.ndarray:
        """(n, k) probability that each label applies."""
        pos = sum((V > 0).astype(np.float32) for V in votes)
        neg = sum((V < 0).astype(np.float32) for V in votes)
        total = (pos + neg).toarray()
        P = np.divide(pos.toarray(), total, out=np.zeros_like(total), where=total > 0)  # majority vote share
        for j, (cols, model) in self.models_.items():
            L = np.stack([_binary_column(votes[c], j) for c in cols], axis=1)
            covered = (L != ABSTAIN).any(axis=1)
            P[covered, j] = model.predict_proba(L[covered])[:, 1]
        return P

    @property
    def labels_with_snorkel(self) -> int:
        return len(self.models_)


def rankings(P: np.ndarray, names, k: int = 10) -> list[list[str]]:
    """The k most probable label names per record (labels with probability 0 are left out)."""
    names = np.asarray(names, dtype=object)
    top = np.argsort(-P, axis=1, kind="stable")[:, :k]
    return [[names[j] for j in row if P[i, j] > 0] for i, row in enumerate(top)]


def multilabel_scores(Y: np.ndarray, P: np.ndarray, names, threshold: float = 0.5) -> dict:
    """Micro / macro F1 of the labels with probability >= threshold, and RP@5 / RP@10 of the ranking.

    Macro F1 averages over labels that occur in the gold records or the predictions.

    >>> Y = np.array([[1, 0, 1], [0, 1, 0]], dtype=bool)
    >>> P = np.array([[0.9, 0.1, 0.6], [0.2, 0.4, 0.0]])
    >>> s = multilabel_scores(Y, P, ["a", "b", "c"]); (s["micro_f1"], s["rp5"])
    (0.8, 1.0)
    """
    from sklearn.metrics import f1_score

    Y = np.asarray(Y, dtype=bool)
    pred = np.asarray(P) >= threshold
    used = Y.any(axis=0) | pred.any(axis=0)
    gold_names = [[names[j] for j in np.flatnonzero(row)] for row in Y]
    ranked = rankings(np.asarray(P, dtype=float), names, 10)
    has_gold = [bool(g) for g in gold_names]
    rp = {k: float(np.mean([rp_at_k(r, g, k) for r, g, h in zip(ranked, gold_names, has_gold) if h])) if any(has_gold) else 0.0
          for k in (5, 10)}
    def f1(average: str) -> float:
        return round(float(f1_score(Y[:, used], pred[:, used], average=average, zero_division=0)), 3) if used.any() else 0.0

    return {"n": int(len(Y)), "micro_f1": f1("micro"), "macro_f1": f1("macro"),
            "rp5": round(rp[5], 3), "rp10": round(rp[10], 3),
            "labels_per_record": round(float(pred.sum(axis=1).mean()), 2) if len(Y) else 0.0}


def multilabel_summary(votes: list[sparse.csr_matrix], names: list[str], *, votes_dev: list[sparse.csr_matrix] | None = None,
                       Y_dev: np.ndarray | None = None, invalid: dict[str, int] | None = None) -> pd.DataFrame:
    """One row per labeler: coverage, labels per covered record, overlaps and conflicts with others,
    and on gold dev records the precision and recall of its positive votes."""
    if len(votes) != len(names):
        raise ValueError(f"{len(votes)} vote matrices but {len(names)} labeler names")
    positives = [(V > 0).astype(np.int32) for V in votes]
    negatives = [(V < 0).astype(np.int32) for V in votes]
    all_pos, all_neg = sum(positives), sum(negatives)  # per (record, label): how many labelers said yes / no
    rows = {}
    for j, name in enumerate(names):
        pos, n = positives[j], positives[j].shape[0]
        covered = np.asarray(pos.sum(axis=1)).ravel() > 0
        others_pos, others_neg = all_pos - pos, all_neg - negatives[j]
        overlap = np.asarray(pos.multiply(others_pos).sum(axis=1)).ravel() > 0
        conflict = (np.asarray(pos.multiply(others_neg).sum(axis=1)).ravel() > 0) | \
                   (np.asarray(negatives[j].multiply(others_pos).sum(axis=1)).ravel() > 0)
        row = {"coverage": covered.mean() if n else 0.0,
               "labels_per_record": float(pos.sum() / covered.sum()) if covered.any() else 0.0,
               "overlaps": overlap.mean() if n else 0.0, "conflicts": conflict.mean() if n else 0.0}
        if votes_dev is not None and Y_dev is not None:
            dev_pos = (votes_dev[j] > 0).toarray()
            hits = (dev_pos & Y_dev).sum()
            row["dev_coverage"] = dev_pos.any(axis=1).mean() if len(dev_pos) else 0.0
            row["dev_precision"] = hits / dev_pos.sum() if dev_pos.sum() else np.nan
            row["dev_recall"] = hits / Y_dev.sum() if Y_dev.sum() else np.nan
        if invalid is not None:
            row["invalid_answers"] = invalid.get(name, 0)
        rows[name] = row
    return pd.DataFrame.from_dict(rows, orient="index")
