"""A closed-choice LLM call against the hardware's floor: before, now, and the floor, side by side in one run.

On YouTube test comments with the embedded model, the same zero-shot labeler is timed three ways,
interleaved record by record so that load on the machine hits all three alike:

- before: DSPy's JSON adapter (field scaffolding, the format reminder after the text) and the answer
  generated token by token under its grammar, as labelloop asked before the fast path;
- now: labelloop's compact adapter and the options scored from the logits at the answer position
  (``LlamaCppEngine`` closed-choice path);
- floor: the same model evaluating the record's own tokens of the compact prompt (the shared prefix
  already in the KV cache, the record not) plus one forward step, with no DSPy and no answer; only
  the evaluation is timed.

Infer-Retrieve-Rank on ESCO HOUSE test records (the first of ``benchmarks/esco.py``'s seeded sample),
zero-shot, the two rank modes interleaved record by record: ``rank: list`` (the ranker writes the
list of labels it chooses, as before) and ``rank: scores`` (one lettered closed choice scored from
the logits). Nothing is cached: every record is asked afresh in both modes.

    python benchmarks/llm_cost.py                    # 24 comments, 8 ESCO records, 2 threads
    python benchmarks/llm_cost.py --irr-records 0    # the closed-choice part only

Writes benchmarks/results/llm_cost.json. The demo's wall time takes tens of minutes of its own: pass
it in with --before (a JSON file with demo_wall_s_before and demo_wall_s), else it stays null.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
DATA = ROOT.parent / "shared" / "datasets" / "youtube" / "youtube.jsonl"
NAMES = ["ham", "spam"]
DESCS = ["A genuine comment on the video, the song or the artist.",
         "Self-promotion, links, requests to subscribe or visit a channel, ads, scams."]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=24)
    parser.add_argument("--irr-records", type=int, default=8, help="ESCO test records for the IRR timing (0: none)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "llm_cost.json")
    parser.add_argument("--before", type=Path, default=None,
                        help="a JSON file with irr_s_per_record_before / demo_wall_s_before etc. measured elsewhere")
    args = parser.parse_args()
    if not DATA.exists():
        sys.exit(f"{DATA} not found: this benchmark needs the shared YouTube dataset")

    import dspy

    from labelloop.flows.io import write_json
    from labelloop.programs.choice import ChoiceAdapter, CompactJSONAdapter, zero_shot_program
    from labelloop.programs.lm import make_lm, model_identity

    rows = [json.loads(line) for line in DATA.open(encoding="utf-8")]
    texts = [r["text"] for r in rows if r["split"] == "test"][: args.records]
    program = zero_shot_program(NAMES, DESCS)
    lm = make_lm("local", n_threads=args.threads)
    engine = lm.engine

    def before(text):
        engine._formatter = False  # no chat template: the engine generates under the grammar
        try:
            program.adapter = CompactJSONAdapter()  # the prompt closed choices had before: DSPy's, with a reminder
            with dspy.context(lm=lm):
                return program(text=text)
        finally:
            engine._formatter, program.adapter = None, ChoiceAdapter()

    def now(text):
        with dspy.context(lm=lm):
            return program(text=text)

    def floor(text):
        """Seconds to evaluate this record's own tokens after the shared prefix, plus one forward step."""
        messages = ChoiceAdapter().format(program.predict.signature, [], {"text": text})
        with engine._lock:
            llama = engine._context_for(messages)
            tokens = engine.prompt_tokens(llama, messages)
            other = engine.prompt_tokens(llama, ChoiceAdapter().format(program.predict.signature, [], {"text": "?"}))
            shared = next((i for i, (a, b) in enumerate(zip(tokens, other)) if a != b), min(len(tokens), len(other)))
            # the cache holds the shared prefix and not this record (``now`` just evaluated it)
            llama.n_tokens = min(llama.n_tokens, shared)
            started = time.perf_counter()
            logp = engine._eval(llama, tokens)
            llama.eval([int(logp.argmax())])  # one forward step
            seconds = time.perf_counter() - started
            llama.n_tokens, llama._requires_eval = len(tokens), True
        record_tokens.append(len(tokens) - shared)
        return seconds

    record_tokens: list[int] = []  # per record, the tokens the floor evaluated
    for fn in (before, now, floor):
        fn("warm up")  # load the model and fill the prefix cache of each prompt
    seconds = {"before": [], "now": [], "floor": []}
    agree = 0
    record_tokens.clear()
    for text in texts:
        for name, fn in (("before", before), ("now", now), ("floor", floor)):
            started = time.perf_counter()
            out = fn(text)
            seconds[name].append(out if name == "floor" else time.perf_counter() - started)
            if name == "before":
                old = out.answer
            elif name == "now":
                agree += out.answer == old
    ms = {k: round(1000 * statistics.median(v), 1) for k, v in seconds.items()}
    extra = json.loads(args.before.read_text()) if args.before else {}
    if args.irr_records:
        extra |= irr_seconds(lm, args.irr_records)
    res = {
        "ms_per_call_before": ms["before"], "ms_per_call": ms["now"], "floor_ms": ms["floor"],
        "ratio_to_floor": round(ms["now"] / ms["floor"], 3), "ratio_before_to_floor": round(ms["before"] / ms["floor"], 3),
        "speedup": round(ms["before"] / ms["now"], 3),
        "same_answer_share": round(agree / len(texts), 3),
        "irr_s_per_record_before": extra.get("irr_s_per_record_before"), "irr_s_per_record": extra.get("irr_s_per_record"),
        "irr_records": extra.get("irr_records"),
        "demo_wall_s_before": extra.get("demo_wall_s_before"), "demo_wall_s": extra.get("demo_wall_s"),
        "setup": {"records": len(texts), "threads": args.threads, "model": model_identity("local"),
                  "statistic": "median ms per call, the three interleaved record by record",
                  "record_tokens_median": statistics.median(record_tokens)},
    }
    write_json(args.out, res)
    print(f"closed-choice call, {len(texts)} YouTube test comments, {args.threads} threads (median ms per call)")
    print(f"  before (DSPy JSON prompt, grammar generation) {ms['before']:>8.1f}   {res['ratio_before_to_floor']:.2f}x floor")
    print(f"  now (compact prompt, options from logits)      {ms['now']:>8.1f}   {res['ratio_to_floor']:.2f}x floor")
    print(f"  floor (record tokens after cached prefix + 1)  {ms['floor']:>8.1f}")
    print(f"  same answer before and now: {res['same_answer_share']:.0%}")
    if res["irr_records"]:
        print(f"Infer-Retrieve-Rank, {res['irr_records']} ESCO test records (median s per record): rank list "
              f"{res['irr_s_per_record_before']}, rank scores {res['irr_s_per_record']}")
    print(f"-> {args.out}")


