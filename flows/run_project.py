"""The `run_project` flow: label, denoise, train, evaluate and report into one run folder."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
from prefect import flow

from flows.config import ConfigError, config_to_yaml
from flows.io import write_frame, write_json, write_text
from flows.label_dataset import label_dataset, label_matrix_frame
from flows.project import Project
from flows.report import render_model_card, render_report
from flows.train_student import fit_label_model, save_student, train_student
from labelers.analysis import lf_summary, scores
from labelers.labels import ABSTAIN
from labelers.llm import answer_ids
from labelers.student import predict_proba_full


def _gold_ids(project: Project, split: str) -> np.ndarray | None:
    df = project.splits.get(split)
    return None if df is None else np.array([project.taxonomy.id(x) for x in df["label"]])


def evaluate(project: Project, result, model, majority, student) -> dict:
    k = len(project.taxonomy)
    zero_shot = next((lf.name for lf in project.llm_labelers if lf.kind == "zero_shot"), None)
    out = {}
    for split in ("dev", "test"):
        y = _gold_ids(project, split)
        if y is None:
            continue
        votes = result.splits[split]
        rows = {"majority_vote": scores(y, majority.predict(votes.L), k),
                "label_model": scores(y, model.predict(votes.L), k),
                "student": scores(y, predict_proba_full(student, votes.texts, k).argmax(axis=1), k)}
        if zero_shot:
            rows["zero_shot_llm"] = scores(y, answer_ids(votes.answers[zero_shot], project.taxonomy.names), k)
        out[split] = rows
    return out


def require_stored(project: Project) -> None:
    """Refuse (before any flow starts) when some LLM answers are not in the vote store yet."""
    from flows.plan import plan_calls

    missing = sum(row["llm_calls"] for row in plan_calls(project))
    if missing:
        raise ConfigError(f"{missing} LLM answers are not stored yet; run `labelloop label {project.config_path}` first")


@flow(name="run-project")
def run_project(project: Project, *, train: bool = True, show_progress: bool = True) -> Path:
    """Label (LLM answers from the store when present), fit the label model, train and evaluate the student.

    Args:
        project: the loaded project (``flows.project.load_project``).
        train: also train, evaluate and export the student.
        show_progress: rich progress bars for LLM work.

    Returns:
        The run folder.
    """
    started = time.time()
    cfg, taxonomy = project.config, project.taxonomy
    result = label_dataset(project, show_progress=show_progress)
    train_votes = result.splits["train"]
    y_dev = _gold_ids(project, "dev")
    if train:
        student, model, majority, P, kind = train_student(
            train_votes.texts, train_votes.L, len(taxonomy), label_model=cfg.label_model, y_dev=y_dev,
            features=cfg.student.features, max_features=cfg.student.max_features, C=cfg.student.C,
            min_confidence=cfg.student.min_confidence, seed=cfg.seed,
        )
    else:
        student = None
        model, majority, kind = fit_label_model(cfg.label_model, train_votes.L, len(taxonomy), y_dev, cfg.seed)
        P = model.predict_proba(train_votes.L)

    run_dir = cfg.runs_dir / f"{cfg.name}-{datetime.now():%Y%m%d-%H%M%S}"
    if run_dir.exists():
        raise ConfigError(f"run folder {run_dir} already exists")
    dev = result.splits.get("dev")
    summary = lf_summary(train_votes.L, result.names, L_dev=None if dev is None else dev.L, y_dev=y_dev,
                         invalid=result.invalid)
    covered = (train_votes.L != ABSTAIN).any(axis=1)
    probs = pd.DataFrame(P, columns=[f"p_{n}" for n in taxonomy.names])
    probs.insert(0, "id", train_votes.ids)
    probs.insert(1, "text", train_votes.texts)
    probs["label"] = np.where(covered, np.array(taxonomy.names, dtype=object)[P.argmax(axis=1)], "")
    probs["confidence"] = np.where(covered, P.max(axis=1), 0.0)
    metrics = {
        "name": cfg.name, "labels": list(taxonomy.names), "model": cfg.lm.model, "label_model": kind,
        "features": cfg.student.features, "n_train": len(train_votes.ids),
        "coverage": float(covered.mean()), "llm_calls": result.llm_calls, "llm_errors": result.errors,
        "scores": evaluate(project, result, model, majority, student) if train else {},
    }
    write_text(run_dir / "config.yaml", config_to_yaml(cfg))
    for split, votes in result.splits.items():
        write_frame(run_dir / f"votes_{split}.parquet", label_matrix_frame(result.names, votes, taxonomy.names))
    write_frame(run_dir / "probabilistic_labels.parquet", probs)
    write_frame(run_dir / "lf_summary.csv", summary.reset_index(names="labeler"))
    if train:
        save_student(student, run_dir / "model.skops")
        write_text(run_dir / "model_card.md", render_model_card(cfg.name, taxonomy.names, metrics, result.names))
    metrics["wall_s"] = time.time() - started
    write_json(run_dir / "metrics.json", metrics)
    counts = probs.loc[covered, "label"].value_counts().to_dict()
    write_text(run_dir / "report.md", render_report(cfg.name, metrics, summary, counts))
    return run_dir
