"""Retrieval at scale: ms per query over the 13,896 ESCO skills and over 100,000 labels, and memory.

The 100,000-label set is the ESCO skills plus synthetic labels (two ESCO skills joined; their
vectors are the normalised mean of the two, so no hour of embedding is spent on made-up names).
Embedding throughput is measured on a sample and reported as the one-off cost per label set.

    python benchmarks/retrieval_scale.py
"""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "datasets" / "esco"
CACHE = ROOT / "benchmarks" / ".cache" / "esco"


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _time_search(index, queries: list[list[str]], n: int = 30) -> float:
    index.search(queries[0], n)  # warm
    t = time.perf_counter()
    for guesses in queries:
        index.search(guesses, n)
    return 1000 * (time.perf_counter() - t) / len(queries)


def main() -> None:
    if not DATA.is_dir():
        sys.exit(f"{DATA} not found: this benchmark needs the shared datasets folder")
    from labelloop.flows.store import label_vectors
    from labelloop.programs.embeddings import embed
    from labelloop.programs.retrieval import LabelIndex

    names = [line.strip() for line in (DATA / "esco_skills.txt").read_text(encoding="utf-8").splitlines() if line.strip()]
    rng = np.random.default_rng(0)
    queries = [[names[i] for i in rng.choice(len(names), 8)] for _ in range(50)]  # 8 guesses per IRR query
    rows = []

    sample = [names[i] for i in rng.choice(len(names), 2000, replace=False)]
    t = time.perf_counter()
    embed(sample)
    per_s = len(sample) / (time.perf_counter() - t)
    print(f"embedding throughput: {per_s:.0f} labels/s -> one-off {len(names) / per_s:.0f} s for 13,896 labels, "
          f"{100_000 / per_s / 60:.1f} min for 100,000 (then stored per label set)")

    embed(queries[0])
    t = time.perf_counter()
    for guesses in queries:
        embed(guesses)
    embed_ms = 1000 * (time.perf_counter() - t) / len(queries)
    vectors = label_vectors(names, CACHE)
    before = _rss_mb()
    for retriever in ("embeddings", "bm25", "hybrid"):
        t = time.perf_counter()
        index = LabelIndex(names, vectors, retriever=retriever)
        build = time.perf_counter() - t
        rows.append((len(names), retriever, build, _time_search(index, queries)))

    k = 100_000 - len(names)
    a, b = rng.integers(0, len(names), k), rng.integers(0, len(names), k)
    big_names = names + [f"{names[i]} and {names[j]}" for i, j in zip(a, b)]
    mixed = vectors[a] + vectors[b]
    big_vectors = np.vstack([vectors, mixed / np.linalg.norm(mixed, axis=1, keepdims=True)]).astype(np.float32)
    for retriever in ("embeddings", "bm25", "hybrid"):
        t = time.perf_counter()
        index = LabelIndex(big_names, big_vectors, retriever=retriever)
        build = time.perf_counter() - t
        rows.append((len(big_names), retriever, build, _time_search(index, queries)))
    after = _rss_mb()

    print(f"\n{'labels':>8} {'retriever':<11}{'build s':>9}{'ms/query':>10}{'of which matching':>19}"
          f"   (query = 8 guesses, top 30; embedding the guesses: {embed_ms:.0f} ms)")
    for n, retriever, build, ms in rows:
        matching = ms - embed_ms if retriever != "bm25" else ms
        print(f"{n:>8,} {retriever:<11}{build:>9.2f}{ms:>10.1f}{matching:>19.1f}")
    print(f"\n100,000 label vectors: {big_vectors.nbytes / 1e6:.0f} MB; peak RSS grew {after - before:.0f} MB "
          f"to {after:.0f} MB over both index sizes (all three retrievers)")


if __name__ == "__main__":
    main()
