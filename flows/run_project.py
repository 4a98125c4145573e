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
from flows.label_dataset import gold_ids, label_dataset, label_matrix_frame
from flows.project import Project
from flows.report import render_model_card, render_report
from flows.train_student import (
    fit_label_model,
    fit_multilabel_model,
    save_student,
    train_multilabel_on_probs,
    train_student,
)
from labelers.analysis import lf_summary, scores
from labelers.irr import IRRLabeler
from labelers.labels import ABSTAIN
from labelers.llm import answer_ids
from labelers.multilabel import (
    gold_matrix,
    multilabel_scores,
    multilabel_summary,
    rankings,
)
from labelers.student import predict_proba_full


def _gold_ids(project: Project, split: str) -> np.ndarray | None:
    y = gold_ids(project, split)
    return None if y is None else np.array(y)


def evaluate_multilabel(project: Project, result, model, majority, student) -> dict:
    names, k = project.taxonomy.names, len(project.taxonomy)
    out = {}
    for split in ("dev", "test"):
        y = gold_ids(project, split)
        if y is None:
            continue
        Y, votes = gold_matrix(y, k), result.splits[split]
        rows = {"majority_vote": multilabel_scores(Y, majority.predict_proba(votes.V), names),
                "label_model": multilabel_scores(Y, model.predict_proba(votes.V), names)}
        if student is not None:
            rows["student"] = multilabel_scores(Y, student.predict_proba(votes.texts), names)
        for labeler in project.llm_labelers:
            if isinstance(labeler, IRRLabeler):  # what asking the LLM program directly gives
                rows[f"{labeler.name}_llm"] = multilabel_scores(Y, labeler.scores(votes.answers[labeler.name], project.taxonomy),
                                                                names)
        out[split] = rows
    return out


def _multilabel_probs_frame(votes, P: np.ndarray, names, covered: np.ndarray) -> pd.DataFrame:
    top = rankings(P, names, 10)
    frame = pd.DataFrame({"id": votes.ids, "text": votes.texts})
    frame["labels"] = [[names[j] for j in np.flatnonzero(row >= 0.5)] if c else [] for row, c in zip(P, covered)]
    frame["top_labels"] = top
    frame["top_probs"] = [[float(round(P[i, names.index(x)], 4)) for x in row] for i, row in enumerate(top)]
    return frame


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
    if project.multilabel:
        return _finish_multilabel(project, result, train=train, started=started)
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

    run_dir = _new_run_dir(cfg)
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
        "name": cfg.name, "task": "multiclass", "labels": list(taxonomy.names), "model": cfg.lm.model, "label_model": kind,
        "features": cfg.student.features, "n_train": len(train_votes.ids),
        "coverage": float(covered.mean()), "llm_calls": result.llm_calls, "llm_errors": result.errors,
        "scores": evaluate(project, result, model, majority, student) if train else {},
    }
    counts = probs.loc[covered, "label"].value_counts().to_dict()
    return _write_run(project, run_dir, result, probs, summary, metrics, counts, student, started)


def _new_run_dir(cfg) -> Path:
    run_dir = cfg.runs_dir / f"{cfg.name}-{datetime.now():%Y%m%d-%H%M%S}"
    if run_dir.exists():
        raise ConfigError(f"run folder {run_dir} already exists")
    return run_dir


def _write_run(project: Project, run_dir: Path, result, probs: pd.DataFrame, summary: pd.DataFrame, metrics: dict,
               counts: dict, student, started: float) -> Path:
    cfg, taxonomy = project.config, project.taxonomy
    write_text(run_dir / "config.yaml", config_to_yaml(cfg))
    for split, votes in result.splits.items():
        write_frame(run_dir / f"votes_{split}.parquet", label_matrix_frame(result.names, votes, taxonomy.names))
    write_frame(run_dir / "probabilistic_labels.parquet", probs)
    write_frame(run_dir / "lf_summary.csv", summary.reset_index(names="labeler"))
    if student is not None:
        save_student(student, run_dir / "model.skops")
        write_text(run_dir / "model_card.md", render_model_card(cfg.name, taxonomy.names, metrics, result.names))
    metrics["wall_s"] = time.time() - started
    write_json(run_dir / "metrics.json", metrics)
    write_text(run_dir / "report.md", render_report(cfg.name, metrics, summary, counts))
    return run_dir


def _finish_multilabel(project: Project, result, *, train: bool, started: float) -> Path:
    """Multi-label: one binary label model per label, a one-vs-rest student, F1 and RP@k."""
    cfg, taxonomy = project.config, project.taxonomy
    names, k = list(taxonomy.names), len(taxonomy)
    train_votes, dev = result.splits["train"], result.splits.get("dev")
    y_dev = gold_ids(project, "dev")
    model, majority, kind = fit_multilabel_model(cfg.label_model, train_votes.V, k, y_dev, cfg.seed)
    P = model.predict_proba(train_votes.V)
    covered = np.asarray(sum(abs(V) for V in train_votes.V).sum(axis=1)).ravel() > 0 if train_votes.V else \
        np.zeros(len(train_votes.ids), bool)
    student = None
    if train:
        student = train_multilabel_on_probs(train_votes.texts, P, covered, features=cfg.student.features,
                                            max_features=cfg.student.max_features, C=cfg.student.C, seed=cfg.seed)
    summary = multilabel_summary(train_votes.V, result.names, votes_dev=None if dev is None else dev.V,
                                 Y_dev=None if y_dev is None else gold_matrix(y_dev, k), invalid=result.invalid)
    probs = _multilabel_probs_frame(train_votes, P, names, covered)
    metrics = {
        "name": cfg.name, "task": "multilabel", "labels": names, "model": cfg.lm.model, "label_model": kind,
        "labels_with_snorkel": model.labels_with_snorkel, "features": cfg.student.features,
        "n_train": len(train_votes.ids), "coverage": float(covered.mean()), "llm_calls": result.llm_calls,
        "llm_errors": result.errors, "scores": evaluate_multilabel(project, result, model, majority, student),
    }
    counts = pd.Series([x for row in probs["labels"] for x in row]).value_counts().head(30).to_dict()
    return _write_run(project, _new_run_dir(cfg), result, probs, summary, metrics, counts, student, started)
