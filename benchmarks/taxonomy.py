"""Taxonomy bootstrapping on the example project with its gold classes hidden: are the gold classes recovered?

The bootstrap sees only data/example/records.jsonl (ids and texts, no labels). The gold label set
(data/example/taxonomy.yaml) is used afterwards, for matching only: each gold class is paired with
at most one bootstrapped label by embedding similarity of "name: description" (MiniLM, one-to-one,
Hungarian assignment); a pair counts as a match at cosine similarity >= --min-similarity. A second,
LLM match asks the coverage-check program (the embedded model choosing among the bootstrapped
labels or "none of these") to classify each gold class's own "name: description"; a gold class
matches the label it picks, one-to-one (two classes picking one label are resolved by the
model's probabilities, and a class the resolution moves off its pick is not matched). With
--score-test (default) the coverage-check program also labels the 80 gold test records, and a gold
class counts as recovered by assignment when the label that gets most of its records has over half
of its own records from that class (so two classes cannot share one label). Records are also scored through the pairing.

    python benchmarks/taxonomy.py --threads 2       # embedded 1.5B model, about 7 minutes on 2 cores
    python benchmarks/taxonomy.py --sample-size 24  # a quick look

Writes benchmarks/results/taxonomy.json. Answers are kept in benchmarks/.cache/taxonomy, so a
second run makes no LLM call.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

ROOT = Path(__file__).resolve().parents[1]
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
                            "max_labels": args.max_labels, "summary_words": args.summary_words,
                            "group_by": args.group_by}}
    (CACHE / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (CACHE / "taxonomy.yaml").unlink(missing_ok=True)  # the benchmark always writes a fresh one (answers are cached)
    return CACHE / "config.yaml"


def definition(label: dict) -> str:
    """A label as both matches read it: "plain name: description"."""
    return f"{label['name'].replace('_', ' ')}: {label['description']}"


def match(gold: list[dict], boot: list[dict], min_similarity: float) -> list[dict]:
    """One-to-one pairing of gold classes and bootstrapped labels by embedding similarity."""
    from scipy.optimize import linear_sum_assignment

    from labelloop.programs.embeddings import embed

    sims = embed([definition(x) for x in gold]) @ embed([definition(x) for x in boot]).T
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


def llm_match(picks: dict[str, dict], labels: list[dict]) -> list[dict]:
    """One-to-one pairing from the coverage-check program's answers on the gold class definitions.

    ``picks`` maps each gold class to its answer (``answer`` and ``probs`` over the labels and
    none_of_these). A class is matched when the one-to-one assignment that maximises the summed
    probabilities gives it the label it picked itself.

    >>> picks = {"a": {"answer": "x", "probs": {"x": 0.7, "y": 0.2, "none_of_these": 0.1}},
    ...          "b": {"answer": "x", "probs": {"x": 0.5, "y": 0.4, "none_of_these": 0.1}},
    ...          "c": {"answer": "none_of_these", "probs": {"x": 0.1, "y": 0.1, "none_of_these": 0.8}}}
    >>> [(r["gold"], r["label"], r["matched"]) for r in llm_match(picks, [{"name": "x"}, {"name": "y"}])]
    [('a', 'x', True), ('b', 'y', False), ('c', None, False)]
    """
    import numpy as np
    from scipy.optimize import linear_sum_assignment

    names = [x["name"] for x in labels]
    gold = list(picks)
    probs = np.array([[(picks[g].get("probs") or {}).get(n, 0.0) for n in names] for g in gold])
    paired = dict(zip(*linear_sum_assignment(-probs)))
    table = []
    for i, g in enumerate(gold):
        pick = picks[g].get("answer")
        j = paired.get(i) if pick in names else None
        table.append({"gold": g, "pick": pick, "label": names[j] if j is not None else None,
                      "probability": round(float(probs[i, j]), 3) if j is not None else None,
                      "matched": j is not None and names[j] == pick})
    return table


def mutual_majority(by_class: dict[str, dict[str, int]]) -> dict[str, str]:
    """Gold class -> bootstrapped label, where the label gets most of the class's records and over half its records are the class.

    >>> mutual_majority({"a": {"x": 3, "y": 1}, "b": {"x": 2, "none_of_these": 5}, "c": {"y": 2}})
    {'a': 'x', 'c': 'y'}
    >>> mutual_majority({"a": {"x": 3}, "b": {"x": 2}, "c": {"x": 2}})  # x is 3 of 7 "a": no class owns it
    {}
    """
    per_label: dict[str, dict[str, int]] = {}
    for g, counts in by_class.items():
        for label, n in counts.items():
            per_label.setdefault(label, {})[g] = n
    out = {}
    for g, counts in by_class.items():
        named = {k: v for k, v in counts.items() if k != "none_of_these"}
        if named:
            label = max(named, key=named.get)
            if 2 * per_label[label][g] > sum(per_label[label].values()):
                out[g] = label
    return out


def run_one(args) -> dict:
    """Bootstrap with ``args.seed``, match against the gold classes, print and return the figures."""
    import yaml

    from labelloop.flows.bootstrap import assign, bootstrap_taxonomy
    from labelloop.flows.config import load_config
    from labelloop.flows.io import read_records
    from labelloop.flows.store import VoteStore, lm_key

    print(f"\n=== seed {args.seed}")
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
    for note in result.notes:
        print(f"  note: {note}")
    print(f"\n{'gold class':<18} {'paired label':<28} {'sim':>6}  match  nearest (sim)")
    for row in table:
        print(f"{row['gold']:<18} {str(row['label']):<28} {row['similarity'] or 0:>6.3f}  "
              f"{'yes' if row['matched'] else 'no ':<5}  {row['nearest']} ({row['nearest_similarity']:.3f})")
    matched = sum(r["matched"] for r in table)
    print(f"\n{matched} of {len(gold)} gold classes matched by embedding (one-to-one, similarity >= {args.min_similarity})")

    lm = cfg.lm.make()
    store = VoteStore(cfg.store)
    test_scores, test_calls = None, 0
    try:
        ids = {g["name"]: f"gold:{g['name']}" for g in gold}  # record ids in the store, apart from the data's
        picks, judge_calls = assign([(ids[g["name"]], definition(g)) for g in gold], result.labels, lm, store,
                                    lm_key(cfg.lm), False)
        judged = llm_match({name: picks[rid] for name, rid in ids.items()}, result.labels)
        print(f"\n{'gold class':<18} {'picked by the LLM':<28} {'paired label':<28} {'p':>6}  match")
        for row in judged:
            print(f"{row['gold']:<18} {row['pick']!s:<28} {row['label']!s:<28} {row['probability'] or 0:>6.3f}  "
                  f"{'yes' if row['matched'] else 'no'}")
        matched_llm = sum(r["matched"] for r in judged)
        print(f"\n{matched_llm} of {len(gold)} gold classes matched by the LLM (its pick, one-to-one)")

        if args.score_test:
            test = read_records(cfg.data.model_copy(update={"path": EXAMPLE / "test.jsonl"}), require_label=True)
            answers, test_calls = assign(list(zip(test["id"], test["text"])), result.labels, lm, store, lm_key(cfg.lm), True)
    finally:
        store.close()
    if args.score_test:
        to_gold = {r["label"]: r["gold"] for r in table if r["matched"]}
        predicted = [to_gold.get(answers[rid]["answer"]) for rid in test["id"]]
        by_class = {}
        for g in [x["name"] for x in gold]:
            got = [answers[rid]["answer"] for rid, y in zip(test["id"], test["label"]) if y == g]
            by_class[g] = {name: got.count(name) for name in sorted(set(got), key=lambda n: -got.count(n))}
        recovered = mutual_majority(by_class)
        hits = sum(p == y for p, y in zip(predicted, test["label"]))
        test_scores = {"n": len(test), "accuracy_via_pairing": round(hits / len(test), 3),
                       "none_of_these": sum(answers[rid]["answer"] == "none_of_these" for rid in test["id"]),
                       "recovered_by_assignment": recovered, "assigned_by_gold_class": by_class}
        print(f"\ntest records ({len(test)}): accuracy through the pairing {test_scores['accuracy_via_pairing']:.3f}; "
              f"none_of_these {test_scores['none_of_these']}")
        for g, counts in by_class.items():
            print(f"  {g:<18} -> {counts}")
        print(f"{len(recovered)} of {len(gold)} gold classes recovered by assignment (the label that gets most of the "
              f"class's test records has over half of its records from that class): {recovered}")

    return {"gold_classes": len(gold), "matched_classes": matched, "matched_by_llm": matched_llm, "n_labels": len(result.labels),
            "coverage": round(result.coverage, 3), "llm_calls": result.llm_calls, "seconds": round(bootstrap_s),
            "recovered_by_assignment": len(test_scores["recovered_by_assignment"]) if test_scores else None,
            "model": args.model, "n_threads": args.threads, "seed": args.seed, "sample_size": len(result.sample_ids),
            "minibatch_size": args.minibatch_size, "max_labels": args.max_labels, "summary_words": args.summary_words,
            "group_by": args.group_by, "min_similarity": args.min_similarity, "labels": result.labels,
            "counts": result.counts, "match_table": table, "llm_match_table": judged, "judge_llm_calls": judge_calls,
            "steps": [{k: s.get(k) for k in ("step", "calls", "cached", "keywords", "labels", "rating", "edits", "retried_for",
                                               "error")} for s in result.steps],
            "notes": result.notes, "test": test_scores, "test_llm_calls": test_calls}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="local")
    parser.add_argument("--threads", type=int, default=None, help="llama.cpp threads (default: all cores, at most 8)")
    parser.add_argument("--sample-size", type=int, default=48)
    parser.add_argument("--minibatch-size", type=int, default=16)
    parser.add_argument("--max-labels", type=int, default=8)
    parser.add_argument("--summary-words", type=int, default=20)
    parser.add_argument("--group-by", choices=["text", "summary"], default="text")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="one bootstrap per seed (its own sample)")
    parser.add_argument("--min-similarity", type=float, default=0.5)
    parser.add_argument("--score-test", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args()

    runs = []
    for seed in args.seeds:
        args.seed = seed
        runs.append(run_one(args))
    keys = ("seed", "matched_classes", "matched_by_llm", "recovered_by_assignment", "n_labels", "coverage", "llm_calls",
            "seconds")
    if len(runs) > 1:
        print(f"\n{'seed':>4} {'matched':>8} {'by LLM':>7} {'recovered':>10} {'labels':>7} {'coverage':>9} {'calls':>6} "
              f"{'seconds':>8}")
        for r in runs:
            print(f"{r['seed']:>4} {r['matched_classes']:>8} {r['matched_by_llm']:>7} {str(r['recovered_by_assignment']):>10} "
                  f"{r['n_labels']:>7} {r['coverage']:>9.1%} {r['llm_calls']:>6} {r['seconds']:>8}")
    out = {**runs[0], "seeds": [{k: r[k] for k in keys} for r in runs]}  # the first seed in full, every seed in brief
    path = ROOT / "benchmarks" / "results" / "taxonomy.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
