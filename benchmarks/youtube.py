"""YouTube spam (WRENCH): zero-shot LLM vs. majority vote vs. label model vs. distilled student, in one run.

Labelers run on a seeded sample of the train split (labels hidden); a few dozen seeded rows of the
valid split are the gold dev records; the whole test split is scored. The label models are scored on
the labelled train sample (the labels they produce for training); zero-shot and the student on test.

    python benchmarks/youtube.py                 # embedded model, about 20-25 minutes on 2 cores
    python benchmarks/youtube.py --train-size 60 # a quick look

Writes benchmarks/results/youtube.json. Answers are kept in benchmarks/.cache, so a second run makes
no LLM call.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "datasets" / "youtube" / "youtube.jsonl"
CACHE = ROOT / "benchmarks" / ".cache" / "youtube"
NAMES = ["ham", "spam"]

TAXONOMY = {"labels": [
    {"name": "ham", "description": "A genuine comment on the video, the song or the artist."},
    {"name": "spam", "description": "Self-promotion, links, requests to subscribe or visit a channel, ads, scams."},
]}

# Written from WRENCH's descriptions of its YouTube labeling functions (wrench_lfs.txt), plus our own.
LABELERS = [
    {"type": "zero_shot"},
    {"type": "prompt", "name": "asks_to_subscribe_or_visit",
     "question": "Does the comment ask people to subscribe, follow, visit or check out a channel, video or website?",
     "answers": {"yes": "spam", "no": "abstain"}},
    {"type": "prompt", "name": "talks_about_the_video",
     "question": "Is the comment only a reaction to this song, singer or music video, promoting nothing?",
     "answers": {"yes": "ham", "no": "abstain"}},
    {"type": "regex", "name": "my_channel", "label": "spam", "pattern": r"\bmy (channel|video|videos|page|music|song|songs)\b"},
    {"type": "keywords", "name": "subscribe", "label": "spam", "words": ["subscribe", "sub", "subs", "subscribers"]},
    {"type": "regex", "name": "link", "label": "spam", "pattern": r"https?://|www\.|\.com\b"},
    {"type": "keywords", "name": "please", "label": "spam", "words": ["please", "plz", "pls"]},
    {"type": "keywords", "name": "song", "label": "ham", "words": ["song"]},
    {"type": "regex", "name": "check_out", "label": "spam", "pattern": r"check\s*(it\s*)?out"},
    {"type": "regex", "name": "short_comment", "label": "ham", "pattern": r"^\W*(\S+\s+){0,4}\S*\W*$"},
]


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def prepare(train_size: int, dev_size: int, seed: int, model: str) -> Path:
    import yaml

    rows = [json.loads(line) for line in DATA.open(encoding="utf-8")]
    split = {s: [r for r in rows if r["split"] == s] for s in ("train", "valid", "test")}
    rng = random.Random(seed)
    train = rng.sample(split["train"], min(train_size, len(split["train"])))
    dev = rng.sample(split["valid"], min(dev_size, len(split["valid"])))
    CACHE.mkdir(parents=True, exist_ok=True)
    as_record = lambda r, label=True: {"id": r["id"], "text": r["text"], **({"label": NAMES[r["label"]]} if label else {})}  # noqa: E731
    _write_jsonl(CACHE / "train.jsonl", [as_record(r, label=False) for r in train])
    _write_jsonl(CACHE / "train_gold.jsonl", [as_record(r) for r in train])
    _write_jsonl(CACHE / "dev.jsonl", [as_record(r) for r in dev])
    _write_jsonl(CACHE / "test.jsonl", [as_record(r) for r in split["test"]])
    (CACHE / "taxonomy.yaml").write_text(yaml.safe_dump(TAXONOMY, sort_keys=False))
    config = {"name": "youtube", "data": "train.jsonl", "gold": "dev.jsonl", "taxonomy": "taxonomy.yaml",
              "lm": {"model": model}, "labelers": LABELERS, "label_model": "snorkel", "seed": seed}
    (CACHE / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return CACHE / "config.yaml"


def heldout(sample_ids) -> tuple[list[str], object]:
    """The YouTube train records outside ``sample_ids`` (the benchmark's train sample): texts and gold label ids. The
    student never trains on them, and there are 5.5x as many as in the test split (1,386 against 250)."""
    import numpy as np

    sample = set(sample_ids)
    outside = [r for r in map(json.loads, DATA.open(encoding="utf-8")) if r["split"] == "train" and r["id"] not in sample]
    return [r["text"] for r in outside], np.array([r["label"] for r in outside], dtype=int)


def cost_per_record(project, student, texts: list[str], n_llm: int = 10) -> dict:
    """Seconds per record, measured side by side now: the student on every text, the LLM on a few fresh calls."""
    import dspy

    from labelloop.labelers.llm import ZeroShotLabeler

    started = time.perf_counter()
    student.predict_proba(texts)
    student_s = (time.perf_counter() - started) / len(texts)
    lm = project.config.lm.make()
    program = next(lf for lf in project.llm_labelers if isinstance(lf, ZeroShotLabeler)).program(project.context())
    with dspy.context(lm=lm):
        program(text=texts[0])  # load the model and fill the prompt cache first, as a labeling run does
        started = time.perf_counter()
        for text in texts[1:n_llm + 1]:
            program(text=text)
    llm_s = (time.perf_counter() - started) / n_llm
    return {"student_ms_per_record": round(student_s * 1000, 3), "llm_ms_per_record": round(llm_s * 1000, 1),
            "student_cost_ratio": round(student_s / llm_s, 5)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train-size", type=int, default=300)
    parser.add_argument("--dev-size", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default="local")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "youtube.json")
    args = parser.parse_args()
    if not DATA.exists():
        sys.exit(f"{DATA} not found: this benchmark needs the shared YouTube dataset")

    import dataclasses

    import numpy as np
    import pandas as pd

    from labelloop import label_dataset, load_project
    from labelloop.flows.config import DataSpec
    from labelloop.flows.io import read_records, write_json
    from labelloop.labelers.analysis import lf_summary, scores
    from labelloop.labelers.llm import ZeroShotLabeler, answer_ids
    from labelloop.labelers.student import FEATURES, fit_student, make_student, predict_proba_full
    from labelloop.labelers.tasks import MultiClass

    started = time.time()
    config_path = prepare(args.train_size, args.dev_size, args.seed, args.model)
    project = load_project(config_path)
    # The test split only needs the zero-shot answers; the other labelers never see it.
    test_df = read_records(DataSpec(path=CACHE / "test.jsonl"), require_label=True)
    test_project = dataclasses.replace(project, splits={"train": test_df},
                                       llm_labelers=[lf for lf in project.llm_labelers if isinstance(lf, ZeroShotLabeler)],
                                       heuristic_lfs=[])
    labeled = label_dataset(project)
    tested = label_dataset(test_project)
    llm_calls = labeled.llm_calls + tested.llm_calls
    answers_used = len(project.llm_labelers) * (len(labeled.splits["train"].ids) + len(labeled.splits["dev"].ids)) + len(test_df)

    y_train = np.array([NAMES.index(x) for x in pd.read_json(CACHE / "train_gold.jsonl", lines=True)["label"]])
    y_dev = np.array([NAMES.index(x) for x in project.splits["dev"]["label"]])
    y_test = np.array([NAMES.index(x) for x in test_df["label"]])
    train = labeled.splits["train"]
    task = MultiClass()
    model, majority, _ = task.fit_label_model("snorkel", train.votes, 2, y_dev, args.seed)
    P = model.predict_proba(train.votes)
    covered = task.covered(train.votes)
    student = task.train_student(train.texts, P, covered, project.config.student, args.seed)
    raw = tested.splits["train"].answers["zero_shot"]
    zero_shot_pred = answer_ids(raw, NAMES)
    test_texts = test_df["text"].tolist()
    student_pred = predict_proba_full(student, test_texts, 2).argmax(axis=1)
    gold_student = fit_student(train.texts, np.eye(2)[y_train], seed=args.seed)
    ceiling = predict_proba_full(gold_student, test_texts, 2).argmax(axis=1)
    by_features = {}
    for features in FEATURES:  # the same denoised labels, each student feature set
        other = fit_student([t for t, c in zip(train.texts, covered) if c], P[covered],
                            student=make_student(features, seed=args.seed))
        by_features[features] = scores(y_test, predict_proba_full(other, test_texts, 2).argmax(axis=1), 2)["accuracy"]

    res = {
        "zero_shot_acc": scores(y_test, zero_shot_pred, 2)["accuracy"],
        "majority_vote_acc": scores(y_train, majority.predict(train.votes, tie_break="random"), 2)["accuracy"],
        "label_model_acc": scores(y_train, model.predict(train.votes, tie_break="random"), 2)["accuracy"],
        "student_acc": scores(y_test, student_pred, 2)["accuracy"],
        "llm_calls": answers_used,
        "llm_calls_this_run": llm_calls,
        "model": args.model,
        "student_features": project.config.student.features,
        "student_acc_by_features": by_features,
        "student_on_gold_labels_acc": scores(y_test, ceiling, 2)["accuracy"],
        "label_model_coverage": round(float(covered.mean()), 3),
        "train_sample_size": len(train.ids), "dev_size": len(y_dev), "test_size": len(y_test), "seed": args.seed,
        "scored_on": {"zero_shot_acc": "test", "student_acc": "test", "student_on_gold_labels_acc": "test",
                      "majority_vote_acc": "train sample (gold hidden while labeling)",
                      "label_model_acc": "train sample (gold hidden while labeling)"},
        "wall_s": round(time.time() - started, 1),
    }
    res.update(cost_per_record(project, student, test_texts))
    # the zero-shot labeler's own votes: its answers calibrated (batch calibration on the test pool, no gold)
    calibrated = tested.splits["train"].votes[:, tested.names.index("zero_shot")]
    res["zero_shot_calibrated_acc"] = scores(y_test, calibrated, 2)["accuracy"]
    res["scored_on"]["zero_shot_calibrated_acc"] = "test"
    best = max(res["zero_shot_acc"], res["zero_shot_calibrated_acc"])
    res["error_reduction_vs_zero_shot"] = round(1 - (1 - res["student_acc"]) / max(1 - best, 1e-9), 3)
    summary = lf_summary(train.votes, labeled.names, L_dev=train.votes, y_dev=y_train)  # "dev" here: the gold train sample
    per_lf = {name: {"coverage": round(float(row["coverage"]), 3),
                     "accuracy": None if np.isnan(row["dev_accuracy"]) else round(float(row["dev_accuracy"]), 3)}
              for name, row in summary.iterrows()}
    res["labelers_on_train_sample"] = per_lf
    write_json(args.out, res)

    print(f"\nYouTube spam, model {args.model}: {len(train.ids)} train rows labelled, {len(y_test)} test rows scored")
    print(f"{'method':<34}{'accuracy':>10}   scored on")
    for key in ("zero_shot_acc", "zero_shot_calibrated_acc", "majority_vote_acc", "label_model_acc", "student_acc",
                "student_on_gold_labels_acc"):
        print(f"{key:<34}{res[key]:>10.3f}   {res['scored_on'][key]}")
    print("student by features (same labels): " + ", ".join(f"{k} {v:.3f}" for k, v in by_features.items()))
    print(f"student error reduction vs the better zero-shot (raw or calibrated): {res['error_reduction_vs_zero_shot']:.1%}")
    print(f"LLM answers used: {answers_used}, of which paid for in this run: {llm_calls} (the rest came from the vote store)")
    print(f"cost per record: student {res['student_ms_per_record']} ms, zero-shot LLM {res['llm_ms_per_record']} ms "
          f"(student/LLM = {res['student_cost_ratio']:.4%}, measured side by side in this run)")
    print(f"wall time: {res['wall_s']:.0f} s   -> {args.out}")
    for name, s in per_lf.items():
        print(f"  {name:<30} coverage {s['coverage']:.2f}  accuracy {s['accuracy']}")


if __name__ == "__main__":
    main()
