"""LLM budget: student test accuracy against the share of LLM answers used on train, budgeted beside random selection.

For each fraction of the train split's (record, LLM labeler) answers, one labeling under
``llm_budget: {fraction: F}`` with the budgeted selection (label-model entropy plus vote
disagreement, ``random_share`` 0.5) and one with purely random selection at the same budget (the
same rounds with ``random_share: 1.0``); the label model's probabilities train the student, which
is scored on the test split (YouTube also on the 1,386 train records outside its sample, ``*_heldout``).
One run each, seeded (the project seed); the example project, whose 80 test records put one record at
1.25 points, is also run at 0.3 once per seed in ``--example-seeds`` (``setup.example.over_seeds``).

Answers come from the vote store and are charged against the budget (``count_stored=True``), so the
fraction is honest on a store that already holds every answer. Fill the stores first; without
``--stored-only`` a missing answer is asked with the configured model (and stored):

    python benchmarks/youtube.py                  # YouTube: benchmarks/.cache/youtube (same sizes and seed)
    labelloop label data/example/config.yaml      # the example project: data/example/.labelloop
    python benchmarks/budget.py --stored-only     # refuses to start unless every answer is stored

Writes benchmarks/results/budget.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import youtube  # noqa: E402  (benchmarks/youtube.py: prepare() and its cache folder)

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "data" / "example" / "config.yaml"
FRACTIONS = (1.0, 0.5, 0.3, 0.2, 0.1)
BUDGETED_SHARE = 0.5  # llm_budget's default random_share


def missing_answers(project) -> int:
    """LLM calls a full labeling of the project would still make (0: every answer is stored)."""
    from labelloop.flows.plan import plan_calls

    return sum(row["llm_calls"] for row in plan_calls(project))


def student_accuracy(project, result, scored_on: dict) -> dict[str, float]:
    """The student trained on the label model's probabilities over ``result``'s train votes (the label model as
    ``labelloop run`` fits it), scored on each of ``scored_on`` (name -> (texts, gold label ids))."""
    from labelloop.flows.budget import label_model_votes
    from labelloop.labelers.analysis import scores
    from labelloop.labelers.student import predict_proba_full
    from labelloop.labelers.tasks import fit_label_model

    cfg, task, names = project.config, project.task, list(project.taxonomy.names)
    train, dev, k = result.splits["train"], result.splits["dev"], len(names)
    model = fit_label_model(task, cfg.label_model, train.votes, names, project.gold("dev"), dev.votes, cfg.seed,
                            label_model_votes(task, result))[0]
    P, covered = model.predict_proba(train.votes), task.covered(train.votes)
    student = task.train_student(train.texts, P, covered, cfg.student, cfg.seed)
    return {name: scores(y, predict_proba_full(student, x, k).argmax(axis=1), k)["accuracy"]
            for name, (x, y) in scored_on.items()}


def _suffix(name: str) -> str:
    return "" if name == "test" else f"_{name}"


def budgeted(project, fraction: float | None, random_share: float):
    """``label_dataset`` under ``llm_budget: {fraction, random_share}`` (None: no budget), stored answers charged."""
    from labelloop import label_dataset
    from labelloop.flows.config import LLMBudgetSpec

    spec = None if fraction is None else LLMBudgetSpec(fraction=fraction, random_share=random_share)
    project = dataclasses.replace(project, config=project.config.model_copy(update={"llm_budget": spec}))
    return label_dataset(project, show_progress=False, count_stored=True)


def curve(name: str, project, scored_on: dict, fractions, stored_only: bool) -> tuple[dict, dict]:
    """{fraction: budgeted and random student accuracy, answers used} and this dataset's setup."""
    if stored_only and (missing := missing_answers(project)):
        sys.exit(f"{name}: {missing} LLM answers are not stored yet (--stored-only); fill the store first (see --help)")
    started, calls = time.time(), 0
    full = budgeted(project, None, 0.0)
    calls += full.llm_calls
    setup = {"train_records": len(full.splits["train"].ids), "llm_labelers": [lf.name for lf in project.llm_labelers],
             "train_pairs": len(full.splits["train"].ids) * len(project.llm_labelers),
             "dev_records": len(project.splits["dev"]) if "dev" in project.splits else 0,
             **{f"{on}_records": len(y) for on, (_, y) in scored_on.items()},
             **{f"student_acc_all_answers{_suffix(on)}": acc
                for on, acc in student_accuracy(project, full, scored_on).items()},
             "label_model": project.config.label_model, "student_features": project.config.student.features,
             "seed": project.config.seed}
    out = {}
    for fraction in fractions:
        row = {}
        for mode, share in (("budgeted", BUDGETED_SHARE), ("random", 1.0)):
            result = budgeted(project, fraction, share)
            calls += result.llm_calls
            b = result.budget
            row |= {f"{mode}_acc{_suffix(on)}": acc for on, acc in student_accuracy(project, result, scored_on).items()}
            row["llm_calls" if mode == "budgeted" else "random_llm_calls"] = b.spent
            row[f"{mode}_rounds"] = len(b.rounds)
            row[f"{mode}_stopped"] = b.stopped
            row[f"{mode}_label_model_dev"] = b.dev_scores[-1]
        out[str(fraction)] = row
        print(f"  {name} {fraction:>4}: budgeted {row['budgeted_acc']:.3f} ({row['llm_calls']} answers), "
              f"random {row['random_acc']:.3f} ({row['random_llm_calls']} answers)", flush=True)
    setup |= {"llm_calls_this_run": calls, "wall_s": round(time.time() - started, 1)}
    return out, setup


