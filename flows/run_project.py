"""A run: label, denoise, train, evaluate and report into one run folder.

``run_project`` is a plain function with one path for both tasks (the project's task object
supplies what differs); ``labelloop.flows.orchestration`` runs it as a Prefect flow.
"""

from __future__ import annotations

import logging
import shutil
import time
from datetime import datetime
from pathlib import Path

from labelloop.flows.audit import gold_quality
from labelloop.flows.budget import label_model_votes
from labelloop.flows.config import config_to_yaml
from labelloop.flows.io import atomic_path, write_frame, write_json, write_text
from labelloop.flows.label_dataset import LabelingResult, label_dataset
from labelloop.flows.predict import load_student, save_student
from labelloop.flows.project import Project
from labelloop.flows.report import render_model_card, render_report
from labelloop.flows.report_html import report_inputs, write_html_report
from labelloop.flows.review import label_issues, review_metrics, reviewed_probabilities
from labelloop.flows.store import text_hash
from labelloop.labelers.tasks import AUTO_RULE, fit_label_model
from labelloop.programs.digest import file_sha256
from labelloop.programs.errors import StateError

logger = logging.getLogger("labelloop")


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


def _gold(project: Project, result: LabelingResult, split: str) -> tuple[list[str], list] | None:
    """(texts, gold labels) of a gold split, or None."""
    gold = project.gold(split)
    return None if gold is None else (result.splits[split].texts, gold)


def training_data_hash(texts: list[str]) -> str:
    """SHA-256 over the sorted hashes of the training texts: the same records in any order give the same hash."""
    import hashlib

    return hashlib.sha256("\n".join(sorted(text_hash(t) for t in texts)).encode()).hexdigest()


def require_stored(project: Project) -> None:
    """Refuse (before anything runs) when some LLM answers are not in the vote store yet.

    With an ``llm_budget`` only the answers asked whatever the budget count (gold splits, extra
    items): a stored-only run (``stored_only=True``) leaves the train answers not stored as abstains.
    """
    from labelloop.flows.plan import plan_calls

    missing = sum(row["llm_calls"] - row.get("train_calls", 0) for row in plan_calls(project))
    if missing:
        where = project.config_path or "CONFIG"
        raise StateError(f"{missing} LLM answers are not stored yet; run `labelloop label {where}` first")


