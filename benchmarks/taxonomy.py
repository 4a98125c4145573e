"""Taxonomy bootstrapping on the example project with its gold classes hidden: are the gold classes recovered?

The bootstrap sees only data/example/records.jsonl (ids and texts, no labels). The gold label set
(data/example/taxonomy.yaml) is used afterwards, for matching only: each gold class is paired with
at most one bootstrapped label by embedding similarity of "name: description" (MiniLM, one-to-one,
Hungarian assignment); a pair counts as a match at cosine similarity >= --min-similarity. With
--score-test the coverage-check program also labels the 80 gold test records, and those answers
are compared with the gold labels through the same pairing.

    python benchmarks/taxonomy.py                   # embedded 1.5B model, about 15 minutes on 2 cores
    python benchmarks/taxonomy.py --sample-size 24  # a quick look

Writes benchmarks/results/taxonomy.json. Answers are kept in benchmarks/.cache/taxonomy, so a
second run makes no LLM call.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
EXAMPLE = ROOT / "data" / "example"
CACHE = ROOT / "benchmarks" / ".cache" / "taxonomy"
USE_CASE = ("Sort the messages that customers send to an online electronics shop by what the customer needs, "
            "so that each message goes to the team that handles that kind of need.")


def prepare(args) -> Path:
    import yaml

    CACHE.mkdir(parents=True, exist_ok=True)
    rows = [json.loads(line) for line in (EXAMPLE / "records.jsonl").open(encoding="utf-8")]
    (CACHE / "records.jsonl").write_text("".join(json.dumps({"id": r["id"], "text": r["text"]}) + "\n" for r in rows))
    config = {"name": "bootstrap-benchmark", "data": "records.jsonl", "taxonomy": "taxonomy.yaml",
              "lm": {"model": args.model, "n_threads": args.threads}, "labelers": [{"type": "zero_shot"}],
              "seed": args.seed,
              "bootstrap": {"use_case": USE_CASE, "sample_size": args.sample_size, "minibatch_size": args.minibatch_size,
                            "max_labels": args.max_labels, "summary_words": args.summary_words}}
    (CACHE / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (CACHE / "taxonomy.yaml").unlink(missing_ok=True)  # the benchmark always writes a fresh one (answers are cached)
    return CACHE / "config.yaml"


def match(gold: list[dict], boot: list[dict], min_similarity: float) -> list[dict]:
    """One-to-one pairing of gold classes and bootstrapped labels by embedding similarity."""
    from scipy.optimize import linear_sum_assignment

    from programs.embeddings import embed

    as_text = lambda x: f"{x['name'].replace('_', ' ')}: {x['description']}"  # noqa: E731
    sims = embed([as_text(x) for x in gold]) @ embed([as_text(x) for x in boot]).T
    rows, cols = linear_sum_assignment(-sims)
    paired = dict(zip(rows, cols))
    table = []
    for i, g in enumerate(gold):
        best = int(sims[i].argmax())
        j = paired.get(i)
        table.append({"gold": g["name"], "label": boot[j]["name"] if j is not None else None,
                      "similarity": round(float(sims[i, j]), 3) if j is not None else None,
                      "matched": j is not None and float(sims[i, j]) >= min_similarity,
                      "nearest": boot[best]["name"], "nearest_similarity": round(float(sims[i, best]), 3)})
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="local")
    parser.add_argument("--threads", type=int, default=None, help="llama.cpp threads (default: all cores, at most 8)")
    parser.add_argument("--sample-size", type=int, default=48)
    parser.add_argument("--minibatch-size", type=int, default=16)
    parser.add_argument("--max-labels", type=int, default=8)
    parser.add_argument("--summary-words", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-similarity", type=float, default=0.5)
    parser.add_argument("--score-test", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args()

    import yaml

    from flows.bootstrap import _lm_key, assign, bootstrap_taxonomy
    from flows.config import load_config
    from flows.io import read_records
    from flows.store import VoteStore
    from programs.lm import make_lm

    started = time.time()
    cfg = load_config(prepare(args))
    result = bootstrap_taxonomy(cfg, show_progress=True)
    bootstrap_s = time.time() - started
    gold = yaml.safe_load((EXAMPLE / "taxonomy.yaml").read_text())["labels"]
    table = match(gold, result.labels, args.min_similarity)

    print(f"\nbootstrapped {len(result.labels)} labels from {len(result.sample_ids)} records "
          f"({result.llm_calls} LLM calls, {bootstrap_s:.0f} s); coverage {result.coverage:.1%}")
    for label in result.labels:
        print(f"  {label['name']:<28} {result.counts.get(label['name'], 0):>3}  {label['description']}")
    print(f"  {'none_of_these':<28} {result.counts.get('none_of_these', 0):>3}")
    print(f"\n{'gold class':<18} {'paired label':<28} {'sim':>6}  match  nearest (sim)")
    for row in table:
        print(f"{row['gold']:<18} {str(row['label']):<28} {row['similarity'] or 0:>6.3f}  {'yes' if row['matched'] else 'no ':<5}  "
              f"{row['nearest']} ({row['nearest_similarity']:.3f})")
    matched = sum(r["matched"] for r in table)
    print(f"\n{matched} of {len(gold)} gold classes matched (one-to-one, similarity >= {args.min_similarity})")

    test_scores, test_calls = None, 0
    if args.score_test:
        test = read_records(cfg.data.model_copy(update={"path": EXAMPLE / "test.jsonl"}), require_label=True)
        lm = make_lm(cfg.lm.model, temperature=cfg.lm.temperature, max_tokens=cfg.lm.max_tokens, n_threads=cfg.lm.n_threads)
        store = VoteStore(cfg.store)
        try:
            answers, test_calls = assign.fn(list(zip(test["id"], test["text"])), result.labels, lm, store, _lm_key(cfg), True)
        finally:
            store.close()
        to_gold = {r["label"]: r["gold"] for r in table if r["matched"]}
        predicted = [to_gold.get(answers[rid]["answer"]) for rid in test["id"]]
        by_class = {}
        for g in [x["name"] for x in gold]:
            got = [answers[rid]["answer"] for rid, y in zip(test["id"], test["label"]) if y == g]
            by_class[g] = {name: got.count(name) for name in sorted(set(got), key=lambda n: -got.count(n))}
        test_scores = {"n": len(test), "accuracy_via_pairing": round(sum(p == y for p, y in zip(predicted, test["label"])) / len(test), 3),
                       "none_of_these": sum(answers[rid]["answer"] == "none_of_these" for rid in test["id"]),
                       "assigned_by_gold_class": by_class}
        print(f"\ntest records ({len(test)}): accuracy through the pairing {test_scores['accuracy_via_pairing']:.3f}; "
              f"none_of_these {test_scores['none_of_these']}")
        for g, counts in by_class.items():
            print(f"  {g:<18} -> {counts}")

    out = {"gold_classes": len(gold), "matched_classes": matched, "n_labels": len(result.labels),
           "coverage": round(result.coverage, 3), "llm_calls": result.llm_calls, "seconds": round(bootstrap_s),
           "model": args.model, "n_threads": args.threads, "seed": args.seed, "sample_size": len(result.sample_ids),
           "minibatch_size": args.minibatch_size, "max_labels": args.max_labels, "summary_words": args.summary_words,
           "min_similarity": args.min_similarity, "labels": result.labels,
           "counts": result.counts, "match_table": table,
           "steps": [{k: s.get(k) for k in ("step", "calls", "cached", "rating", "retried_for", "error")} for s in result.steps],
           "notes": result.notes, "test": test_scores, "test_llm_calls": test_calls}
    path = ROOT / "benchmarks" / "results" / "taxonomy.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
