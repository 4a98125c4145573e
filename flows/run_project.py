"""A run: label, denoise, train, evaluate and report into one run folder.

``run_project`` is a plain function with one path for both tasks (the project's task object
supplies what differs); ``run_project_flow`` runs it as a Prefect flow.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

from prefect import flow

from labelloop.flows.config import config_to_yaml
from labelloop.flows.io import write_frame, write_json, write_text
from labelloop.flows.label_dataset import LabelingResult, label_dataset
from labelloop.flows.predict import save_student
from labelloop.flows.project import Project
from labelloop.flows.report import render_model_card, render_report
from labelloop.programs.errors import StateError


def evaluate(project: Project, result: LabelingResult, model, majority, student) -> dict:
    """Scores per gold split and method, with what asking each LLM labeler directly gives beside them."""
    task, taxonomy, out = project.task, project.taxonomy, {}
    for split in ("dev", "test"):
        gold = project.gold(split)
        if gold is None:
            continue
        votes = result.splits[split]
        direct = {lf.name: P for lf in project.llm_labelers
                  if (P := lf.direct_scores(votes.answers[lf.name], taxonomy)) is not None}
        out[split] = task.evaluate(gold, votes.votes, votes.texts, model, majority, student, direct, taxonomy.names)
    return out


def require_stored(project: Project) -> None:
    """Refuse (before anything runs) when some LLM answers are not in the vote store yet."""
    from labelloop.flows.plan import plan_calls

    missing = sum(row["llm_calls"] for row in plan_calls(project))
    if missing:
        where = project.config_path or "CONFIG"
        raise StateError(f"{missing} LLM answers are not stored yet; run `labelloop label {where}` first")


def run_project(project: Project, *, train: bool = True, lm=None, show_progress: bool = True) -> Path:
    """Label (LLM answers from the store when present), fit the label model, train and evaluate the student.

    Args:
        project: the loaded project (``labelloop.load_project``).
        train: also train, evaluate and export the student.
        lm: the DSPy LM that answers; built from the config when None.
        show_progress: rich progress bars for LLM work.

    Returns:
        The run folder.
    """
    started = time.time()
    cfg, task, taxonomy = project.config, project.task, project.taxonomy
    run_dir = cfg.runs_dir / f"{cfg.name}-{datetime.now():%Y%m%d-%H%M%S}"
    if run_dir.exists():
        raise StateError(f"run folder {run_dir} already exists")
    result = label_dataset(project, lm=lm, show_progress=show_progress)
    train_votes, dev = result.splits["train"], result.splits.get("dev")
    names, k, gold_dev = list(taxonomy.names), len(taxonomy), project.gold("dev")
    model, majority, kind = task.fit_label_model(cfg.label_model, train_votes.votes, k, gold_dev, cfg.seed)
    P = model.predict_proba(train_votes.votes)
    covered = task.covered(train_votes.votes)
    student = task.train_student(train_votes.texts, P, covered, cfg.student, cfg.seed) if train else None
    summary = task.summary(train_votes.votes, result.names, None if dev is None else dev.votes, gold_dev,
                           result.invalid, k)
    probs = task.probabilities(train_votes.ids, train_votes.texts, P, covered, names)
    metrics = {
        "name": cfg.name, "task": task.name, "labels": names, "model": cfg.lm.model, "label_model": kind,
        **task.model_info(model), "features": cfg.student.features, "n_train": len(train_votes.ids),
        "coverage": float(covered.mean()), "llm_calls": result.llm_calls, "llm_errors": result.errors,
        "scores": evaluate(project, result, model, majority, student),
    }
    write_text(run_dir / "config.yaml", config_to_yaml(cfg))
    for split, votes in result.splits.items():
        write_frame(run_dir / f"votes_{split}.parquet", task.matrix_frame(result.names, votes.ids, votes.texts,
                                                                          votes.votes, names))
    write_frame(run_dir / "probabilistic_labels.parquet", probs)
    write_frame(run_dir / "lf_summary.csv", summary.reset_index(names="labeler"))
    if student is not None:
        save_student(student, run_dir / "model.skops")
        write_text(run_dir / "model_card.md", render_model_card(cfg.name, names, metrics, result.names))
    metrics["wall_s"] = time.time() - started
    write_json(run_dir / "metrics.json", metrics)
    write_text(run_dir / "report.md", render_report(cfg.name, metrics, summary, task.label_counts(probs)))
    return run_dir


run_project_flow = flow(name="run-project")(run_project)
