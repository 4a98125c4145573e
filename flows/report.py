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


def render_report(name: str, metrics: dict, summary: pd.DataFrame, label_counts: dict[str, int]) -> str:
    rows = [{"split": split, "method": method, **vals}
            for split, by_method in metrics["scores"].items() for method, vals in by_method.items()]
    summary_rows = [{"labeler": idx, **{k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()}}
                    for idx, row in summary.iterrows()]
    return (
        f"# labelloop run: {name}\n\n"
        f"- records labeled: {metrics['n_train']} (covered by at least one labeler: {metrics['coverage']:.1%})\n"
        f"- LLM calls this run: {metrics['llm_calls']} (model `{metrics['model']}`)\n"
        f"{_records_line(metrics)}"
        f"{_budget_line(metrics)}"
        f"- label model: {metrics['label_model']}\n"
        f"- wall time: {metrics['wall_s']:.1f} s\n\n"
        f"## Scores on gold records\n\n{_table(rows)}\n"
        f"## Labeling functions\n\n{_table(summary_rows)}\n"
        f"## Weak label distribution (train)\n\n{_table([{'label': k, 'records': v} for k, v in label_counts.items()])}"
    )


def render_model_card(name: str, labels, metrics: dict, labelers: list[str]) -> str:
    test = metrics["scores"].get("test", {}).get("student", {})
    multilabel = metrics.get("task") == "multilabel"
    quality = (f"- test micro F1: {test.get('micro_f1', 'n/a')}, RP@5: {test.get('rp5', 'n/a')} (n={test.get('n', 0)})"
               if multilabel else f"- test accuracy: {test.get('accuracy', 'n/a')} (n={test.get('n', 0)})")
    kind = "one logistic regression per label (multi-label)" if multilabel else "A logistic regression text classifier"
    return (
        f"# Model card: {name}\n\n"
        f"{kind} on {metrics['features']} features, trained by labelloop on "
        "probabilistic labels from a label model over weak labelers; no hand labels were used for training.\n\n"
        f"- labels: {', '.join(labels)}\n- labelers: {', '.join(labelers)}\n"
        f"- training records: {metrics['n_train']}\n- LLM: `{metrics['model']}`\n"
        f"{quality}\n\n"
        "Load it with `labelloop predict` or `labelloop.predict` (skops, no pickle). "
        "Inputs are short texts like the training data; expect lower accuracy on other domains.\n"
    )
