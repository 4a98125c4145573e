"""Several questions about one record: the record's KV state reused (record first) against the prefix-cache order.

labelloop asks prompted questions labeler by labeler with the question before the record, so
llama.cpp's prefix cache holds the shared instructions and the question, and each call evaluates the
record's tokens. The alternative puts the record before the question and asks every question about
one record in a row, so the cache holds the instructions and the record, and each call evaluates
only the question's tokens (after the first question of each record, which reads the record too).

Both orders run the same questions on the same records with the embedded model, through the same
DSPy programs and engine (options scored from the logits), alternating in blocks of records so that
load on the machine hits both alike:

    python benchmarks/record_first.py              # YouTube test comments (2 questions), example messages (3)

Prints ms per answer for each order, their ratio, the prompt tokens evaluated, and how often the
two orders give the same answer (the order changes the prompt, so it can change answers).
Writes benchmarks/results/record_first.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
YOUTUBE = ROOT.parent / "shared" / "datasets" / "youtube" / "youtube.jsonl"
EXAMPLE = ROOT / "data" / "example" / "records.jsonl"
QUESTIONS = {
    "youtube": ["Does the comment ask people to subscribe, follow, visit or check out a channel, video or website?",
                "Is the comment only a reaction to this song, singer or music video, promoting nothing?"],
    "example": ["Is the customer writing about a payment, a charge, a refund, an invoice or a price they paid?",
                "Does the customer report a device or app that does not work as it should?",
                "Is the customer asking where an order or a parcel is?"],
}


def programs(questions: list[str]):
    """(question-first programs, record-first programs): the same question, the text after or before it."""
    import dspy

    from labelloop.programs.choice import ClosedChoice
    from labelloop.programs.signatures import AnswerQuestion, closed

    class AnswerAfterText(dspy.Signature):
        __doc__ = AnswerQuestion.__doc__
        text: str = dspy.InputField()
        question: str = dspy.InputField()
        answer: str = dspy.OutputField()

    make = lambda sig, q: ClosedChoice(closed(sig, "answer", ["yes", "no"]), "answer", ["yes", "no"], question=q)  # noqa: E731
    return [make(AnswerQuestion, q) for q in questions], [make(AnswerAfterText, q) for q in questions]


def measure(name: str, texts: list[str], questions: list[str], lm, block: int) -> dict:
    import dspy

    question_first, record_first = programs(questions)
    engine = lm.engine
    tokens = {"question_first": 0, "record_first": 0}
    evaluated = engine._eval

    def counting(order):
        def _eval(llama, toks):  # tokens evaluated after the cached prefix, as the engine computes it
            tokens[order] += len(toks) - _common(llama, toks, llama.n_tokens)
            return evaluated(llama, toks)
        return _eval

    seconds = {"question_first": 0.0, "record_first": 0.0}
    answers = {"question_first": {}, "record_first": {}}
    with dspy.context(lm=lm):
        for program in question_first + record_first:
            program(text="warm up")  # load the model, fill each prompt's shared prefix
        for start in range(0, len(texts), block):
            chunk = list(enumerate(texts[start:start + block], start))
            engine._eval = counting("question_first")
            began = time.perf_counter()
            for q, program in enumerate(question_first):  # labeler by labeler: labelloop's order
                for i, text in chunk:
                    answers["question_first"][i, q] = program(text=text).answer
            seconds["question_first"] += time.perf_counter() - began
            engine._eval = counting("record_first")
            began = time.perf_counter()
            for i, text in chunk:  # record by record: every question about it in a row
                for q, program in enumerate(record_first):
                    answers["record_first"][i, q] = program(text=text).answer
            seconds["record_first"] += time.perf_counter() - began
    engine._eval = evaluated
    n = len(texts) * len(questions)
    same = sum(answers["question_first"][k] == answers["record_first"][k] for k in answers["question_first"])
    res = {"records": len(texts), "questions": len(questions), "answers": n,
           "ms_per_answer_question_first": round(1000 * seconds["question_first"] / n, 1),
           "ms_per_answer_record_first": round(1000 * seconds["record_first"] / n, 1),
           "tokens_per_answer_question_first": round(tokens["question_first"] / n, 1),
           "tokens_per_answer_record_first": round(tokens["record_first"] / n, 1),
           "same_answer_share": round(same / n, 3)}
    res["record_first_speedup"] = round(res["ms_per_answer_question_first"] / res["ms_per_answer_record_first"], 3)
    print(f"{name}: {len(texts)} records x {len(questions)} questions: question first {res['ms_per_answer_question_first']} ms "
          f"({res['tokens_per_answer_question_first']} tokens) per answer, record first "
          f"{res['ms_per_answer_record_first']} ms ({res['tokens_per_answer_record_first']} tokens); "
          f"speed-up {res['record_first_speedup']}x; same answer {res['same_answer_share']:.0%}", flush=True)
    return res


def _common(llama, tokens, before: int) -> int:
    """Tokens of ``tokens`` the context held before the call (what the engine did not evaluate again)."""
    import numpy as np

    cached = np.asarray(llama.input_ids[:before])
    upto = min(len(cached), len(tokens) - 1)
    differ = np.flatnonzero(cached[:upto] != np.asarray(tokens[:upto]))
    return int(differ[0]) if len(differ) else upto


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=24, help="records from each dataset")
    parser.add_argument("--block", type=int, default=6, help="records per alternation of the two orders")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "record_first.json")
    args = parser.parse_args()
    if not YOUTUBE.exists():
        sys.exit(f"{YOUTUBE} not found: this benchmark needs the shared YouTube dataset")

    from labelloop.flows.io import write_json
    from labelloop.programs.lm import make_lm, model_identity

    lm = make_lm("local", n_threads=args.threads)
    youtube = [r["text"] for r in map(json.loads, YOUTUBE.open(encoding="utf-8")) if r["split"] == "test"]
    example = [json.loads(line)["text"] for line in EXAMPLE.open(encoding="utf-8")]
    res = {name: measure(name, texts[: args.records], QUESTIONS[name], lm, args.block)
           for name, texts in (("youtube", youtube), ("example", example))}
    res["setup"] = {"threads": args.threads, "block": args.block, "model": model_identity("local"),
                    "statistic": "wall ms per answer, the two orders alternating in blocks of records"}
    write_json(args.out, res)
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
