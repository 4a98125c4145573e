"""Where an LLM budget is spent: how much LLM answers could change each record's label, and a round's pick.

Pure functions over label-model posteriors and votes: no store, no LLM. The rounds loop that asks
the LLM on the records picked here is ``labelloop.flows.budget``.

- ``entropy`` (multi-class) and ``binary_entropy`` (multi-label: the mean over labels of each
  label's yes/no entropy), scaled to [0, 1]: a record the label model is sure about gains little
  from more votes.
- ``disagreement`` and ``multilabel_disagreement``: the share of a record's votes that go against
  its most common vote. Records whose cheap labelers conflict are where an LLM answer decides.
- ``pick``: most of a round's budget by score (highest first, ties broken by a seeded draw), a
  ``random_share`` of it uniformly at random from the records left, so that a fixed share of what
  is asked stays a uniform sample of the pool (calibration and the label model see typical
  records, not only the hard ones).
- ``plateaued``: the rounds stop when the dev score has not gained over the last few rounds.
"""

from __future__ import annotations

import numpy as np

from labelloop.labelers.label_model import vote_counts


def entropy(P) -> np.ndarray:
    """Each row's entropy divided by log(k): 0 for a certain posterior, 1 for a uniform one.

    >>> entropy(np.array([[1.0, 0.0], [0.5, 0.5], [0.9, 0.1]])).round(3).tolist()
    [0.0, 1.0, 0.469]
    """
    P = np.clip(np.asarray(P, dtype=float), 0.0, 1.0)
    k = P.shape[1]
    if k < 2:
        return np.zeros(len(P))
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.where(P > 0, P * np.log(P), 0.0).sum(axis=1)
    return np.maximum(h, 0.0) / np.log(k)  # no -0.0


def binary_entropy(P) -> np.ndarray:
    """Multi-label: the mean over labels of each label's yes/no entropy (in bits, so in [0, 1]).

    >>> binary_entropy(np.array([[1.0, 0.0], [0.5, 0.0], [0.5, 0.5]])).round(3).tolist()
    [0.0, 0.5, 1.0]
    """
    P = np.clip(np.asarray(P, dtype=float), 0.0, 1.0)
    if P.shape[1] == 0:
        return np.zeros(len(P))
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -(np.where(P > 0, P * np.log2(P), 0.0) + np.where(P < 1, (1 - P) * np.log2(1 - P), 0.0))
    return np.maximum(h, 0.0).mean(axis=1)


def disagreement(L, cardinality: int) -> np.ndarray:
    """Share of a record's non-abstain votes that differ from its most common vote (0 without votes).

    >>> disagreement(np.array([[0, 0, 1], [1, -1, 1], [-1, -1, -1], [0, 1, -1]]), 2).round(3).tolist()
    [0.333, 0.0, 0.0, 0.5]
    """
    counts = vote_counts(np.asarray(L), cardinality)
    total = counts.sum(axis=1)
    top = counts.max(axis=1) if counts.shape[1] else np.zeros(len(total))
    return np.where(total > 0, 1 - top / np.maximum(total, 1), 0.0)


def multilabel_disagreement(votes: list) -> np.ndarray:
    """Multi-label votes (sparse (n, k), +1 / -1 / 0 per labeler): the mean over the labels a record got
    votes on of the minority share of its yes and no votes (0 without votes).

    >>> from scipy import sparse
    >>> a = sparse.csr_matrix(np.array([[1, 0], [1, 1], [0, 0]], dtype=np.int8))
    >>> b = sparse.csr_matrix(np.array([[-1, 0], [1, 1], [0, 0]], dtype=np.int8))
    >>> multilabel_disagreement([a, b]).tolist()
    [0.5, 0.0, 0.0]
    """
    if not votes:
        return np.zeros(0)
    pos = sum((V > 0).astype(np.float32) for V in votes).toarray()
    neg = sum((V < 0).astype(np.float32) for V in votes).toarray()
    total = pos + neg
    minority = np.divide(np.minimum(pos, neg), total, out=np.zeros_like(total), where=total > 0)
    voted = (total > 0).sum(axis=1)
    return np.where(voted > 0, minority.sum(axis=1) / np.maximum(voted, 1), 0.0)


def _affordable(order: np.ndarray, costs: np.ndarray, budget: int) -> np.ndarray:
    """The longest prefix of ``order`` whose costs add up to at most ``budget``."""
    if budget <= 0 or not len(order):
        return order[:0]
    return order[: int(np.searchsorted(np.cumsum(costs[order]), budget, side="right"))]


def pick(scores, costs, budget: int, *, random_share: float = 0.2, seed=0, eligible=None) -> tuple[np.ndarray, np.ndarray]:
    """The records one round asks: (picked by score, picked at random), as row indices.

    ``budget - round(budget * random_share)`` goes to the highest-scoring eligible records (ties
    broken by a seeded draw), what is left of the budget to records drawn uniformly at random from
    the eligible records not picked by score. A record costs ``costs[i]`` (its answers still to
    get); records with cost 0 are never picked, and the picks never cost more than ``budget``.

    Args:
        scores: (n,) how much LLM answers could change each record (higher first).
        costs: (n,) answers each record would take.
        budget: answers this round may take.
        random_share: the share of ``budget`` drawn at random (0: all by score, 1: all at random).
        seed: for the tie-breaks and the random draw (an int or a sequence of ints).
        eligible: (n,) records that may be picked (default: all).

    >>> by_score, at_random = pick(np.array([0.1, 0.9, 0.5, 0.8, 0.2]), np.ones(5, int), 3, random_share=0.0)
    >>> by_score.tolist(), at_random.tolist()
    ([1, 3, 2], [])
    """
    scores, costs = np.asarray(scores, dtype=float), np.asarray(costs, dtype=int)
    if not 0.0 <= random_share <= 1.0:
        raise ValueError(f"random_share must be in [0, 1], got {random_share}")
    ok = costs > 0 if eligible is None else np.asarray(eligible, dtype=bool) & (costs > 0)
    idx = np.flatnonzero(ok)
    rng = np.random.default_rng(seed)
    ties = rng.random(len(idx))
    order = idx[np.lexsort((ties, -scores[idx]))]  # highest score first; a seeded draw among equal scores
    by_score = _affordable(order, costs, int(budget) - int(round(budget * random_share)))
    rest = np.setdiff1d(idx, by_score)
    at_random = _affordable(rng.permutation(rest), costs, int(budget) - int(costs[by_score].sum()))
    return by_score, at_random


def plateaued(history: list[float | None], tolerance: float, patience: int = 2) -> bool:
    """Whether the last ``patience`` scores gained no more than ``tolerance`` over the best one before them.

    ``None`` (no gold dev records) never plateaus.

    >>> plateaued([0.80, 0.85, 0.85, 0.85], 0.005), plateaued([0.80, 0.85, 0.85, 0.86], 0.005)
    (True, False)
    >>> plateaued([0.8, 0.8], 0.005), plateaued([None, None, None], 0.005)
    (False, False)
    """
    if len(history) <= patience or any(s is None for s in history):
        return False
    return max(history[-patience:]) <= max(history[:-patience]) + tolerance
