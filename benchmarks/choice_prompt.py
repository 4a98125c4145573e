"""How a closed choice's prompt is laid out and where it names its options, chosen on YouTube dev records (never test).

A model behind an API that takes no JSON schema (a served model DSPy does not know) sees the options
only if the prompt names them; the embedded model's grammar enforces them either way. Four prompt
formats, on the same dev records with the embedded model:

- ``dspy``: DSPy's JSON prompt (every field's type and layout before the instructions, the options
  among them, a format reminder after the text), as labelloop asked before;
- ``bare``: the instructions (the zero-shot labels are listed there) and the answer's field name;
  a question's options are left to the schema;
- ``field_line``: the answer line also names the options ("... the field `answer`: yes or no");
- ``instructions``: a question's options follow its instructions ("Allowed answers: yes, no.").

Scores: the zero-shot labeler's raw accuracy; for each YouTube question (its "yes" votes for one
label), the AUC of P(yes) against that label and the accuracy and coverage of its "yes" answers.

    python benchmarks/choice_prompt.py          # the 50 dev records of benchmarks/youtube.py (seed 0)

Writes benchmarks/results/choice_prompt.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import youtube  # noqa: E402  (the dev sample, the labels and the questions)

ROOT = Path(__file__).resolve().parents[1]


def adapters():
    """{format name: (adapter, whether a question's instructions carry its options)}."""
    import typing

    from labelloop.programs.choice import ChoiceAdapter, CompactJSONAdapter

    class FieldLine(ChoiceAdapter):  # "... the field(s) `answer`: yes or no."
        def format_field_structure(self, signature) -> str:
            fields = [f"`{name}`: " + " or ".join(typing.get_args(f.annotation)) for name, f in signature.output_fields.items()]
            return "Answer with a JSON object with the field(s) " + ", ".join(fields) + "."

    return {"dspy": (CompactJSONAdapter(), False), "bare": (ChoiceAdapter(), False), "field_line": (FieldLine(), False),
            "instructions": (ChoiceAdapter(), True)}


def auc(scores: list[float], positive: list[bool]) -> float:
    from sklearn.metrics import roc_auc_score

    return round(float(roc_auc_score(positive, scores)), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "choice_prompt.json")
    args = parser.parse_args()
    if not youtube.DATA.exists():
        sys.exit(f"{youtube.DATA} not found: this benchmark needs the shared YouTube dataset")

    import dspy

    from labelloop.flows.config import DataSpec
    from labelloop.flows.io import read_records, write_json
    from labelloop.programs.choice import ClosedChoice, zero_shot_program
    from labelloop.programs.lm import make_lm, model_identity
    from labelloop.programs.signatures import AnswerQuestion, closed

    youtube.prepare(300, 50, 0, "local")
    dev = read_records(DataSpec(path=youtube.CACHE / "dev.jsonl"), require_label=True)
    texts, gold = dev["text"].tolist(), dev["label"].tolist()
    names = [x["name"] for x in youtube.TAXONOMY["labels"]]
    descs = [x["description"] for x in youtube.TAXONOMY["labels"]]
    questions = [(lf["name"], lf["question"], next(v for v in lf["answers"].values() if v != "abstain"))
                 for lf in youtube.LABELERS if lf["type"] == "prompt"]
    lm = make_lm("local", n_threads=args.threads)
    res = {}
    with dspy.context(lm=lm):
        for fmt, (adapter, in_instructions) in adapters().items():
            row = {}
            if not in_instructions:  # the zero-shot prompt lists its labels in the instructions already
                program = zero_shot_program(names, descs)
                program.adapter = adapter
                answers = [program(text=t).answer for t in texts]
                row["zero_shot_acc"] = round(sum(a == g for a, g in zip(answers, gold)) / len(gold), 3)
            for name, question, label in questions:
                signature = closed(AnswerQuestion, "answer", ["yes", "no"])
                if in_instructions:
                    signature = signature.with_instructions(signature.instructions + "\n\nAllowed answers: yes, no.")
                program = ClosedChoice(signature, "answer", ["yes", "no"], question=question)
                program.adapter = adapter
                preds = [program(text=t) for t in texts]
                yes = [p.answer == "yes" for p in preds]
                hits = [g == label for g, y in zip(gold, yes) if y]
                row[name] = {"auc": auc([(p.probs or {}).get("yes", 0.0) for p in preds], [g == label for g in gold]),
                             "yes_accuracy": round(sum(hits) / len(hits), 3) if hits else None,
                             "yes_coverage": round(sum(yes) / len(yes), 3)}
            res[fmt] = row
            print(fmt, row, flush=True)
    res["setup"] = {"records": len(texts), "split": "YouTube dev sample of benchmarks/youtube.py (valid split, seed 0)",
                    "model": model_identity("local"), "threads": args.threads}
    write_json(args.out, res)
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
