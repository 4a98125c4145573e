"""Ranking and set metrics for multi-label predictions."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def rp_at_k(ranked: Sequence[str], gold: Iterable[str], k: int) -> float:
    """Rank-precision at k: gold labels among the top k, divided by min(k, number of gold labels).

    >>> rp_at_k(["a", "b", "c"], {"a", "c"}, 2)
    0.5
    >>> rp_at_k(["a", "b", "c"], {"a"}, 5)
    1.0
    """
    gold = set(gold)
    if not gold:
        return 0.0
    return sum(1 for label in list(ranked)[:k] if label in gold) / min(k, len(gold))


def mean_rp_at_k(rankings: Sequence[Sequence[str]], golds: Sequence[Iterable[str]], k: int) -> float:
    """RP@k averaged over records (records without gold labels are skipped)."""
    pairs = [(r, set(g)) for r, g in zip(rankings, golds, strict=True) if set(g)]
    return sum(rp_at_k(r, g, k) for r, g in pairs) / len(pairs) if pairs else 0.0