def new_run_dir(cfg) -> Path:
    """A new run folder named by the time; a second run in the same second gets a suffix."""
    stem = cfg.runs_dir / f"{cfg.name}-{datetime.now():%Y%m%d-%H%M%S}"
    cfg.runs_dir.mkdir(parents=True, exist_ok=True)
    for n in range(1000):
        path = stem if n == 0 else stem.with_name(f"{stem.name}-{n}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path
    raise StateError(f"could not find a free run folder name beside {stem}")


def _distribution(counts: dict) -> dict[str, float]:
    total = sum(counts.values()) or 1
    return {k: v / total for k, v in counts.items()}


def last_student(cfg) -> Path | None:
    """The newest run folder of this project that holds a student (run folders sort by time)."""
    if not cfg.runs_dir.is_dir():
        return None
    runs = sorted(p for p in cfg.runs_dir.glob(f"{cfg.name}-*")
                  if (p / "model.skops").is_file() and (p / "metrics.json").is_file())
    return runs[-1] if runs else None


def student_decision(cfg, task, probs, hashes: set[str]) -> dict:
    """Whether to train a new student, by ``student.retrain``; says why, and which run trained the one kept.

    A kept student is compared against the run that trained it, so small changes add up until they count.
    """
    import json

    import pandas as pd

    if cfg.student.retrain == "always":
        return {"retrain": True, "reason": "student.retrain is always"}
    previous = last_student(cfg)
    if previous is None:
        return {"retrain": True, "reason": "no earlier student"}
    trained_in = json.loads((previous / "metrics.json").read_text()).get("student", {}).get("trained_in", previous.name)
    basis = cfg.runs_dir / trained_in / "probabilistic_labels.parquet"
    if not basis.is_file():
        return {"retrain": True, "reason": f"the labels {trained_in} trained on are gone"}
    old = pd.read_parquet(basis)
    new_fraction = len(hashes - {text_hash(t) for t in old["text"]}) / max(len(hashes), 1)
    before, now = _distribution(task.label_counts(old)), _distribution(task.label_counts(probs))
    shift = 0.5 * sum(abs(before.get(k, 0.0) - now.get(k, 0.0)) for k in set(before) | set(now))
    facts = {"new_fraction": round(new_fraction, 4), "label_shift": round(shift, 4), "kept_from": previous.name,
             "trained_in": trained_in}
    if new_fraction >= cfg.student.retrain_new_fraction:
        return {**facts, "retrain": True, "reason": f"{new_fraction:.1%} of training records are new or changed "
                f"(>= {cfg.student.retrain_new_fraction:.0%})"}
    if shift >= cfg.student.retrain_shift:
        return {**facts, "retrain": True,
                "reason": f"the weak label distribution moved by {shift:.3f} (>= {cfg.student.retrain_shift})"}
    return {**facts, "retrain": False, "reason": f"{new_fraction:.1%} new records and a label shift of {shift:.3f} are "
            f"under student.retrain_new_fraction and retrain_shift"}


def run_project(project: Project, *, train: bool = True, lm=None, show_progress: bool = True,
                calls_in_tasks: int = 0, stored_only: bool = False) -> Path:
    """Label (LLM answers from the store when present), fit the label model, train and evaluate the student.

    Args:
        project: the loaded project (``labelloop.load_project``).
        train: also train (or, by ``student.retrain``, keep), evaluate and export the student.
        lm: the DSPy LM that answers; built from the config when None.
        show_progress: rich progress bars for LLM work.
        calls_in_tasks: LLM calls that labeling tasks made for this run before it (``--runner dask``).
        stored_only: with an ``llm_budget``, ask nothing on the train split and use the answers
            stored (``labelloop train``; call ``require_stored`` first for the gold splits).

    Returns:
        The run folder.
    """
    started = time.time()
    cfg, task, taxonomy = project.config, project.task, project.taxonomy
    result = label_dataset(project, lm=lm, show_progress=show_progress, stored_only=stored_only)
    train_votes, dev = result.splits["train"], result.splits.get("dev")
    names, k, gold_dev = list(taxonomy.names), len(taxonomy), project.gold("dev")
    model, majority, kind, chosen_on_dev = fit_label_model(task, cfg.label_model, train_votes.votes, names, gold_dev,
                                                           None if dev is None else dev.votes, cfg.seed,
                                                           label_model_votes(task, result))
    P = reviewed_probabilities(project, train_votes.ids, model.predict_proba(train_votes.votes))  # a person's label wins
    covered = task.covered(train_votes.votes)
    probs = task.probabilities(train_votes.ids, train_votes.texts, P, covered, names)
    decision, student = None, None
    if train:
        decision = student_decision(cfg, task, probs, {text_hash(t) for t in train_votes.texts})
        if decision["retrain"]:
            student = task.train_student(train_votes.texts, P, covered, cfg.student, cfg.seed)
        else:
            student = load_student(cfg.runs_dir / decision["kept_from"] / "model.skops")
        logger.info("student: %s (%s)", "trained" if decision["retrain"] else f"kept from {decision['kept_from']}",
                    decision["reason"])
    summary = task.summary(train_votes.votes, result.names, None if dev is None else dev.votes, gold_dev,
                           result.invalid, k)
    for column, counts in (("llm_failures", result.failed), ("truncated", result.truncated)):
        summary[column] = [counts.get(name, "") for name in summary.index]
    origins = {spec.name: spec.origin for spec in cfg.labelers if getattr(spec, "origin", None)}
    if origins:  # rules propose-lfs wrote: where each came from
        summary["origin"] = [origins.get(name, "") for name in summary.index]
    metrics = {
        "name": cfg.name, "task": task.name, "labels": names, "model": cfg.lm.model, "label_model": kind,
        **task.model_info(model), "features": cfg.student.features, "n_train": len(train_votes.ids),
        "coverage": float(covered.mean()),
        "self_trained": int((~covered).sum()) if decision and decision["retrain"] and cfg.student.self_train else 0,
        "llm_calls": result.llm_calls + calls_in_tasks,
        "llm_calls_in_tasks": calls_in_tasks, "llm_failures": result.failed,
        "records": {"total": sum(len(s.ids) for s in result.splits.values()), "new": len(result.new_records),
                    "failed_records": len(result.failed_records),
                    "answers_new": sum(result.asked.values()), "answers_reused": sum(result.reused.values()),
                    "failed": result.failed, "truncated": result.truncated},
        "scores": evaluate(project, result, model, majority, student),
    }
    if student is not None:
        metrics["calibration"] = task.calibrate(student, names, cfg.student, _gold(project, result, "dev"),
                                                _gold(project, result, "test"))
        metrics["training_data_sha256"] = training_data_hash(train_votes.texts)
    if chosen_on_dev is not None:
        metrics["label_model_choice"] = {"dev": chosen_on_dev, "rule": AUTO_RULE}
    if result.budget is not None:
        metrics["llm_budget"] = result.budget.to_dict()
    # gold labels the run's models disagree with (no LLM): gold_issues.csv, see labelloop.flows.audit
    issues, metrics["gold_quality"] = gold_quality(project, result, model, student, metrics.get("calibration"))
    wrong_labels = None
    if train:  # train records ranked by how likely their label is wrong: label_issues.csv (labelloop.flows.review)
        wrong_labels, metrics["label_quality"] = label_issues(project, train_votes.ids, train_votes.texts, P, covered)
    if project.reviewed is not None:
        metrics["review"] = review_metrics(project, train_votes.ids)
    run_dir = new_run_dir(cfg)
    if decision is not None:
        metrics["student"] = {**decision, "trained_in": run_dir.name} if decision["retrain"] else decision
    write_text(run_dir / "config.yaml", config_to_yaml(cfg))
    for split, votes in result.splits.items():
        write_frame(run_dir / f"votes_{split}.parquet", task.matrix_frame(result.names, votes.ids, votes.texts,
                                                                          votes.votes, names))
    write_frame(run_dir / "probabilistic_labels.parquet", probs)
    write_frame(run_dir / "lf_summary.csv", summary.reset_index(names="labeler"))
    if wrong_labels is not None:
        write_frame(run_dir / "label_issues.csv", wrong_labels)
    if issues is not None:
        write_frame(run_dir / "gold_issues.csv", issues)
    if decision is not None and not decision["retrain"]:
        with atomic_path(run_dir / "model.skops") as tmp:
            shutil.copyfile(cfg.runs_dir / decision["kept_from"] / "model.skops", tmp)
    elif student is not None:
        save_student(student, run_dir / "model.skops")
    if student is not None:
        metrics["model_sha256"] = file_sha256(run_dir / "model.skops")
        write_text(run_dir / "model_card.md", render_model_card(cfg.name, names, metrics, result.names))
    metrics["wall_s"] = time.time() - started
    write_json(run_dir / "metrics.json", metrics)
    write_text(run_dir / "report.md", render_report(cfg.name, metrics, summary, task.label_counts(probs),
                                                    label_issues=wrong_labels))
    # the same report as one HTML page with plots; a failure there is logged and never costs the run
    write_html_report(run_dir, cfg.name, metrics, summary, report_inputs(
        task, names, result.names, model, P, covered, train_votes.texts, student, metrics.get("calibration"),
        _gold(project, result, "dev"), _gold(project, result, "test"), cfg.seed))
    return run_dir
