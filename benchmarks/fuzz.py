"""Fuzzing at length: the properties of tests/test_fuzz.py on many more cases, counting any traceback.

Every target of tests/test_fuzz.py (the config loader, load_project, the record readers, predict_file,
the taxonomy reader, the verbalizer and every LLM-answer parser, the DSPy programs answered by an LM
that says anything) draws its share of ``--cases`` with hypothesis, seeded by ``--seed``. A case
passes when it gives a valid result or a labelloop error with a message; anything else (an exception
that is not a ``LabelloopError``, or a result that breaks the property) is a traceback, counted and
listed with its input. predict_file labels with a TF-IDF student trained here first on the example
project's records by keyword and regex labelers (no LLM, about 10 s), as the tests' ``trained_run``.

    python benchmarks/fuzz.py --cases 20000 --seed 0    # ~3 min on 2 cores
    python benchmarks/fuzz.py --cases 500 --targets read_records predict_file

Writes (updates) benchmarks/results/reliability.json: ``fuzz_cases``, ``tracebacks_on_bad_input``,
``fuzz_findings_fixed`` and ``fuzz_findings`` (the defects fuzzing found and that are fixed, one line
each, with a regression test each in tests/test_fuzz.py), and ``fuzz`` (per target counts, the
command, the time); other keys of the file are kept.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "reliability.json"
sys.path.insert(0, str(ROOT))  # the targets and strategies live with the tests

# The defects fuzzing found, each fixed where it arose and pinned by a regression test in tests/test_fuzz.py.
FINDINGS = [
    "config: a labelers entry whose type is a list or mapping ({type: [zero_shot]}) raised TypeError (unhashable); "
    "now a ConfigError naming labelers.N.type",
    "config and taxonomy YAML nested too deeply ('[' * 5000) raised RecursionError; now a ConfigError",
    "config and taxonomy YAML holding an integer of more than 4,300 digits (Python's int limit), or a date that "
    "cannot be (2001-13-45), raised ValueError; now a ConfigError",
    "config: NUL characters and lone surrogates in any string (runs_dir: 'a\\x00b', name: '\\ud800') were accepted and "
    "failed later in paths (ValueError, UnicodeEncodeError); now a ConfigError naming the field",
    "config: a project name with a slash, or blank (name: a/b), was accepted: the run folder landed outside runs_dir "
    "or failed with FileNotFoundError; now a ConfigError",
    "a file name too long for the file system raised OSError (ENAMETOOLONG) in read_records, load_config, "
    "read_taxonomy and predict_file; now a DataError / ConfigError",
    "read_records: an empty CSV raised pandas' EmptyDataError, an unterminated quote its ParserError; now DataErrors",
    "read_records: a .parquet file that is not Parquet raised ArrowInvalid (a folder that is no saved dataset, "
    "FileNotFoundError); now DataErrors",
    "read_records: a JSONL file starting with a UTF-8 byte order mark was refused (line 1 not JSON) although "
    "predict_file reads it; now read as utf-8-sig",
    "read_records: a lone surrogate in a JSONL key or inside a list or object ({\"\\ud800\": 1}) raised "
    "UnicodeEncodeError in pandas; now a DataError naming the line and the key",
    "JSONL lines nested too deeply ('[' * 100000) raised RecursionError and numbers of more than 4,300 digits "
    "ValueError, in read_records and in predict_file (which now skips them as invalid_json)",
    "read_records and load_project accepted ids that are lists or objects ({\"id\": [1]}) as their printed text, "
    "where predict_file skips them; now a DataError",
    "load_project: a lone surrogate in a DataFrame's id or label (an object column) raised UnicodeEncodeError in "
    "pandas; now a DataError",
    "records_frame: a frame with two levels of column names raised TypeError, one with a repeated text column gave "
    "a garbled message; now DataErrors",
    "predict_file: a CSV whose header line is not UTF-8 (b'\\x80') raised UnicodeDecodeError; now a DataError",
    "predict_file: a Parquet file whose footer reads but whose pages are damaged raised OSError (thrift) midway; "
    "now a DataError, and still no output",
    "predict_file: an output path that is a folder labelled the whole file, then raised IsADirectoryError; now a "
    "DataError before reading",
    "Taxonomy: names that are lists raised TypeError (unhashable), names that are not text, blank, or hold a NUL or "
    "a lone surrogate were accepted (also from taxonomy files); now ConfigError (still a ValueError)",
    "option_probabilities: a log-prob too large for exp (1000.0) raised OverflowError, a log-prob that is text "
    "TypeError, a token without text KeyError, and NaN gave NaN probabilities; malformed alternatives are passed over",
    "closed-choice labelers: a malformed stored answer (text, probs as a list or as text) crashed vote, votes, fit, "
    "invalid and answer_ids; it now abstains and counts as invalid",
    "closed-choice labelers: NaN, infinite, negative or all-zero probabilities voted (NaN won the argmax, all zeros "
    "voted the first option) and NaN poisoned batch calibration; such answers now abstain",
    "IRR labeler: malformed answers (chosen as a number or mapping, unhashable items, invalid as text, a guess list "
    "that is no list) crashed vote_sets, votes, direct_scores, invalid and the program's cleaning; they now abstain",
    "IRR labeler: a label repeated in chosen or candidates voted +2 / -2 (the sparse matrix summed the repeats); "
    "now once",
    "chunk_text with max_words 0 (an IRR labeler built with chunk_words=0) never returned; now a ConfigError",
    "taxonomy rules: normalise, validate_taxonomy, apply_edits and copied_summary crashed on labels or edits that "
    "are not objects (a bare string, a number, labels: 5); they are now problems sent back to the LM",
]


def train_student(folder: Path):
    """The tests' ``trained_run``: a TF-IDF student over keyword and regex votes on the example records."""
    import pandas as pd

    import labelloop
    from labelloop.flows.predict import load_model
    from tests.conftest import EXAMPLE, heuristic_config

    records = pd.read_json(EXAMPLE / "records.jsonl", lines=True)
    gold = {}
    for split in ("dev", "test"):
        gold[split] = frame = pd.read_json(EXAMPLE / f"{split}.jsonl", lines=True)
        frame["label"] = frame["label"].where(frame["label"].isin(["billing", "shipping"]), "other_topics")
    project = labelloop.load_project(heuristic_config(abstain={"precision": 0.9}), base_dir=folder, data=records,
                                     gold=gold["dev"], test=gold["test"])
    return load_model(labelloop.run(project, show_progress=False))


