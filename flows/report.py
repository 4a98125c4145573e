"""The Markdown run report."""

from __future__ import annotations

import pandas as pd


def _table(rows: list[dict]) -> str:
    if not rows:
        return "_none_\n"
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _records_line(metrics: dict) -> str:
    """Answers new and reused this run, and any records the LLM failed on or saw shortened."""
    rec = metrics.get("records")
    if not rec:
        return ""
    line = (f"- records in all files: {rec['total']}, {rec['new']} new or changed this run; LLM answers: "
            f"{rec['answers_new']} new, {rec['answers_reused']} reused from the vote store\n")
    failed = {k: v for k, v in rec["failed"].items() if v}
    if failed:
        line += (f"- **records without an LLM answer** (their calls failed; they abstain): {failed}; "
                 "`labelloop plan` shows them, `metrics.json` has the counts\n")
    truncated = {k: v for k, v in rec["truncated"].items() if v}
    if truncated:
        line += f"- records shortened to fit the model's context: {truncated}\n"
    student = metrics.get("student")
    if student:
        how = "trained in this run" if student["retrain"] else f"kept from {student['kept_from']}"
        line += f"- student: {how} ({student['reason']})\n"
    return line


def _choice(metrics: dict) -> str:
    """How ``label_model: auto`` chose, when it compared the two on dev."""
    dev = (metrics.get("label_model_choice") or {}).get("dev")
    if not dev:
        return ""
    return f" (auto: gold dev score {dev['snorkel']:.3f} Snorkel, {dev['majority']:.3f} majority vote)"


def _budget_line(metrics: dict) -> str:
    """What the ``llm_budget`` bought on the train split, when there is one."""
    b = metrics.get("llm_budget")
    if not b:
        return ""
    scores = ", ".join("n/a" if s is None else f"{s:.3f}" for s in b["dev_scores"])
    return (f"- LLM budget: {b['spent']} of {b['max_answers']} (record, labeler) answers spent on the train split in "
            f"{len(b['rounds'])} round(s) ({b['llm_calls']} LLM calls; {b['reused']} answers from the vote store"
            f"{', charged' if b['count_stored'] else ', free'}); {b['unasked']} of {b['pairs']} pairs left unasked "
            f"(they abstain); stopped: {b['stopped']}; label model dev score by round: {scores}; gold splits answered "
            "in full\n")


def _cell(value, width: int = 0) -> str:
    """A value fit for one Markdown table cell: one line, pipes escaped, cut to ``width`` characters."""
    text = " ".join(str(value).split())
    if width and len(text) > width:
        text = text[:width - 3] + "..."
    return text.replace("|", "\\|")


def _label_issues_section(metrics: dict, issues: pd.DataFrame | None) -> str:
    """How many train labels look wrong, and the ten most likely wrong (``label_issues.csv``)."""
    quality = metrics.get("label_quality")
    if not quality:
        return ""
    if quality.get("skipped"):
        return f"\n## Likely-wrong labels (train)\n\nnot ranked: {quality['skipped']}\n"
    lines = (f"\n## Likely-wrong labels (train)\n\n{quality['flagged']} of {quality['n_ranked']} covered train records "
             "flagged by cleanlab's find_label_issues under out-of-fold students; all of them ranked (the students beside "
             "the label model's confidence), most likely wrong first, in `label_issues.csv`; "
             "`labelloop review export CONFIG` sends the top ones to a person\n\n")
    if issues is None or not len(issues):
        return lines
    given = "given_labels" if "given_labels" in issues.columns else "given_label"
    suggested = "suggested_labels" if "suggested_labels" in issues.columns else "suggested_label"
    rows = [{"id": _cell(r["id"]), "given": _cell(r[given]), "suggested": _cell(r[suggested]),
             "label model confidence": f"{r['label_model_confidence']:.2f}", "score": f"{r['score']:.3f}",
             "text": _cell(r["text"], 80)} for _, r in issues.head(10).iterrows()]
    return lines + _table(rows)


def _self_trained(metrics: dict) -> str:
    n = metrics.get("self_trained", 0)
    return f"; the student labelled the other {n} itself and learned from them too (student.self_train)" if n else ""


def render_report(name: str, metrics: dict, summary: pd.DataFrame, label_counts: dict[str, int],
                  label_issues: pd.DataFrame | None = None) -> str:
    rows = [{"split": split, "method": method, **vals}
            for split, by_method in metrics["scores"].items() for method, vals in by_method.items()]
    summary_rows = [{"labeler": idx, **{k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()}}
                    for idx, row in summary.iterrows()]
    return (
        f"# labelloop run: {name}\n\n"
        f"- records labeled: {metrics['n_train']} (covered by at least one labeler: {metrics['coverage']:.1%})"
        f"{_self_trained(metrics)}\n"
        f"- LLM calls this run: {metrics['llm_calls']} (model `{metrics['model']}`)\n"
        f"{_records_line(metrics)}"
        f"{_budget_line(metrics)}"
        f"- label model: {metrics['label_model']}{_choice(metrics)}\n"
        f"- wall time: {metrics['wall_s']:.1f} s\n\n"
        f"## Scores on gold records\n\n{_table(rows)}\n"
        f"## Labeling functions\n\n{_table(summary_rows)}\n"
        f"## Weak label distribution (train)\n\n{_table([{'label': k, 'records': v} for k, v in label_counts.items()])}"
        f"{_label_issues_section(metrics, label_issues)}"
    )


