"""Which embedding forms better bootstrap groups: the texts or their summaries? (the `bootstrap.group_by` setting)

Summarises the example project's 120 labelled dev and test messages with the bootstrap's summary
program (embedded model; answers kept in benchmarks/.cache/taxonomy, shared with
benchmarks/taxonomy.py), then, over seeded draws of `--sample-size` records, clusters them with
k-means on MiniLM embeddings of the texts, of the summaries, and of both, exactly as the
bootstrap does, and compares the clusters with the gold classes: purity (share of records in
their cluster's majority class), adjusted Rand index, and how many gold classes are the majority
of at least one cluster, and how many gold classes the clusters themselves recover, scored as the
taxonomy benchmark scores labels (the cluster that gets most of a class's records has over half of
its records from that class): what perfect names for these groups could reach.

    python benchmarks/taxonomy_clusters.py --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--sample-size", type=int, default=48)
    parser.add_argument("--groups", type=int, nargs="+", default=[5, 8])
    parser.add_argument("--draws", type=int, default=10)
    parser.add_argument("--summary-words", type=int, default=20)
    args = parser.parse_args()

    import numpy as np
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score
    from taxonomy import CACHE, EXAMPLE, USE_CASE, mutual_majority

    from labelloop.flows.bootstrap import summarise
    from labelloop.flows.config import BootstrapSpec
    from labelloop.flows.store import VoteStore, lm_key
    from labelloop.programs.embeddings import embed
    from labelloop.programs.lm import LMSpec

    rows = [json.loads(line) for name in ("dev.jsonl", "test.jsonl") for line in (EXAMPLE / name).open(encoding="utf-8")]
    spec = BootstrapSpec(use_case=USE_CASE, summary_words=args.summary_words)
    lm_spec = LMSpec(model="local", n_threads=args.threads)  # as the taxonomy benchmark's config: answers are shared
    CACHE.mkdir(parents=True, exist_ok=True)
    store = VoteStore(CACHE / ".labelloop" / "votes.sqlite")
    try:
        summaries, calls = summarise([(r["id"], r["text"]) for r in rows], spec, lm_spec.make(), store, lm_key(lm_spec), True)
    finally:
        store.close()
    print(f"summaries: {calls} LLM calls ({len(rows) - calls} from the cache)")

    gold = np.array([r["label"] for r in rows])
    texts, sums = embed([r["text"] for r in rows]), embed([summaries[r["id"]]["summary"] for r in rows])
    both = texts + sums
    both /= np.linalg.norm(both, axis=1, keepdims=True)
    rng = np.random.RandomState(0)
    draws = [rng.choice(len(rows), min(args.sample_size, len(rows)), replace=False) for _ in range(args.draws)]
    results = []
    print(f"\n{'embedded':<10} {'groups':>6} {'purity':>7} {'ARI':>6} {'recovered':>9}  gold classes that are a "
          f"cluster's majority (mean of {args.draws} draws of {len(draws[0])})")
    for name, vectors in (("text", texts), ("summary", sums), ("both", both)):
        for k in args.groups:
            purity, ari, majority, recovered = [], [], [], []
            for idx in draws:
                ids, y = KMeans(n_clusters=k, n_init=10, random_state=0).fit_predict(vectors[idx]), gold[idx]
                counts = [np.unique(y[ids == g], return_counts=True) for g in np.unique(ids)]
                purity.append(sum(c.max() for _, c in counts) / len(idx))
                ari.append(adjusted_rand_score(y, ids))
                majority.append(len({str(v[c.argmax()]) for v, c in counts}))
                by_class = {str(g): {str(c): int(n) for c, n in zip(*np.unique(ids[y == g], return_counts=True))}
                            for g in np.unique(y)}
                recovered.append(len(mutual_majority(by_class)))  # as the taxonomy benchmark scores labels
            row = {"embedded": name, "groups": k, "purity": round(float(np.mean(purity)), 3),
                   "ari": round(float(np.mean(ari)), 3), "majority_classes": round(float(np.mean(majority)), 2),
                   "recovered": round(float(np.mean(recovered)), 2)}
            results.append(row)
            print(f"{name:<10} {k:>6} {row['purity']:>7.3f} {row['ari']:>6.3f} {row['recovered']:>9.1f}  "
                  f"{row['majority_classes']:.1f} of {len(set(gold))}")
    path = ROOT / "benchmarks" / "results" / "taxonomy_clusters.json"
    path.write_text(json.dumps({"records": len(rows), "sample_size": len(draws[0]), "draws": args.draws,
                                "summary_llm_calls": calls, "results": results}, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
