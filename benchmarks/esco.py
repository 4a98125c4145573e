"""ESCO skills (HOUSE): retrieval only vs. Infer-Retrieve-Rank zero-shot vs. optimized, in one run.

The label space is the 13,896 ESCO skills. A seeded sample of HOUSE test records is scored with
RP@5 / RP@10; the optimizer compiles the program on a seeded handful of HOUSE validation records.

    python benchmarks/esco.py                       # 100 test records, embedded model: hours cold on 2 cores
    python benchmarks/esco.py --test-size 10        # a quick look
    python benchmarks/esco.py --dev                 # choose settings on validation records, never on test
    python benchmarks/esco.py --model openai/<name> --api-base http://host:8000/v1   # a larger model

``--dev`` scores the HOUSE validation records that are not the optimizer's training records (51 of
61 with the default --train-size 10), so settings (``--rank``, ``--infer-k``, ``--rank-n``) are
compared there and only the chosen ones are run on test.

Writes benchmarks/results/esco_house.json (esco_house_dev.json with --dev; ``_rank-list`` is added
for --rank list and ``_<model>`` for other models; --out overrides). A seeded sample of n test
records starts with the sample of any smaller n, so a larger --test-size reuses the stored answers.
Answers are kept in benchmarks/.cache/esco (vote store, DSPy cache, label embeddings, the optimized
program), so a second run makes no LLM call.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "datasets" / "esco"
CACHE = ROOT / "benchmarks" / ".cache" / "esco"
HINT = "The texts are snippets from job ads; the labels are ESCO skills, competences and knowledge areas."
PAPER = {"rp5": 55.57, "rp10": 61.71, "note": "D'Oosterlinck et al. 2024, HOUSE test: Llama-2-13b infers, GPT-4 ranks"}


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _score(rankings, golds, calls, seconds, timed: int) -> dict:
    """RP@k in percent; seconds per record over the ``timed`` records computed in this run (None if all were stored)."""
    from labelloop.programs.metrics import mean_rp_at_k

    n = len(golds)
    return {"rp5": round(100 * mean_rp_at_k(rankings, golds, 5), 2), "rp10": round(100 * mean_rp_at_k(rankings, golds, 10), 2),
            "llm_calls_per_record": round(calls / n, 2), "s_per_record": round(seconds / timed, 2) if timed else None,
            "records_timed": timed, "n": n}


def _run_program(name, program, records, lm, store, version, fresh_calls):
    """Answers for every record: from the vote store, or from the program (then stored), as labelling does."""
    from labelloop.flows.label_dataset import asker
    from labelloop.flows.store import stored_or_asked

    items = [(r["id"], r["text"]) for r in records]
    n_new = len(items) - len(store.get_many(version, items))
    started = time.time()
    got = stored_or_asked(store, version, items, asker(program, lambda: lm), name=name)
    fresh_calls[name] = got.calls
    return [got.answers[r["id"]] for r in records], time.time() - started, n_new


def _rekey(store, labeler, ctx, lm) -> str:
    """Answers stored before the benchmark keyed its LM by ``LMSpec.key`` (which adds the temperature) move to the
    new key; returns the old version."""
    from labelloop.labelers.base import LabelingContext
    from labelloop.programs.lm import LMSpec

    class OldKey(LMSpec):
        def key(self):
            model, params = super().key()
            return model, {k: v for k, v in params.items() if k != "temperature"}

    old = labeler.version(LabelingContext(ctx.taxonomy, OldKey(**lm.model_dump()), ctx.label_index, ctx.states))
    store.move(old, labeler.version(ctx))
    return old


def _records(test_all: list[dict], valid: list[dict], *, dev: bool, size: int, train_size: int, seed: int):
    """(split name, pool, records to score, optimizer records); gives every record an ``id``.

    The optimizer's records are a seeded sample of the validation split; the records scored are a
    seeded sample of the test split, or with ``dev`` of the validation records the optimizer does not get.

    >>> split, pool, scored, train = _records([{}] * 5, [{} for _ in range(6)], dev=True, size=9, train_size=2, seed=0)
    >>> split, len(pool), len(scored), len(train), {r["id"] for r in scored} & {r["id"] for r in train}
    ("HOUSE validation, less the optimizer's records", 4, 4, 2, set())
    """
    test_all = [{**r, "id": f"test-{i}"} for i, r in enumerate(test_all)]
    valid = [{**r, "id": f"valid-{i}"} for i, r in enumerate(valid)]
    train = random.Random(seed).sample(valid, min(train_size, len(valid)))
    if dev:  # the validation records the optimizer never sees
        trained = {r["id"] for r in train}
        split, pool = "HOUSE validation, less the optimizer's records", [r for r in valid if r["id"] not in trained]
    else:
        split, pool = "HOUSE test", test_all
    return split, pool, random.Random(seed).sample(pool, min(size, len(pool))), train


def _result_name(args) -> str:
    """esco_house[_dev][_rank-list][_<model>].json

    >>> from argparse import Namespace
    >>> _result_name(Namespace(dev=True, rank="list", model="openai/qwen"))
    'esco_house_dev_rank-list_openai_qwen.json'
    """
    parts = ["esco_house"] + ["dev"] * args.dev + ([f"rank-{args.rank}"] if args.rank != "scores" else [])
    parts += [args.model.replace("/", "_")] if args.model != "local" else []
    return "_".join(parts) + ".json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--test-size", type=int, default=100,
                        help="seeded sample of HOUSE test records (with --dev: of the held-out validation records)")
    parser.add_argument("--dev", action="store_true",
                        help="score HOUSE validation records that are not the optimizer's, not test records")
    parser.add_argument("--train-size", type=int, default=10, help="seeded HOUSE validation records for the optimizer")
    parser.add_argument("--rank-n", type=int, default=20, help="candidates shown to the ranker")
    parser.add_argument("--rank-k", type=int, default=5, help="labels the ranker may choose")
    parser.add_argument("--infer-k", type=int, default=8, help="the most label guesses Infer may write per chunk")
    parser.add_argument("--rank", choices=("list", "scores"), default="scores",  # labelloop.programs.irr.RANK_MODES
                        help="list: the ranker writes its choices; scores: one lettered closed choice (rank-n <= 26)")
    parser.add_argument("--candidates", type=int, default=1, help="random demo sets the optimizer tries")
    parser.add_argument("--max-demos", type=int, default=2)
    parser.add_argument("--model", default="local")
    parser.add_argument("--api-base", default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="results file (default: see above)")
    args = parser.parse_args()
    if args.rank == "scores" and args.rank_n > 26:
        parser.error(f"--rank scores shows each candidate under one letter: --rank-n must be at most 26, got {args.rank_n}")
    if not DATA.is_dir():
        sys.exit(f"{DATA} not found: the ESCO benchmark needs the shared datasets folder")
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

    import dspy
    import numpy as np

    from labelloop.flows.io import write_json
    from labelloop.flows.store import VoteStore, label_vectors
    from labelloop.labelers.base import LabelingContext
    from labelloop.labelers.irr import IRRLabeler
    from labelloop.labelers.labels import Taxonomy
    from labelloop.programs.embeddings import embed
    from labelloop.programs.irr import CHOSEN_SHARE, chunk_text
    from labelloop.programs.lm import LMSpec
    from labelloop.programs.optimize import compile_program, examples, ranking_metric
    from labelloop.programs.retrieval import LabelIndex

    CACHE.mkdir(parents=True, exist_ok=True)
    dspy.configure_cache(enable_disk_cache=True, enable_memory_cache=True, disk_cache_dir=str(CACHE / "dspy"))
    labels = [line.strip() for line in (DATA / "esco_skills.txt").read_text(encoding="utf-8").splitlines() if line.strip()]
    test_all = _read_jsonl(DATA / "house_test.jsonl")
    valid = _read_jsonl(DATA / "house_validation.jsonl")
    split, pool, test, train = _records(test_all, valid, dev=args.dev, size=args.test_size, train_size=args.train_size,
                                        seed=args.seed)
    if not test:
        sys.exit(f"no records to score: {split} has none left (--train-size {args.train_size} of {len(valid)})")
    golds = [r["label"] for r in test]
    print(f"{len(labels):,} labels; {len(test)} of {len(pool)} {split} records (seed {args.seed}); "
          f"optimizer on {len(train)} validation records; rank {args.rank}; model {args.model}")

    started = time.time()
    vectors = label_vectors(labels, CACHE)
    print(f"label embeddings: {vectors.shape} ({time.time() - started:.1f} s, cached per label set)")
    index = LabelIndex(labels, vectors)
    results = {}

    # Retrieval only: each chunk of the record text is a query; no LLM.
    started = time.time()
    rankings = [[name for name, _ in index.search(chunk_text(r["text"], 200), 10)] for r in test]
    results["retrieval_only"] = _score(rankings, golds, 0, time.time() - started, len(test))
    queries = [g for r in test for g in chunk_text(r["text"], 200)]
    q = embed(queries)
    t = time.perf_counter()
    for row in q:
        best = row @ vectors.T
        np.argpartition(-best, 10)[:10]
    results["retrieval_only"]["search_ms_per_query"] = round(1000 * (time.perf_counter() - t) / len(q), 3)

    spec = LMSpec(model=args.model, api_base=args.api_base, max_tokens=256, n_threads=args.threads)
    lm = spec.make(cache=True)
    # ESCO skill names carry no descriptions: the taxonomy's label texts are the names themselves
    ctx = LabelingContext(Taxonomy(tuple(labels), ("",) * len(labels)), spec, lambda retriever: index)
    store = VoteStore(CACHE / "votes.sqlite")
    fresh_calls = {}
    settings = dict(infer_k=args.infer_k, rank_n=args.rank_n, rank_k=args.rank_k, hint=HINT, rank=args.rank)

    zero = IRRLabeler("irr", **settings)
    old_version = _rekey(store, zero, ctx, spec)
    answers, seconds, n_new = _run_program("irr", zero.program(ctx), test, lm, store, zero.version(ctx), fresh_calls)
    calls = sum(a["calls"] for a in answers)
    results["irr"] = _score([a["ranking"] for a in answers], golds, calls, seconds, n_new)
    results["irr"]["invalid_answers"] = sum(a["invalid"] for a in answers)

    # Optimize on the validation records (the DSPy cache makes the optimizer's repeated calls free).
    program_file = CACHE / f"irr_optimized-{zero.version(ctx)}-{args.seed}-{len(train)}.json"
    legacy_file = CACHE / f"irr_optimized-{old_version}-{args.seed}-{len(train)}.json"
    if legacy_file.is_file() and not program_file.is_file():
        legacy_file.rename(program_file)
    started = time.time()
    if program_file.is_file():
        state = json.loads(program_file.read_text())
        opt_seconds = None
    else:
        program = zero.program(ctx, lm=lm)
        compiled = compile_program(program, examples([(r["text"], r["label"]) for r in train]), ranking_metric(10),
                                   max_demos=args.max_demos, candidates=args.candidates)
        state = compiled.dump_state()
        write_json(program_file, state)
        opt_seconds = round(time.time() - started, 1)
    ctx.states["irr"] = state
    _rekey(store, zero, ctx, spec)
    answers, seconds, n_new = _run_program("irr_optimized", zero.program(ctx), test, lm, store, zero.version(ctx), fresh_calls)
    calls = sum(a["calls"] for a in answers)
    results["irr_optimized"] = _score([a["ranking"] for a in answers], golds, calls, seconds, n_new)
    results["irr_optimized"]["invalid_answers"] = sum(a["invalid"] for a in answers)
    results["irr_optimized"]["optimizer"] = {
        "name": "BootstrapFewShotWithRandomSearch", "train_records": len(train), "metric": "RP@10",
        "candidates": args.candidates, "max_demos": args.max_demos, "seconds": opt_seconds,
        "demos": {name: len(p["demos"]) for name, p in state.items() if isinstance(p, dict) and "demos" in p}}
    store.close()

    print(f"\n{'method':<16}{'RP@5':>8}{'RP@10':>8}{'calls/rec':>11}{'s/rec':>8}")
    for name, row in results.items():
        timed = "stored" if row["s_per_record"] is None else f"{row['s_per_record']:.2f}"
        print(f"{name:<16}{row['rp5']:>8.2f}{row['rp10']:>8.2f}{row['llm_calls_per_record']:>11.2f}{timed:>8}")
    print(f"{'paper (HOUSE)':<16}{PAPER['rp5']:>8.2f}{PAPER['rp10']:>8.2f}{2:>11.2f}")
    print(f"retrieval over {len(labels):,} labels: {results['retrieval_only']['search_ms_per_query']} ms per query "
          "(after embedding the query)")
    results["setup"] = {"model": args.model, "model_identity": spec.key()[0], "labels": len(labels), "test_seed": args.seed,
                        "split": split, "test_records": len(test), "test_split_size": len(pool),
                        "test_ids": [r["id"] for r in test], "train_records": len(train),
                        "train_ids": [r["id"] for r in train], "rank": args.rank, "rank_n": args.rank_n,
                        "rank_k": args.rank_k, "infer_k": args.infer_k, "retriever": "embeddings (all-MiniLM-L6-v2)",
                        "llm_calls_this_run": fresh_calls,
                        "s_per_record_note": "over the records answered in this run; null when every answer was stored"}
    if args.rank == "scores":
        results["setup"]["chosen_share"] = CHOSEN_SHARE
    results["paper"] = PAPER  # on the full HOUSE test split: not comparable with --dev figures
    out = write_json(args.out or ROOT / "benchmarks" / "results" / _result_name(args), results)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
