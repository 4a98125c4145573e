"""Labeling functions the LLM writes, against prompted LLM labelers and hand-written rules: student accuracy and LLM calls.

On YouTube spam (the sample of benchmarks/youtube.py: 300 train rows with labels hidden, 50 gold dev
rows, 250 test rows) and on the example project, three students are trained the same way (Snorkel
label model, then the configured student) from three labeler sets on the same records, and scored
on the test split (YouTube also on the 1,386 train records outside the sample, `*_heldout`):

- generated: only the keyword, regex and similar labelers `labelloop propose-lfs` wrote (the LLM saw
  the taxonomy and gold dev texts, never a train or test text);
- prompted: only the LLM labelers of the project (zero-shot and prompted questions), one call per
  record per labeler on train and dev;
- hand-written: only the project's own keyword, regex and Python labelers.

The proposals and the prompted answers are kept in each project's vote store, so a second run makes
no LLM call. Fill the stores first (or let this run ask):

    python benchmarks/youtube.py                  # benchmarks/.cache/youtube
    labelloop label data/example/config.yaml      # data/example/.labelloop
    python benchmarks/generated_lfs.py

To show that the proposals' cost does not grow with the records, the YouTube proposals are also
made over the whole train split (1,686 rows outside the dev sample) as the unlabeled pool (`--skip-scale` leaves it out).
Writes benchmarks/results/generated_lfs.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import budget  # noqa: E402  (benchmarks/budget.py: student_accuracy)
import youtube  # noqa: E402  (benchmarks/youtube.py: prepare(), LABELERS and its cache folder)

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "data" / "example" / "config.yaml"


def student_acc(project, scored_on: dict) -> tuple[dict[str, float], int, float]:
    """The student's accuracy from this labeler set on each of ``scored_on`` (name -> (texts, gold label ids)), the
    LLM answers labeling used (train and dev), and the share of train records some labeler voted on."""
    from labelloop import label_dataset

    result = label_dataset(project, show_progress=False)
    used = sum(len(result.splits[s].ids) for s in ("train", "dev") if s in result.splits) * len(project.llm_labelers)
    train = result.splits["train"]
    coverage = float(project.task.covered(train.votes).mean())
    return budget.student_accuracy(project, result, scored_on), used, coverage


def compare(name: str, project, output: Path, scored_on: dict, lm_threads: int | None) -> dict:
    from labelloop.flows.propose_lfs import propose_lfs
    from labelloop.labelers.base import LLMLabeler

    cfg = project.config.model_copy(update={"propose_lfs": project.config.propose_lfs.model_copy(update={"output": output})})
    if lm_threads:
        cfg = cfg.model_copy(update={"lm": cfg.lm.model_copy(update={"n_threads": lm_threads})})
    started = time.time()
    proposed = propose_lfs(dataclasses.replace(project, config=cfg), overwrite=True, show_progress=False)
    propose_s = time.time() - started
    generated = _with_labelers(project, [], _generated_lfs(project, output))
    prompted = _with_labelers(project, [lf for lf in project.llm_labelers if isinstance(lf, LLMLabeler)], [])
    handwritten = _with_labelers(project, [], project.heuristic_lfs)
    row = {"llm_calls": proposed.llm_calls, "llm_calls_this_run": proposed.calls_this_run, "lfs_kept": len(proposed.kept),
           "lfs_proposed": len(proposed.candidates), "rounds": len(proposed.rounds), "stopped": proposed.stop_reason,
           "propose_s": round(propose_s, 1)}
    for key, variant in (("", generated), ("prompted_", prompted), ("handwritten_", handwritten)):
        acc, used, coverage = student_acc(variant, scored_on)
        row |= {f"{key}student_acc{'' if on == 'test' else '_' + on}": round(a, 4) for on, a in acc.items()}
        row[f"{key}train_coverage"] = round(coverage, 4)
        if key == "prompted_":
            row["prompted_llm_calls"] = used
    row["llm_call_share"] = round(row["llm_calls"] / max(1, row["prompted_llm_calls"]), 4)
    row["labelers"] = {"generated": [c.name for c in proposed.kept],
                       "prompted": [lf.name for lf in prompted.llm_labelers],
                       "handwritten": [lf.name for lf in handwritten.heuristic_lfs]}
    row["setup"] = {"train_records": len(project.splits["train"]), "dev_records": len(project.splits["dev"]),
                    **{f"{on}_records": len(y) for on, (_, y) in scored_on.items()}, "label_model": project.config.label_model,
                    "student_features": project.config.student.features, "seed": project.config.seed,
                    "model": project.config.lm.model, "generated_file": str(output.relative_to(ROOT))}
    print(f"{name}: generated {row['student_acc']:.3f} ({row['lfs_kept']} LFs, {row['llm_calls']} LLM calls) | "
          f"prompted {row['prompted_student_acc']:.3f} ({row['prompted_llm_calls']} calls) | "
          f"hand-written {row['handwritten_student_acc']:.3f}"
          + "".join(f" | held out ({len(scored_on[on][1])}): generated {row['student_acc_' + on]:.3f}, prompted "
                    f"{row['prompted_student_acc_' + on]:.3f}, hand-written {row['handwritten_student_acc_' + on]:.3f}"
                    for on in scored_on if on != "test"), flush=True)
    return row


def _with_labelers(project, llm, heuristic):
    return dataclasses.replace(project, llm_labelers=list(llm), heuristic_lfs=list(heuristic))


def _generated_lfs(project, output: Path) -> list:
    from labelloop.flows.config import included_labelers

    return [lf for spec in included_labelers({"include": str(output)}, "generated", output.parent, False)
            for lf in spec.build(project.taxonomy)]


VARIANTS = {"word_forms, min_dev_matches 1": {"word_forms": True, "min_dev_matches": 1},
            "word_forms, min_dev_matches 0": {"word_forms": True, "min_dev_matches": 0},
            "whole words, min_dev_matches 1": {"word_forms": False, "min_dev_matches": 1},
            "word_forms, min_dev_matches 1, 6 rounds": {"word_forms": True, "min_dev_matches": 1, "rounds": 6},
            "word_forms, min_dev_matches 1, 16 examples": {"word_forms": True, "min_dev_matches": 1, "examples": 16},
            "word_forms, min_dev_matches 1, 2 samples": {"word_forms": True, "min_dev_matches": 1, "samples": 2}}


def settings_on_holdout(project, holdout, seed: int) -> dict:
    """The generated student's accuracy on YouTube valid rows outside the gold dev sample, per propose-lfs setting:
    how the defaults were chosen, without the test split."""
    import numpy as np

    from labelloop.flows.propose_lfs import propose_lfs

    y = np.array([youtube.NAMES.index(x) for x in holdout["label"]])
    out = {}
    for name, settings in VARIANTS.items():
        output = youtube.CACHE / f"generated_lfs_{name.replace(' ', '_').replace(',', '')}.yaml"
        spec = project.config.propose_lfs.model_copy(update={**settings, "output": output})
        cfg = project.config.model_copy(update={"propose_lfs": spec})
        proposed = propose_lfs(dataclasses.replace(project, config=cfg), overwrite=True, show_progress=False)
        variant = _with_labelers(project, [], _generated_lfs(project, output))
        acc, _, coverage = student_acc(variant, {"holdout": (holdout["text"].tolist(), y)})
        out[name] = {"holdout_acc": round(acc["holdout"], 4), "train_coverage": round(coverage, 4),
                     "llm_calls": proposed.llm_calls, "lfs_kept": len(proposed.kept)}
        print(f"youtube holdout ({len(y)} valid rows outside dev), {name}: {acc['holdout']:.3f} ({len(proposed.kept)} LFs, "
              f"coverage {coverage:.2f}, {proposed.llm_calls} calls)", flush=True)
    return out


def youtube_part(args) -> tuple[dict, dict | None]:
    import numpy as np
    import pandas as pd

    from labelloop import load_project
    from labelloop.flows.config import DataSpec
    from labelloop.flows.io import read_records

    project = load_project(youtube.prepare(args.train_size, args.dev_size, args.seed, args.model))
    test = read_records(DataSpec(path=youtube.CACHE / "test.jsonl"), require_label=True)
    y_test = np.array([youtube.NAMES.index(x) for x in test["label"]])
    rows = [json.loads(line) for line in youtube.DATA.open(encoding="utf-8")]
    dev_ids = set(project.splits["dev"]["id"])
    holdout = pd.DataFrame([{"id": r["id"], "text": r["text"], "label": youtube.NAMES[r["label"]]} for r in rows
                            if r["split"] == "valid" and r["id"] not in dev_ids])
    tuning = settings_on_holdout(project, holdout, args.seed)
    scored_on = {"test": (test["text"].tolist(), y_test), "heldout": youtube.heldout(project.splits["train"]["id"])}
    row = compare("youtube", project, youtube.CACHE / "generated_lfs.yaml", scored_on, args.threads)
    row["settings_on_valid_holdout"] = tuning
    scale = None
    if not args.skip_scale:  # the same proposals with the whole train split as the unlabeled pool
        from labelloop.flows.propose_lfs import propose_lfs

        train = pd.DataFrame([{"id": r["id"], "text": r["text"]} for r in rows
                              if r["split"] == "train" and r["id"] not in dev_ids])
        big = dataclasses.replace(project, splits={**project.splits, "train": train})
        cfg = project.config.model_copy(update={"propose_lfs": project.config.propose_lfs.model_copy(
            update={"output": youtube.CACHE / "generated_lfs_all_train.yaml"})})
        proposed = propose_lfs(dataclasses.replace(big, config=cfg), overwrite=True, show_progress=False)
        scale = {"records": {len(project.splits["train"]): row["llm_calls"], len(train): proposed.llm_calls},
                 "lfs_kept": {len(project.splits["train"]): row["lfs_kept"], len(train): len(proposed.kept)}}
        print(f"youtube: proposal calls with {len(project.splits['train'])} vs {len(train)} unlabeled records: "
              f"{row['llm_calls']} vs {proposed.llm_calls}", flush=True)
    return row, scale


def example_part(args) -> dict:
    import numpy as np

    from labelloop import load_project

    project = load_project(args.example, skip_missing_includes=True)
    test = project.splits["test"]
    output = ROOT / "benchmarks" / ".cache" / "example" / "generated_lfs.yaml"
    return compare("example", project, output, {"test": (test["text"].tolist(), np.array(project.gold("test")))},
                   args.threads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-size", type=int, default=300, help="YouTube train rows (as benchmarks/youtube.py)")
    parser.add_argument("--dev-size", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default="local")
    parser.add_argument("--threads", type=int, default=None, help="lm.n_threads for the proposals (default: adaptive)")
    parser.add_argument("--example", type=Path, default=EXAMPLE)
    parser.add_argument("--skip-youtube", action="store_true")
    parser.add_argument("--skip-scale", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "generated_lfs.json")
    args = parser.parse_args()

    from labelloop.flows.io import write_json

    started = time.time()
    out = {}
    if not args.skip_youtube:
        if not youtube.DATA.exists():
            sys.exit(f"{youtube.DATA} not found: the YouTube part needs the shared YouTube dataset (or --skip-youtube)")
        out["youtube"], scale = youtube_part(args)
        if scale:
            out["youtube"]["llm_calls_by_unlabeled_records"] = scale
    out["example"] = example_part(args)
    out["command"] = "python benchmarks/generated_lfs.py"
    out["wall_s"] = round(time.time() - started, 1)
    write_json(args.out, out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
