"""The label-model step at a million rows: Snorkel beside labelloop's vectorised majority vote and LF summary.

On one seeded synthetic label matrix (1,000,000 records x 20 labelers by default, about half the
votes abstains, labelers of accuracy 0.55 to 0.9), in one run, after a warm-up on 2,000 rows
(the majority votes and summaries of both sides: the fastest of 3 calls):

- Snorkel's LabelModel fit and predict_proba (through labelloop's LabelModelWrapper: Snorkel's own code);
- majority vote, random and abstain tie-breaking: Snorkel's MajorityLabelVoter().predict vs
  labelloop's MajorityVote(...).fit(L).predict;
- LF summary with gold: Snorkel's LFAnalysis(L).lf_summary(Y) vs labelloop's
  lf_summary(L, names, L_dev=L, y_dev=Y), and both without gold.

It also checks that the two sides agree and records it. If Snorkel's majority vote would take over
ten minutes per call (extrapolated from a pilot), Snorkel and labelloop are timed on a 100,000-row
subsample instead, and the output says so.

    python benchmarks/label_model_scale.py                # about 2 minutes on 2 cores
    python benchmarks/label_model_scale.py --rows 100000  # a quick look

Writes benchmarks/results/label_model_scale.json.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SNORKEL_LIMIT_S = 600  # beyond this per call, Snorkel runs on a subsample
SUBSAMPLE = 100_000


def synthetic(n: int, m: int, k: int, abstain: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Gold labels and an (n, m) label matrix; labeler j is right with probability accuracy[j]."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    accuracy = np.linspace(0.55, 0.9, m)
    coverage = np.clip(rng.normal(1 - abstain, 0.15, m), 0.05, 0.95)
    L = np.where(rng.random((n, m)) < accuracy, y[:, None], (y[:, None] + rng.integers(1, k, (n, m))) % k)
    L[rng.random((n, m)) >= coverage] = -1
    return L, y


REPEATS = 3


def timed(f, repeats: int = 1):
    """f's result and its fastest time over ``repeats`` calls: the machine is shared, and noise only ever adds time."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        out = f()
        best = min(best, time.perf_counter() - started)
    return out, best


def majority_vote(L: np.ndarray, k: int, seed: int, repeats: int = 1) -> dict:
    """Both majority votes, timed, and where they agree."""
    from snorkel.labeling.model import MajorityLabelVoter

    from labelloop.labelers.label_model import MajorityVote

    snorkel = MajorityLabelVoter(cardinality=k)
    (sn_abstain, sn_P), sn_abstain_s = timed(lambda: snorkel.predict(L, return_probs=True, tie_break_policy="abstain"), repeats)
    sn_random, sn_random_s = timed(lambda: snorkel.predict(L, tie_break_policy="random"), repeats)
    ll_random, ll_random_s = timed(lambda: MajorityVote(k, seed).fit(L).predict(L, tie_break="random"), repeats)
    ll_abstain, ll_abstain_s = timed(lambda: MajorityVote(k, seed).fit(L).predict(L, tie_break="abstain"), repeats)
    P = MajorityVote(k, seed).fit(L).predict_proba(L)
    top = np.isclose(P, P.max(axis=1, keepdims=True))
    covered = (L != -1).any(axis=1)
    tied = covered & (top.sum(axis=1) > 1)
    untied = covered & ~tied
    return {
        "snorkel_random_s": sn_random_s, "labelloop_random_s": ll_random_s,
        "snorkel_abstain_s": sn_abstain_s, "labelloop_abstain_s": ll_abstain_s,
        "agreement": {
            "abstain_policy_predictions_equal": bool(np.array_equal(sn_abstain, ll_abstain)),
            "top_classes_equal": bool(np.array_equal(sn_P > 0, top)),
            "random_policy_equal_where_untied": bool(np.array_equal(sn_random[untied], ll_random[untied])),
            "random_policy_pick_is_a_top_class": bool(top[tied.nonzero()[0], ll_random[tied]].all()),
            "labelloop_abstains_where_uncovered": bool((ll_random[~covered] == -1).all()),
            "tied_rows": int(tied.sum()), "uncovered_rows": int((~covered).sum()),
            "note": "probabilities differ by design: labelloop gives vote shares, Snorkel a uniform distribution over the "
                    "top classes, so their top classes are compared; on uncovered rows Snorkel's random policy draws a "
                    "class and labelloop abstains",
        },
    }