def irr_seconds(lm, n: int) -> dict:
    """Median seconds per ESCO record of zero-shot IRR with ``rank: list`` (before) and ``rank: scores`` (now)."""
    import dspy
    import esco  # benchmarks/esco.py: the data, the seeded sample, the hint

    from labelloop.flows.store import label_vectors
    from labelloop.labelers.base import LabelingContext
    from labelloop.labelers.irr import IRRLabeler
    from labelloop.labelers.labels import Taxonomy
    from labelloop.programs.lm import LMSpec
    from labelloop.programs.retrieval import LabelIndex

    if not esco.DATA.is_dir():
        sys.exit(f"{esco.DATA} not found: the IRR part needs the shared ESCO dataset (or --irr-records 0)")
    labels = [line.strip() for line in (esco.DATA / "esco_skills.txt").read_text(encoding="utf-8").splitlines() if line.strip()]
    test_all = esco._read_jsonl(esco.DATA / "house_test.jsonl")
    valid = esco._read_jsonl(esco.DATA / "house_validation.jsonl")
    _, _, records, _ = esco._records(test_all, valid, dev=False, size=n, train_size=10, seed=0)
    esco.CACHE.mkdir(parents=True, exist_ok=True)
    index = LabelIndex(labels, label_vectors(labels, esco.CACHE))
    ctx = LabelingContext(Taxonomy(tuple(labels), ("",) * len(labels)), LMSpec(), lambda retriever: index)
    programs = {mode: IRRLabeler("irr", rank_n=20, hint=esco.HINT, rank=mode).program(ctx) for mode in ("list", "scores")}
    seconds = {mode: [] for mode in programs}
    with dspy.context(lm=lm):
        for program in programs.values():
            program(text="warm up")
        for record in records:
            for mode, program in programs.items():
                started = time.perf_counter()
                program(text=record["text"])
                seconds[mode].append(time.perf_counter() - started)
    return {"irr_s_per_record_before": round(statistics.median(seconds["list"]), 2),
            "irr_s_per_record": round(statistics.median(seconds["scores"]), 2), "irr_records": len(records)}


if __name__ == "__main__":
    main()
