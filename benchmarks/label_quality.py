"""Likely-wrong labels on YouTube spam: does the ranking find deliberately flipped labels, and does a review of
the records it picks help the student more than a review of random records?

The benchmark project is benchmarks/youtube.py's (300 train records, 50 gold dev, 250 test), labelled
from its vote store only: no LLM call is made, and the script stops if an answer is missing. The label
model's probabilities on the train records are the labels; 10% of the covered records (seeded) get
another label on purpose (the probabilities of the two labels are swapped, so a flipped record looks
like a confident label-model output for the wrong label). The ranking (out-of-fold TF-IDF students,
cleanlab's label quality scores, ``labelloop.labelers.quality``) scores every covered record:

- ``auroc``: area under the ROC curve of the score for "was flipped";
- ``precision_at_top5pct``: share of flipped records among the 5% ranked most likely wrong;
- the review round: the 50 records the likely-wrong rule picks (as ``labelloop review export`` does,
  at most half per suggested label) get their true labels (train_gold.jsonl), the student is trained
  again, and its accuracy gain over the student trained on the flipped labels is ``review_gain_acc``;
  ``random_gain_acc`` is the same for 50 random train records (mean of five draws).

The gains are scored on the 1,386 YouTube train records outside the benchmark's sample (their gold
labels; the student never sees them), and on the 250-record test split beside them (``*_test``). A
round of 50 changes the student's answer on a handful of records, and the test split is too small to
see it: it scores the student trained on every true label below the one trained on the label model's
labels, and below most flipped ones (``details``), so its gains are noise in both directions. (The
held-out records include the three sets on which the ranking's setting was chosen, below: that choice
used their texts and WRENCH's votes, not the student's accuracy on them.)

Each figure is the mean over five flip seeds (``--flip-seeds``); ``details.by_flip_seed`` has each one,
and ``details`` the student's accuracy without flips and on all true labels, for scale.

The ranking's setting (the student's weight beside the label model's confidence, cleanlab's method)
was chosen beforehand on records apart from the benchmark's: three seeded sets of 300 other YouTube
train records, labelled by WRENCH's ten heuristic labeling functions and Snorkel, scored on flipped
labels (the label model's own errors shown beside; ``selection`` in the results; ``--skip-selection`` skips it).

    python benchmarks/youtube.py          # fills benchmarks/.cache/youtube/.labelloop/votes.sqlite (LLM)
    python benchmarks/label_quality.py    # no LLM; about 30 minutes on 2 shared cores

Writes benchmarks/results/label_quality.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import youtube  # noqa: E402  (benchmarks/youtube.py: prepare() and its cache folder)

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = (0.0, 0.25, 0.5, 0.75, 0.9, 1.0)
METHODS = ("self_confidence", "normalized_margin", "confidence_weighted_entropy")
TIE = 0.005  # AUROC differences smaller than this count as ties when choosing the setting


def flip(P, covered, rate: float, rng):
    """Swap the label model's top label with another (random) one on ``rate`` of the covered records.

    Returns:
        (flipped probabilities, the labels now given, boolean mask of the flipped records).
    """
    import numpy as np

    P = P.copy()
    given = P.argmax(axis=1)
    idx = np.flatnonzero(covered)
    chosen = rng.choice(idx, size=round(rate * len(idx)), replace=False)
    k = P.shape[1]
    for i in chosen:
        new = rng.choice([c for c in range(k) if c != given[i]])
        P[i, [given[i], new]] = P[i, [new, given[i]]]
        given[i] = new
    mask = np.zeros(len(P), dtype=bool)
    mask[chosen] = True
    return P, given, mask


def oof(texts, P, seed: int):
    from labelloop.labelers.quality import out_of_fold_proba
    from labelloop.labelers.student import make_student

    return out_of_fold_proba(texts, P, lambda: make_student("tfidf", seed=seed), folds=5, seed=seed)


def selection(args, exclude: set[str]) -> dict:
    """The ranking's settings scored on three sets of YouTube train records outside the benchmark's sample."""
    import numpy as np

    from labelloop.labelers.label_model import make_label_model
    from labelloop.labelers.quality import auroc, rank_label_issues

    rows = [json.loads(line) for line in youtube.DATA.open(encoding="utf-8")]
    pool = [r for r in rows if r["split"] == "train" and r["id"] not in exclude]
    rng = np.random.default_rng(1000 + args.seed)
    order = rng.permutation(len(pool))
    table = {f"{m}@{w}": {"flip_auroc": [], "label_model_error_auroc": []} for m in METHODS for w in WEIGHTS}
    sets = []
    for s in range(3):
        chosen = [pool[i] for i in order[s * args.train_size:(s + 1) * args.train_size]]
        L = np.array([r["weak_labels"] for r in chosen])
        y = np.array([r["label"] for r in chosen])
        covered = (L != -1).any(axis=1)
        model = make_label_model("snorkel", 2, args.seed).fit(L[covered])
        P = model.predict_proba(L[covered])
        texts = [r["text"] for r, c in zip(chosen, covered) if c]
        y = y[covered]
        P_flip, given, flipped = flip(P, np.ones(len(P), bool), args.flip_rate, np.random.default_rng(args.seed + s))
        S_flip, S = oof(texts, P_flip, args.seed), oof(texts, P, args.seed)
        wrong = P.argmax(axis=1) != y
        sets.append({"records": len(chosen), "covered": int(covered.sum()), "flipped": int(flipped.sum()),
                     "label_model_errors": int(wrong.sum())})
        for m in METHODS:
            for w in WEIGHTS:
                row = table[f"{m}@{w}"]
                row["flip_auroc"].append(auroc(rank_label_issues(P_flip, S_flip, weight=w, method=m, given=given), flipped))
                row["label_model_error_auroc"].append(auroc(rank_label_issues(P, S, weight=w, method=m), wrong))
    for row in table.values():
        for key in ("flip_auroc", "label_model_error_auroc"):
            row[key] = round(float(np.mean(row[key])), 4)
    top = max(row["flip_auroc"] for row in table.values())
    tied = [key for key in table if table[key]["flip_auroc"] >= top - TIE]
    best = min(tied, key=lambda key: (METHODS.index(key.split("@")[0]), float(key.split("@")[1])))
    return {"data": "YouTube train records outside the benchmark sample; WRENCH's 10 heuristic LFs; Snorkel",
            "sets": sets, "by_setting": table, "tied": tied, "chosen": best,
            "criterion": f"AUROC for flipped labels (mean over the sets); settings within {TIE} of the best count as "
                         "tied, and of those the first method listed (self_confidence: the probability of the label, "
                         "the plainest to read), then the largest share for the label model's own confidence, is "
                         "chosen; the AUROC for the label model's own errors is shown beside it"}


def student_accuracy(texts, P, covered, spec, seed, scored_on: dict) -> dict[str, float]:
    """The student trained on ``P``: its accuracy on each of ``scored_on`` (name -> (texts, gold label ids))."""
    from labelloop.labelers.analysis import scores
    from labelloop.labelers.student import predict_proba_full
    from labelloop.labelers.tasks import MultiClass

    student = MultiClass().train_student(texts, P, covered, spec, seed)
    k = P.shape[1]
    return {name: scores(y, predict_proba_full(student, x, k).argmax(axis=1), k)["accuracy"]
            for name, (x, y) in scored_on.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train-size", type=int, default=300)
    parser.add_argument("--dev-size", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default="local")
    parser.add_argument("--flip-rate", type=float, default=0.1)
    parser.add_argument("--budget", type=int, default=50)
    parser.add_argument("--random-draws", type=int, default=5)
    parser.add_argument("--flip-seeds", type=int, default=5, help="repeat the flips with this many seeds; report means")
    parser.add_argument("--skip-selection", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "label_quality.json")
    args = parser.parse_args()
    if not youtube.DATA.exists():
        sys.exit(f"{youtube.DATA} not found: this benchmark needs the shared YouTube dataset")

    import numpy as np
    import pandas as pd

    from labelloop import label_dataset, load_project
    from labelloop.flows.config import DataSpec
    from labelloop.flows.io import read_records, write_json
    from labelloop.flows.plan import plan_calls
    from labelloop.labelers.quality import (
        METHOD,
        WEIGHT,
        auroc,
        find_issues,
        precision_at,
        rank_label_issues,
        select_diverse,
    )

    started = time.time()
    project = load_project(youtube.prepare(args.train_size, args.dev_size, args.seed, args.model))
    missing = sum(row["llm_calls"] for row in plan_calls(project))
    if missing:
        sys.exit(f"{missing} LLM answers are not in {project.config.store}; run `python benchmarks/youtube.py` first "
                 "(this benchmark makes no LLM call)")
    names, k, seed, spec = youtube.NAMES, 2, args.seed, project.config.student
    result = label_dataset(project, show_progress=False)
    assert result.llm_calls == 0
    train = result.splits["train"]
    task = project.task
    y_dev = np.array([names.index(x) for x in project.splits["dev"]["label"]])
    from labelloop.labelers.tasks import fit_label_model

    model = fit_label_model(task, project.config.label_model, train.votes, names, y_dev.tolist(),
                            result.splits["dev"].votes, seed)[0]
    P, covered = model.predict_proba(train.votes), task.covered(train.votes)
    gold = pd.read_json(youtube.CACHE / "train_gold.jsonl", lines=True).set_index("id").loc[train.ids, "label"]
    y_train = np.array([names.index(x) for x in gold])
    test = read_records(DataSpec(path=youtube.CACHE / "test.jsonl"), require_label=True)
    y_test = np.array([names.index(x) for x in test["label"]])
    scored_on = {"heldout": youtube.heldout(train.ids), "test": (test["text"].tolist(), y_test)}
    outside = scored_on["heldout"][0]

    picked = None if args.skip_selection else selection(args, set(train.ids))

    idx = np.flatnonzero(covered)
    texts_c = [train.texts[i] for i in idx]
    real = P.argmax(axis=1) != y_train
    no_flip_acc = student_accuracy(train.texts, P, covered, spec, seed, scored_on)
    gold_acc = student_accuracy(train.texts, np.eye(k)[y_train], np.ones(len(P), bool), spec, seed, scored_on)
    runs = []
    for flip_seed in range(seed, seed + args.flip_seeds):
        # the flipped labels and the ranking of the covered records
        P_flip, given, flipped = flip(P, covered, args.flip_rate, np.random.default_rng(flip_seed))
        S = oof(texts_c, P_flip[idx], seed)
        score = rank_label_issues(P_flip[idx], S, given=given[idx])
        flagged = find_issues(P_flip[idx], S, given=given[idx])
        base_acc = student_accuracy(train.texts, P_flip, covered, spec, seed, scored_on)

        # the review round: 50 likely-wrong records (at most half per suggested label) against 50 random ones
        order = idx[np.argsort(-score, kind="stable")]
        suggested = np.zeros(len(P), dtype=int)
        suggested[idx] = S.argmax(axis=1)
        chosen = np.array(select_diverse(order, suggested.tolist(), args.budget, train.texts))
        drawn = [np.random.default_rng(flip_seed + 100 + d).choice(len(P), args.budget, replace=False)
                 for d in range(args.random_draws)]

        def reviewed(records, P_flip=P_flip) -> dict[str, float]:
            P_rev, cov = P_flip.copy(), covered.copy()
            P_rev[records] = np.eye(k)[y_train[records]]
            cov[records] = True
            return student_accuracy(train.texts, P_rev, cov, spec, seed, scored_on)

        review_acc, random_accs = reviewed(chosen), [reviewed(d) for d in drawn]
        wrong_now = given != y_train
        runs.append({
            "flip_seed": flip_seed, "flipped": int(flipped.sum()), "auroc": round(auroc(score, flipped[idx]), 4),
            "precision_at_top5pct": round(precision_at(score, flipped[idx], 0.05), 4),
            "wrong_labels_after_flips": int(wrong_now[covered].sum()),
            "auroc_for_any_wrong_label": round(auroc(score, wrong_now[idx]), 4),
            "flagged_by_find_label_issues": int(flagged.sum()), "flipped_among_flagged": int((flagged & flipped[idx]).sum()),
            "review": {"flipped_among_them": int(flipped[chosen].sum()), "wrong_among_them": int(wrong_now[chosen].sum())},
            "random_review_wrong_among_them_mean": float(np.mean([wrong_now[d].sum() for d in drawn])),
            "accuracy": {on: {"flipped_baseline": base_acc[on], "after_review": review_acc[on],
                              "after_random_review": [round(a[on], 4) for a in random_accs]} for on in scored_on},
            **{f"{what}_gain_acc{'' if on == 'heldout' else '_' + on}": round(gain, 4) for on in scored_on
               for what, gain in (("review", review_acc[on] - base_acc[on]),
                                  ("random", float(np.mean([a[on] for a in random_accs])) - base_acc[on]))}})
        print(f"  flip seed {flip_seed}: AUROC {runs[-1]['auroc']}, review {runs[-1]['review_gain_acc']:+.4f}, random "
              f"{runs[-1]['random_gain_acc']:+.4f} (test: {runs[-1]['review_gain_acc_test']:+.4f}, "
              f"{runs[-1]['random_gain_acc_test']:+.4f})", flush=True)

    def mean(key):
        return round(float(np.mean([r[key] for r in runs])), 4)

    res = {"flip_rate": args.flip_rate, "precision_at_top5pct": mean("precision_at_top5pct"), "auroc": mean("auroc"),
           "review_gain_acc": mean("review_gain_acc"), "random_gain_acc": mean("random_gain_acc"),
           "review_gain_acc_test": mean("review_gain_acc_test"), "random_gain_acc_test": mean("random_gain_acc_test")}
    res["details"] = {
        "averaged_over": f"{args.flip_seeds} flip seeds (each: its flips, ranking, review and {args.random_draws} random "
                         "draws)",
        "review_beats_random_in": f"{sum(r['review_gain_acc'] > r['random_gain_acc'] for r in runs)} of {len(runs)} seeds",
        "review_beats_random_on_test_in": f"{sum(r['review_gain_acc_test'] > r['random_gain_acc_test'] for r in runs)} "
                                          f"of {len(runs)} seeds",
        "gains_scored_on": f"review_gain_acc / random_gain_acc: the {len(outside):,} YouTube train records outside the "
                           f"sample (gold labels, never trained on); *_test: the {len(y_test)}-record test split",
        "by_flip_seed": runs, "train_records": len(train.ids), "covered": int(covered.sum()),
        "label_model_errors_before_flips": int(real[covered].sum()), "review_budget": args.budget,
        "accuracy_without_flips": no_flip_acc, "accuracy_on_all_true_labels": gold_acc,
        "ranking": {"weight": WEIGHT, "method": METHOD, "oof_student": "tfidf, 5 folds"},
        "student_features": spec.features, "label_model": project.config.label_model, "seed": seed,
        "llm_calls_this_run": result.llm_calls, "test_records": len(y_test), "heldout_records": len(outside),
    }
    if picked is not None:
        res["selection"] = picked
    res["details"]["wall_s"] = round(time.time() - started, 1)
    write_json(args.out, res)
    print(json.dumps({key: res[key] for key in ("flip_rate", "precision_at_top5pct", "auroc", "review_gain_acc",
                                                "random_gain_acc", "review_gain_acc_test", "random_gain_acc_test")},
                     indent=2))
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