def over_seeds(name: str, project, scored_on: dict, fraction: float, seeds) -> dict:
    """At one fraction, the student with every answer, budgeted and at random, per project seed (the draws, the
    tie-breaks and the student's seed), and their means: one run each is noisy on a small test split."""
    import statistics

    rows = {}
    for seed in seeds:
        p = dataclasses.replace(project, config=project.config.model_copy(update={"seed": seed}))
        row = {"all_answers": student_accuracy(p, budgeted(p, None, 0.0), scored_on)["test"]}
        for mode, share in (("budgeted", BUDGETED_SHARE), ("random", 1.0)):
            row[f"{mode}_acc"] = student_accuracy(p, budgeted(p, fraction, share), scored_on)["test"]
        rows[str(seed)] = row
        print(f"  {name} seed {seed} at {fraction}: every answer {row['all_answers']:.3f}, budgeted "
              f"{row['budgeted_acc']:.3f}, random {row['random_acc']:.3f}", flush=True)
    means = {k: round(statistics.mean(r[k] for r in rows.values()), 4) for k in ("all_answers", "budgeted_acc",
                                                                               "random_acc")}
    wins = sum(r["budgeted_acc"] > r["random_acc"] for r in rows.values())
    return {"fraction": fraction, "seeds": rows, "mean": means, "budgeted_beats_random": f"{wins} of {len(rows)}"}


def _label_model(project, args):
    """The project with ``label_model`` set to ``--label-model`` (every run of the curve uses the same)."""
    return dataclasses.replace(project, config=project.config.model_copy(update={"label_model": args.label_model}))


def youtube_curve(args) -> tuple[dict, dict]:
    import numpy as np

    from labelloop import load_project
    from labelloop.flows.config import DataSpec
    from labelloop.flows.io import read_records

    if not youtube.DATA.exists():
        sys.exit(f"{youtube.DATA} not found: the YouTube part needs the shared YouTube dataset (or --skip-youtube)")
    project = _label_model(load_project(youtube.prepare(args.train_size, args.dev_size, args.seed, args.model)), args)
    test = read_records(DataSpec(path=youtube.CACHE / "test.jsonl"), require_label=True)
    scored_on = {"test": (test["text"].tolist(), np.array([youtube.NAMES.index(x) for x in test["label"]])),
                 "heldout": youtube.heldout(project.splits["train"]["id"])}
    out, setup = curve("youtube", project, scored_on, args.fractions, args.stored_only)
    return out, {**setup, "store": str(project.config.store)}