def _calibration_lines(cal: dict, multilabel: bool) -> str:
    """What the model card says about confidence: calibration error and the abstain rule, as measured."""
    if not cal:
        return "- calibration: not measured (no gold dev records)\n"
    if multilabel:
        lines = f"- decision: one threshold per label, the best F1 on the gold dev records ({cal['thresholds']})\n"
        for split in ("dev", "test"):
            if split in cal:
                c = cal[split]
                lines += (f"- {split}: micro F1 {c['micro_f1']} at the thresholds ({c['micro_f1_at_0.5']} at 0.5); "
                          f"expected calibration error of the (record, label) probabilities {c['ece']}; "
                          f"{c['coverage']:.1%} of records get a label\n")
        return lines
    lines = (f"- temperature {cal['temperature']} fitted on the gold dev records by log-loss"
             f"{' (1.0: none helped)' if cal['temperature'] == 1.0 else ''}\n")
    if cal.get("target"):
        target = ", ".join(f"{k} {v}" for k, v in cal["target"].items())
        lines += (f"- abstains below confidence {cal['threshold']} (chosen on dev for {target}); "
                  "predictions still carry the label, with `abstain: true`\n")
    else:
        lines += "- never abstains (set `student.abstain: {precision: ..}` or `{coverage: ..}` to let it)\n"
    for split in ("dev", "test"):
        if split in cal:
            c = cal[split]
            precision = "n/a" if c["precision"] is None else f"{c['precision']:.3f}"
            lines += (f"- {split} ({c['n']} gold records): expected calibration error {c['ece']} ({c['ece_raw']} "
                      f"before the temperature); answers {c['coverage']:.1%} of records, {precision} of them right\n")
    return lines


def render_model_card(name: str, labels, metrics: dict, labelers: list[str]) -> str:
    """The run's model card: what the student is, what it learned from, how good and how sure it is, and its limits."""
    multilabel = metrics.get("task") == "multilabel"
    kind = ("One logistic regression per label (multi-label)" if multilabel
            else "A class-balanced logistic regression text classifier")
    kind = (f"{kind} on {metrics['features']} features" if metrics.get("features") != "finetune"
            else "The MiniLM sentence encoder fine-tuned with a linear classification head (features: finetune)")
    rows = [{"split": split, **vals["student"]} for split, vals in metrics["scores"].items() if "student" in vals]
    teacher = [{"split": split, "method": method, **vals} for split, by in metrics["scores"].items()
               for method, vals in by.items() if method.endswith("_llm")]
    return (
        f"# Model card: {name}\n\n"
        f"{kind}, trained by labelloop on probabilistic labels from a "
        f"{metrics['label_model']} label model over weak labelers; no hand labels were used "
        "for training. Gold records served only to calibrate, choose thresholds and score.\n\n"
        "## Data\n\n"
        f"- training records: {metrics['n_train']}, {metrics['coverage']:.1%} of them with at least one vote"
        f"{_self_trained(metrics)}\n"
        f"- training data SHA-256 (sorted text hashes): `{metrics.get('training_data_sha256', 'n/a')}`\n"
        f"- labels: {', '.join(labels)}\n\n"
        "## Labelers and label model\n\n"
        f"- labelers: {', '.join(labelers)}\n- LLM (teacher): `{metrics['model']}`\n"
        f"- label model: {metrics['label_model']}\n\n"
        f"## Scores on gold records\n\n{_table(rows)}\n"
        f"Asking the LLM directly, on the same records:\n\n{_table(teacher)}\n"
        f"## Confidence\n\n{_calibration_lines(metrics.get('calibration') or {}, multilabel)}\n"
        "## Use\n\n"
        "- intended use: labelling texts like the training records, in bulk or behind an endpoint "
        "(`labelloop predict`, `labelloop serve`, `labelloop.predict`); the file is skops (no pickle) and is refused "
        f"if its SHA-256 differs from `{metrics.get('model_sha256', 'n/a')}`\n"
        "- limits: the labels are only as good as the weak labelers and the label model; expect lower accuracy on "
        "other domains, languages or text lengths than the training records, and on labels with few votes; the "
        "scores above come from a small gold sample and carry its sampling error; route predictions with "
        "`abstain: true` to a person\n"
    )
