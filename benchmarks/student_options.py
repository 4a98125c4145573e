"""Student options on YouTube spam: the same soft labels, four students, test accuracy and cost.

The label model's probabilities come from the YouTube benchmark's vote store, so this makes no LLM
call: it refuses to start unless every answer is stored. Each student is trained on the same
probabilities (the covered train records, the project's student settings):

- ``tfidf``, ``embeddings``, ``tfidf+embeddings``: class-balanced logistic regression (C=4, the defaults);
- ``finetune``: the MiniLM encoder fine-tuned with a linear head. Its epochs and encoder learning
  rate are chosen on the gold dev records (accuracy, then log-loss, then fewer epochs), never on test;
  the students are then scored once on test.

Train seconds include the feature extraction (the sentence embedder is loaded before timing);
predict docs/s is the whole test split through ``predict_proba_full`` (the faster of two passes); model MB is the saved
``model.skops``. One seed, torch on ``--threads`` CPU threads.

    python benchmarks/youtube.py                  # once: fills benchmarks/.cache/youtube
    python benchmarks/student_options.py          # 10-15 minutes on 2 cores

Writes benchmarks/results/student_options.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import youtube  # noqa: E402  (benchmarks/youtube.py: its cache folder and label names; sets Prefect's env)

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = (2, 3, 4)
LRS = (5e-5, 1e-4)


def log_loss(P, y) -> float:
    import numpy as np

    return float(-np.mean(np.log(np.clip(P[np.arange(len(y)), y], 1e-12, 1.0))))


def soft_labels(project):
    """The covered train texts and the label model's probabilities for them, from stored answers only."""
    from labelloop import label_dataset
    from labelloop.flows.plan import plan_calls
    from labelloop.labelers.tasks import fit_label_model

    missing = sum(row["llm_calls"] for row in plan_calls(project))
    if missing:
        sys.exit(f"{missing} LLM answers are not stored in {project.config.store}; run benchmarks/youtube.py first "
                 "(this benchmark never calls the LLM)")
    labeled = label_dataset(project, show_progress=False, stored_only=True)
    cfg, task, train = project.config, project.task, labeled.splits["train"]
    model, _, kind, _ = fit_label_model(task, cfg.label_model, train.votes, list(project.taxonomy.names),
                                        project.gold("dev"), labeled.splits["dev"].votes, cfg.seed)
    P, covered = model.predict_proba(train.votes), task.covered(train.votes)
    return [t for t, c in zip(train.texts, covered) if c], P[covered], kind, len(train.texts)