def example_curve(args) -> tuple[dict, dict]:
    import numpy as np

    from labelloop import load_project

    project = _label_model(load_project(args.example), args)
    scored_on = {"test": (project.splits["test"]["text"].tolist(), np.array(project.gold("test")))}
    out, setup = curve("example", project, scored_on, args.fractions, args.stored_only)
    if args.example_seeds:
        setup["over_seeds"] = over_seeds("example", project, scored_on, 0.3, args.example_seeds)
    return out, {**setup, "store": str(project.config.store)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-size", type=int, default=300, help="YouTube train rows (as benchmarks/youtube.py)")
    parser.add_argument("--dev-size", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default="local")
    parser.add_argument("--example", type=Path, default=EXAMPLE, help="the example project's config")
    parser.add_argument("--fractions", type=float, nargs="+", default=list(FRACTIONS))
    parser.add_argument("--label-model", default="auto", choices=("auto", "snorkel", "majority"),
                        help="the label model of every run (auto: chosen on the gold dev records, as labelloop does)")
    parser.add_argument("--example-seeds", type=int, nargs="*", default=list(range(8)),
                        help="the example project at 0.3 once per seed (its 80 test records are noisy); none: skip")
    parser.add_argument("--skip-youtube", action="store_true")
    parser.add_argument("--skip-example", action="store_true")
    parser.add_argument("--stored-only", action="store_true", help="refuse to start unless every answer is stored")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "budget.json")
    args = parser.parse_args()

    from labelloop.flows.budget import DEV_TOLERANCE, PATIENCE
    from labelloop.flows.config import LLMBudgetSpec
    from labelloop.flows.io import write_json

    spec = LLMBudgetSpec(fraction=1.0)
    res = {"setup": {"fractions": args.fractions, "rounds": spec.rounds, "budgeted_random_share": spec.random_share,
                     "random_random_share": 1.0, "count_stored": True, "dev_tolerance": DEV_TOLERANCE,
                     "patience": PATIENCE, "model": args.model,
                     "llm_calls": "(record, LLM labeler) answers used on the train split, charged against the budget "
                                  "(count_stored: answers from the vote store count); gold splits are answered in full",
                     "scored_on": "student accuracy on the test split"}}
    if not args.skip_youtube:
        res["youtube"], res["setup"]["youtube"] = youtube_curve(args)
    if not args.skip_example:
        res["example"], res["setup"]["example"] = example_curve(args)
    write_json(args.out, res)

    for name in ("youtube", "example"):
        if name not in res:
            continue
        s = res["setup"][name]
        print(f"\n{name}: {s['train_records']} train records x {len(s['llm_labelers'])} LLM labelers = "
              f"{s['train_pairs']} answers; student with every answer: {s['student_acc_all_answers']:.3f} on "
              f"{s['test_records']} test records")
        print(f"{'fraction':>9}{'budgeted':>10}{'answers':>9}{'random':>9}{'answers':>9}   stopped (budgeted / random)")
        for fraction, row in res[name].items():
            print(f"{fraction:>9}{row['budgeted_acc']:>10.3f}{row['llm_calls']:>9}{row['random_acc']:>9.3f}"
                  f"{row['random_llm_calls']:>9}   {row['budgeted_stopped']} / {row['random_stopped']}")
        print(f"LLM calls made in this run: {s['llm_calls_this_run']} (0 when every answer was stored); {s['wall_s']:.0f} s")
        if "over_seeds" in s:
            o = s["over_seeds"]
            print(f"{name} at {o['fraction']} over {len(o['seeds'])} seeds (mean): every answer {o['mean']['all_answers']:.3f}, "
                  f"budgeted {o['mean']['budgeted_acc']:.3f}, random {o['mean']['random_acc']:.3f}; budgeted beats random "
                  f"in {o['budgeted_beats_random']}")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