def fuzz_target(name: str, strategy, check, cases: int, seed: int) -> dict:
    """Run ``check`` on ``cases`` drawn inputs; count tracebacks (with the first few inputs) instead of stopping."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as seeded

    counts: Counter = Counter()
    examples: list[dict] = []
    ran = 0

    @seeded(seed)
    @settings(max_examples=cases, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def run(args):
        nonlocal ran
        ran += 1
        try:
            check(*args)
        except Exception as exc:  # the property broke: not a labelloop error, or an invalid result
            key = f"{type(exc).__name__}: {str(exc)[:120]}"
            counts[key] += 1
            if counts[key] == 1 and len(examples) < 5:
                examples.append({"error": key.encode("utf-8", "backslashreplace").decode("utf-8"),
                                 "input": ascii(args)[:400], "where": traceback.format_exc(limit=-3)[-600:]})

    run()
    return {"cases": ran, "tracebacks": sum(counts.values()), "kinds": dict(counts.most_common()), "examples": examples}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=10_000, help="cases in total, shared evenly by the targets")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--targets", nargs="*", help="only these targets (default: all)")
    parser.add_argument("--no-write", action="store_true", help="print the results without updating reliability.json")
    args = parser.parse_args()

    import hypothesis

    from tests.test_fuzz import targets

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        needs_student = not args.targets or "predict_file" in args.targets
        student = train_student(Path(folder)) if needs_student else None
        chosen = {k: v for k, v in targets(student).items() if not args.targets or k in args.targets}
        unknown = sorted(set(args.targets or ()) - set(chosen))
        if unknown:
            parser.error(f"unknown target(s) {unknown}; choose from {sorted(targets(None))}")
        share, extra = divmod(args.cases, len(chosen))
        per_target = {}
        for i, (name, (strategy, check)) in enumerate(chosen.items()):
            t0 = time.perf_counter()
            per_target[name] = fuzz_target(name, strategy, check, share + (i < extra), args.seed + i)
            per_target[name]["seconds"] = round(time.perf_counter() - t0, 1)
            print(f"{name:24s} {per_target[name]['cases']:6d} cases  {per_target[name]['tracebacks']:4d} tracebacks  "
                  f"{per_target[name]['seconds']:6.1f} s", flush=True)
            for example in per_target[name]["examples"]:
                print(f"    {example['error']}\n      input: {example['input'][:300]}\n{example['where']}", flush=True)
    seconds = round(time.perf_counter() - started, 1)
    total = sum(t["cases"] for t in per_target.values())
    tracebacks = sum(t["tracebacks"] for t in per_target.values())
    print(f"{total} cases, {tracebacks} tracebacks, {seconds} s")
    if args.no_write:
        return
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    results.update({
        "fuzz_cases": total,
        "tracebacks_on_bad_input": tracebacks,
        "fuzz_findings_fixed": len(FINDINGS),
        "fuzz_findings": FINDINGS,
        "fuzz": {"command": "python benchmarks/fuzz.py " + " ".join(sys.argv[1:]), "seed": args.seed, "seconds": seconds,
                 "hypothesis": hypothesis.__version__, "python": platform.python_version(),
                 "property": "any input gives a valid result or a labelloop error with a message; never another "
                             "exception, never a partial output file",
                 "targets": per_target}})
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