def train(features: str, texts, P, spec, seed: int, **finetune):
    """(fitted student, train seconds)."""
    from labelloop.labelers.student import fit_student, make_student

    student = make_student(features, max_features=spec.max_features, C=spec.C, seed=seed)
    if finetune:
        student[-1].set_params(**finetune)
    started = time.perf_counter()
    fit_student(texts, P, min_confidence=spec.min_confidence, student=student, seed=seed)
    return student, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=youtube.CACHE / "config.yaml")
    parser.add_argument("--test", type=Path, default=youtube.CACHE / "test.jsonl")
    parser.add_argument("--epochs", type=int, nargs="+", default=list(EPOCHS), help="fine-tuning epochs tried on dev")
    parser.add_argument("--lrs", type=float, nargs="+", default=list(LRS), help="encoder learning rates tried on dev")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "student_options.json")
    args = parser.parse_args()
    if not args.config.is_file():
        sys.exit(f"{args.config} not found: run benchmarks/youtube.py first")

    import numpy as np
    import torch

    from labelloop import load_project
    from labelloop.flows.config import DataSpec
    from labelloop.flows.io import read_records, write_json
    from labelloop.flows.predict import save_student
    from labelloop.labelers.analysis import scores
    from labelloop.labelers.student import FEATURES, FinetunedEncoder, predict_proba_full
    from labelloop.programs.embeddings import embed

    torch.set_num_threads(args.threads)
    started, load_start = time.time(), round(os.getloadavg()[0], 2)
    project = load_project(args.config)
    cfg, k = project.config, len(project.taxonomy)
    texts, P, label_model, n_train = soft_labels(project)
    dev_texts, y_dev = project.splits["dev"]["text"].tolist(), np.array(project.gold("dev"))
    test = read_records(DataSpec(path=args.test), require_label=True)
    test_texts, y_test = test["text"].tolist(), np.array([youtube.NAMES.index(x) for x in test["label"]])
    print(f"{len(texts)} covered train records of {n_train} ({label_model} label model), {len(y_dev)} dev, "
          f"{len(y_test)} test; torch threads {torch.get_num_threads()}", flush=True)

    # Fine-tuning settings, chosen on dev only.
    grid, best = [], None
    for lr in args.lrs:
        for epochs in args.epochs:
            student, seconds = train("finetune", texts, P, cfg.student, cfg.seed, epochs=epochs, lr=lr)
            Pd = predict_proba_full(student, dev_texts, k)
            row = {"epochs": epochs, "lr": lr, "dev_accuracy": scores(y_dev, Pd.argmax(axis=1), k)["accuracy"],
                   "dev_log_loss": round(log_loss(Pd, y_dev), 4), "train_s": round(seconds, 1)}
            grid.append(row)
            print(f"  finetune epochs {epochs} lr {lr:g}: dev accuracy {row['dev_accuracy']:.3f}, "
                  f"log-loss {row['dev_log_loss']:.3f}, {seconds:.0f} s", flush=True)
            key = (-row["dev_accuracy"], row["dev_log_loss"], epochs)
            if best is None or key < best[0]:
                best = (key, row, student, seconds)
    _, chosen, finetuned, finetune_s = best
    print(f"chosen on dev: epochs {chosen['epochs']}, lr {chosen['lr']:g}", flush=True)

    embed(["warm up"])  # load the sentence embedder once, outside the timings
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for features in FEATURES:
            if features == "finetune":
                student, seconds = finetuned, finetune_s
            else:
                student, seconds = train(features, texts, P, cfg.student, cfg.seed)
            predict_s = []
            for _ in range(2):  # the faster of two passes: the machine may be busy with other work
                t0 = time.perf_counter()
                Pt = predict_proba_full(student, test_texts, k)
                predict_s.append(time.perf_counter() - t0)
            test_scores = scores(y_test, Pt.argmax(axis=1), k)
            size = save_student(student, Path(tmp) / f"{features.replace('+', '_')}.skops").stat().st_size
            results[features] = {
                "test_accuracy": test_scores["accuracy"], "test_macro_f1": test_scores["macro_f1"],
                "dev_accuracy": scores(y_dev, predict_proba_full(student, dev_texts, k).argmax(axis=1), k)["accuracy"],
                "train_s": round(seconds, 1), "predict_docs_per_s": round(len(test_texts) / min(predict_s), 1),
                "model_mb": round(size / 1e6, 1)}
            print(f"  {features:<18} test accuracy {test_scores['accuracy']:.3f}", flush=True)

    defaults = FinetunedEncoder()
    res = {
        "setup": {"dataset": "YouTube spam (WRENCH), the benchmarks/youtube.py sample", "train_records": n_train,
                  "covered_train_records": len(texts), "dev_records": len(y_dev), "test_records": len(y_test),
                  "label_model": label_model, "seed": cfg.seed, "torch_threads": args.threads,
                  "student": {"C": cfg.student.C, "max_features": cfg.student.max_features,
                              "min_confidence": cfg.student.min_confidence},
                  "finetune_fixed": {"head_lr": defaults.head_lr, "batch_size": defaults.batch_size,
                                     "max_length": defaults.max_length, "weight_decay": defaults.weight_decay,
                                     "warmup": defaults.warmup, "class_weight": defaults.class_weight},
                  "finetune_chosen_on": "dev accuracy, then dev log-loss, then fewer epochs",
                  "load_average_1min_start_end": [load_start, round(os.getloadavg()[0], 2)],
                  "llm_calls_this_run": 0, "wall_s": round(time.time() - started, 1)},
        "finetune_chosen": {"epochs": chosen["epochs"], "lr": chosen["lr"]},
        "finetune_dev_grid": grid,
        "students": results,
    }
    write_json(args.out, res)

    print(f"\nStudents on the same soft labels ({len(texts)} covered train records), scored on {len(y_test)} test records")
    print(f"{'features':<18}{'test acc':>9}{'dev acc':>9}{'train s':>9}{'docs/s':>9}{'model MB':>10}")
    for features, row in results.items():
        print(f"{features:<18}{row['test_accuracy']:>9.3f}{row['dev_accuracy']:>9.3f}{row['train_s']:>9.1f}"
              f"{row['predict_docs_per_s']:>9.0f}{row['model_mb']:>10.1f}")
    print(f"finetune: epochs {chosen['epochs']}, lr {chosen['lr']:g} (chosen on dev); wall {res['setup']['wall_s']:.0f} s "
          f"-> {args.out}")


if __name__ == "__main__":
    main()