def summaries(L: np.ndarray, y: np.ndarray, repeats: int = 1) -> dict:
    """Both LF summaries, with and without gold, timed, and where they agree."""
    from snorkel.labeling import LFAnalysis

    from labelloop.labelers.analysis import lf_summary

    names = [f"lf{j}" for j in range(L.shape[1])]
    theirs, sn_s = timed(lambda: LFAnalysis(L).lf_summary(y), repeats)
    ours, ll_s = timed(lambda: lf_summary(L, names, L_dev=L, y_dev=y), repeats)
    _, sn_plain_s = timed(lambda: LFAnalysis(L).lf_summary(), repeats)
    _, ll_plain_s = timed(lambda: lf_summary(L, names), repeats)
    diff = {col: float(np.abs(ours[col].to_numpy(float) - theirs[their].to_numpy(float)).max())
            for col, their in (("coverage", "Coverage"), ("overlaps", "Overlaps"), ("conflicts", "Conflicts"))}
    accuracy = np.nan_to_num(ours["dev_accuracy"].to_numpy(float))  # Snorkel writes 0 for a labeler without votes
    diff["accuracy"] = float(np.abs(accuracy - theirs["Emp. Acc."].to_numpy(float)).max())
    return {
        "snorkel_s": sn_s, "labelloop_s": ll_s, "snorkel_no_gold_s": sn_plain_s, "labelloop_no_gold_s": ll_plain_s,
        "agreement": {"polarity_equal": ours["polarity"].tolist() == theirs["Polarity"].tolist(),
                      "max_abs_diff": diff, "equal": all(v < 1e-12 for v in diff.values())},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--lfs", type=int, default=20)
    parser.add_argument("--cardinality", type=int, default=2)
    parser.add_argument("--abstain", type=float, default=0.5, help="mean share of abstains per labeler")
    parser.add_argument("--epochs", type=int, default=500, help="Snorkel LabelModel epochs (labelloop's default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=REPEATS, help="majority votes and LF summaries: best of this many")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "label_model_scale.json")
    args = parser.parse_args()

    import snorkel
    from snorkel.labeling.model import MajorityLabelVoter

    from labelloop.flows.io import write_json
    from labelloop.labelers.label_model import LabelModelWrapper, MajorityVote

    started = time.time()
    k = args.cardinality
    L, y = synthetic(args.rows, args.lfs, k, args.abstain, args.seed)
    warm_L, warm_y = L[:2000], y[:2000]  # imports, torch start-up and first calls are not what is measured
    majority_vote(warm_L, k, args.seed)
    summaries(warm_L, warm_y)
    LabelModelWrapper(k, n_epochs=5, seed=args.seed).fit(warm_L).predict_proba(warm_L)

    model, fit_s = timed(lambda: LabelModelWrapper(k, n_epochs=args.epochs, seed=args.seed).fit(L))
    _, proba_s = timed(lambda: model.predict_proba(L))
    _, mv_proba_s = timed(lambda: MajorityVote(k, args.seed).fit(L).predict_proba(L))

    pilot = min(20_000, len(L))
    _, pilot_s = timed(lambda: MajorityLabelVoter(cardinality=k).predict(L[:pilot], tie_break_policy="random"))
    estimate_s = pilot_s * len(L) / pilot
    compared = L if estimate_s <= SNORKEL_LIMIT_S else L[:SUBSAMPLE]
    mv = majority_vote(compared, k, args.seed, args.repeats)
    summary = summaries(compared, y[:len(compared)], args.repeats)

    res = {
        "n_rows": args.rows, "n_lfs": args.lfs, "cardinality": k, "abstain_share": round(float((L == -1).mean()), 3),
        "lf_accuracies": "linspace(0.55, 0.9) over the labelers", "seed": args.seed, "repeats": args.repeats,
        "compared_on_rows": len(compared),
        "subsampled": len(compared) < len(L),
        "snorkel_mv_estimate_at_n_rows_s": round(estimate_s, 1),
        "majority_vote_speedup": round(mv["snorkel_random_s"] / mv["labelloop_random_s"], 1),
        "majority_vote_abstain_speedup": round(mv["snorkel_abstain_s"] / mv["labelloop_abstain_s"], 1),
        "lf_summary_speedup": round(summary["snorkel_s"] / summary["labelloop_s"], 1),
        "lf_summary_no_gold_speedup": round(summary["snorkel_no_gold_s"] / summary["labelloop_no_gold_s"], 1),
        "seconds": {
            "snorkel_label_model_fit": round(fit_s, 3), "snorkel_label_model_predict_proba": round(proba_s, 3),
            "labelloop_majority_vote_fit_predict_proba": round(mv_proba_s, 3),
            "snorkel_majority_vote_predict_random": round(mv["snorkel_random_s"], 3),
            "labelloop_majority_vote_predict_random": round(mv["labelloop_random_s"], 3),
            "snorkel_majority_vote_predict_abstain": round(mv["snorkel_abstain_s"], 3),
            "labelloop_majority_vote_predict_abstain": round(mv["labelloop_abstain_s"], 3),
            "snorkel_lf_summary": round(summary["snorkel_s"], 3), "labelloop_lf_summary": round(summary["labelloop_s"], 3),
            "snorkel_lf_summary_no_gold": round(summary["snorkel_no_gold_s"], 3),
            "labelloop_lf_summary_no_gold": round(summary["labelloop_no_gold_s"], 3),
        },
        "label_model_epochs": args.epochs,
        "what_is_timed": {
            "label_model": f"labelloop LabelModelWrapper(n_epochs={args.epochs}).fit(L) and .predict_proba(L): Snorkel's "
                           "LabelModel with shape checks, no class balance so no rebalancing; on all n_rows",
            "majority_vote": "Snorkel MajorityLabelVoter().predict(L, tie_break_policy=...) vs labelloop "
                             "MajorityVote(cardinality, seed).fit(L).predict(L, tie_break=...); the abstain call of Snorkel "
                             "also returns its probabilities (predict computes them anyway)",
            "lf_summary": "Snorkel LFAnalysis(L).lf_summary(Y): polarity, coverage, overlaps, conflicts, correct, incorrect, "
                          "empirical accuracy; labelloop lf_summary(L, names, L_dev=L, y_dev=Y): polarity, coverage, overlaps, "
                          "conflicts, dev coverage, dev accuracy (the same gold, so correct = accuracy x dev coverage x n)",
            "lf_summary_no_gold": "LFAnalysis(L).lf_summary() vs lf_summary(L, names): polarity, coverage, overlaps, conflicts",
            "timing": f"after a warm-up of every call on 2,000 rows; majority vote and LF summary: the fastest of "
                      f"{args.repeats} calls, on both sides alike; label model fit and predict_proba: one call each",
        },
        "agreement": {"majority_vote": mv["agreement"], "lf_summary": summary["agreement"]},
        "cpus": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__, "snorkel": snorkel.__version__,
        "wall_s": round(time.time() - started, 1),
    }
    write_json(args.out, res)

    s = res["seconds"]
    where = f"{len(compared):,} rows (subsample)" if res["subsampled"] else f"{len(compared):,} rows"
    print(f"\nlabel model step, {args.rows:,} x {args.lfs} labels, cardinality {k}, {res['abstain_share']:.0%} abstains")
    print(f"Snorkel LabelModel ({args.epochs} epochs): fit {s['snorkel_label_model_fit']:.2f} s, "
          f"predict_proba {s['snorkel_label_model_predict_proba']:.2f} s; "
          f"labelloop majority vote fit+predict_proba {s['labelloop_majority_vote_fit_predict_proba']:.2f} s")
    print(f"\n{'on ' + where:<34}{'Snorkel s':>11}{'labelloop s':>13}{'speedup':>9}")
    rows = (("majority vote, random ties", "majority_vote_predict_random", "majority_vote_speedup"),
            ("majority vote, abstain on ties", "majority_vote_predict_abstain", "majority_vote_abstain_speedup"),
            ("LF summary with gold", "lf_summary", "lf_summary_speedup"),
            ("LF summary without gold", "lf_summary_no_gold", "lf_summary_no_gold_speedup"))
    for name, key, speedup in rows:
        print(f"{name:<34}{s['snorkel_' + key]:>11.2f}{s['labelloop_' + key]:>13.3f}{res[speedup]:>8.1f}x")
    a = res["agreement"]
    print(f"\nagreement: majority vote {a['majority_vote']}\n           LF summary {a['lf_summary']}")
    print(f"wall time: {res['wall_s']:.0f} s   -> {args.out}")


if __name__ == "__main__":
    main()
