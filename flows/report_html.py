"""The HTML run report: one self-contained file beside ``report.md``, with plots.

Everything is inline: CSS in a ``<style>`` element, plots as SVG drawn here (no plotting library:
a few KB per plot, crisp at any zoom, text that stays selectable), no scripts, nothing fetched, so
the file opens offline and can be mailed or attached as it is. Every text that comes from a
project (record texts, label and labeler names) is HTML-escaped.

- ``report_inputs``: what the plots need beyond ``metrics.json`` and the labeler summary, computed in
  ``run_project`` from the fitted models (student probabilities on gold, the label model's estimated
  labeler accuracies, the student's predictions on train).
- ``render_html_report``: the page, as a string. A plot or section that raises is left out with a
  note and a warning in the log; the rest of the page is still written.
- ``write_html_report``: render and write ``report.html`` atomically; never raises (the run is kept).
- ``publish_artifacts``: inside a Prefect flow run, the scores and labeler summary as table artifacts
  and a markdown artifact with the report's path: names, counts and scores, never a record's text.
"""

from __future__ import annotations

import html
import json
import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

logger = logging.getLogger("labelloop")

ISSUES_FILE = "label_issues.csv"  # written into the run folder by the label-quality ranking, when it runs
GOLD_ISSUES_FILE = "gold_issues.csv"  # written into the run folder by every multi-class run with gold (flows/audit.py)
MAX_ISSUES = 25  # rows of either shown
GOLD_ISSUE_COLUMNS = ["split", "id", "text", "gold_label", "suggested_label", "score", "flagged"]
MAX_TEXT = 200  # characters of a record text shown
MAX_BARS = 40  # categories in one bar chart (labels by frequency)
MAX_CONFUSION = 25  # classes in the confusion matrix (by gold frequency)
STUDENT_SAMPLE = 2000  # train records the student predicts for its class balance
PALETTE = ("#4c78a8", "#f58518", "#54a24b", "#b279a2")


@dataclass
class ReportInputs:
    """What the report draws beyond ``metrics.json`` and the labeler summary; any field may be missing.

    Attributes:
        labels: the taxonomy's label names, in order.
        multilabel: a multi-label task (per-label F1 instead of the confusion matrix and class balance).
        estimated_accuracy: labeler name -> accuracy the label model estimates (Snorkel; None for majority vote).
        balance: source (gold dev, label model, student) -> label name -> records.
        gold_split: the gold split the student is scored on below (``test``, else ``dev``).
        gold: gold labels there: label ids (multi-class) or an (n, k) boolean matrix (multi-label).
        student_proba: the student's probabilities there, after its temperature.
        thresholds: multi-label, the student's per-label thresholds.
        student_sample: how many train records the student's class balance was counted on.
    """

    labels: list[str]
    multilabel: bool = False
    estimated_accuracy: dict[str, float] | None = None
    balance: dict[str, dict[str, float]] = field(default_factory=dict)
    gold_split: str | None = None
    gold: np.ndarray | None = None
    student_proba: np.ndarray | None = None
    thresholds: list[float] | None = None
    student_sample: int | None = None


def _attempt(what: str, fn: Callable, *args, **kwargs):
    """``fn(*args)``, or None with a warning when it raises: a part of the report must never cost the run."""
    try:
        return fn(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - any failure in a plot only drops that plot
        logger.warning("report.html: %s left out (%s: %s)", what, type(exc).__name__, exc)
        return None


# ---------------------------------------------------------------------------------------------- inputs


def estimated_accuracy(model, labelers: list[str]) -> dict[str, float] | None:
    """Labeler -> accuracy estimated by the label model: Snorkel's ``get_weights``; None for majority vote.

    Multi-label: the mean over the labels that have a Snorkel model of each labeler's estimate there.
    """
    from labelloop.labelers.label_model import LabelModelWrapper
    from labelloop.labelers.multilabel import MultiLabelModel

    if isinstance(model, LabelModelWrapper):
        weights = np.asarray(model.label_model_.get_weights(), dtype=float)
        return {name: float(w) for name, w in zip(labelers, weights)}
    if isinstance(model, MultiLabelModel) and model.models_:
        found: dict[int, list[float]] = {}
        for cols, wrapper in model.models_.values():
            for c, w in zip(cols, wrapper.label_model_.get_weights()):
                found.setdefault(c, []).append(float(w))
        return {labelers[c]: float(np.mean(ws)) for c, ws in sorted(found.items())}
    return None


def _counts(ids, names: list[str]) -> dict[str, int]:
    counts = np.bincount(np.asarray(ids, dtype=int), minlength=len(names))
    return {name: int(c) for name, c in zip(names, counts)}


def report_inputs(task, names, labelers: list[str], model, P: np.ndarray, covered: np.ndarray, texts: list[str], student,
                  calibration: dict | None, dev: tuple | None, test: tuple | None, seed: int = 0) -> ReportInputs | None:
    """What the plots need, from a run's fitted models; a piece that fails is logged and left out (all of it: None).

    Args:
        task: the project's task object; names: the label names; labelers: the labeler names, in vote order.
        model: the fitted label model; P, covered: its train probabilities and which train records got a vote.
        texts: the train texts; student: the student (None: not trained); calibration: ``metrics["calibration"]``.
        dev, test: ``(texts, gold labels)`` of the gold splits, or None.
    """
    return _attempt("the plots' inputs", _report_inputs, task, names, labelers, model, P, covered, texts, student,
                    calibration, dev, test, seed)


def _report_inputs(task, names, labelers, model, P, covered, texts, student, calibration, dev, test, seed) -> ReportInputs:
    from labelloop.labelers.multilabel import gold_matrix
    from labelloop.labelers.student import predict_proba_full

    names, k = list(names), len(names)
    out = ReportInputs(labels=names, multilabel=task.name == "multilabel")
    out.estimated_accuracy = _attempt("estimated labeler accuracy", estimated_accuracy, model, labelers)
    cal = calibration or {}
    if not out.multilabel:
        if dev is not None and len(dev[1]):
            out.balance["gold dev"] = _counts(dev[1], names)
        out.balance["label model (train)"] = _attempt("label model balance", lambda: _counts(P[covered].argmax(axis=1), names))
        if student is not None:
            def student_counts():
                rows = np.arange(len(texts))
                if len(rows) > STUDENT_SAMPLE:
                    rows = np.sort(np.random.default_rng(seed).choice(rows, STUDENT_SAMPLE, replace=False))
                out.student_sample = len(rows)
                return _counts(predict_proba_full(student, [texts[i] for i in rows], k).argmax(axis=1), names)

            out.balance["student (train)"] = _attempt("student balance", student_counts)
        out.balance = {source: counts for source, counts in out.balance.items() if counts}
    split, gold = ("test", test) if test is not None and len(test[1]) else ("dev", dev)
    if student is not None and gold is not None and len(gold[1]):
        def student_on_gold():
            if out.multilabel:
                return gold_matrix(gold[1], k), student.predict_proba(gold[0])
            return np.asarray(gold[1], dtype=int), predict_proba_full(student, gold[0], k, cal.get("temperature", 1.0))

        found = _attempt("student on gold", student_on_gold)
        if found is not None:
            out.gold_split, (out.gold, out.student_proba) = split, found
    if out.multilabel:
        out.thresholds = cal.get("thresholds")
    return out


# ---------------------------------------------------------------------------------------------- formatting


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _short(text: str, limit: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _missing(value) -> bool:
    return value is None or (isinstance(value, str) and value == "") or (isinstance(value, float) and math.isnan(value))


def _fmt(value) -> str:
    if isinstance(value, str) and value == "":
        return ""
    if _missing(value):
        return "n/a"
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.3f}"
    if isinstance(value, (list, tuple, np.ndarray)):
        return ", ".join(_fmt(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items())
    return str(value)


def _pct(value) -> str:
    return "n/a" if _missing(value) else f"{100 * float(value):.1f}%"


def _numeric(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _table(rows: list[dict], columns: list[str] | None = None, cls: str = "") -> str:
    """An HTML table of dict rows; every cell escaped, numbers right-aligned."""
    if not rows:
        return '<p class="note">none</p>'
    columns = columns or list(dict.fromkeys(c for row in rows for c in row))
    head = "".join(f"<th>{_e(c).replace('_', '_<wbr>')}</th>" for c in columns)
    body = []
    for row in rows:
        cells = []
        for c in columns:
            v = row.get(c)
            cells.append(f'<td class="n">{_e(_fmt(v))}</td>' if _numeric(v) else f"<td>{_e(_fmt(v))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<div class="wrap"><table class="{cls}"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table></div>")


# ---------------------------------------------------------------------------------------------- SVG plots


def _svg(width: float, height: float, body: str, label: str) -> str:
    return (f'<svg viewBox="0 0 {width:.0f} {height:.0f}" width="{width:.0f}" '
            f'height="{height:.0f}" role="img" aria-label="{_e(label)}">{body}</svg>')


def _legend(series: list[str], x: float, y: float, colors) -> str:
    parts = []
    for i, name in enumerate(series):
        parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="12" height="12" rx="2" fill="{colors[i % len(colors)]}"/>'
                     f'<text x="{x + 17:.1f}" y="{y + 10:.1f}">{_e(name)}</text>')
        x += 17 + 7 * len(name) + 22
    return "".join(parts)


def _scale(values) -> float:
    """The axis maximum for shares: the largest value rounded up to a tenth (at most 1)."""
    top = max((float(v) for v in values if not _missing(v)), default=1.0)
    return min(1.0, max(0.1, math.ceil(top * 10 - 1e-9) / 10))


def _ticks(maximum: float) -> list[float]:
    """Round tick values from 0 to about ``maximum``: at most six steps of 1, 2, 2.5 or 5 times a power of ten.

    >>> _ticks(1.0), _ticks(0.3)
    ([0.0, 0.2, 0.4, 0.6, 0.8, 1.0], [0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3])
    """
    if maximum <= 0:
        return [0.0]
    power = 10 ** math.floor(math.log10(maximum))
    step = next(f * power for f in (0.1, 0.2, 0.25, 0.5, 1, 2, 2.5, 5, 10) if maximum / (f * power) <= 6 + 1e-9)
    return [round(i * step, 10) for i in range(int(maximum / step + 1e-9) + 1)]


def hbars(categories: list[str], series: dict[str, list], *, label: str, maximum: float = 1.0, percent: bool = True,
          width: int = 760, colors=PALETTE) -> str:
    """Grouped horizontal bars: one group per category, one bar per series (None: n/a)."""
    if not categories:
        raise ValueError("no categories to draw")
    names = list(series)
    shown = [_short(c, 34) for c in categories]
    left = min(270, 14 + 7.4 * max(len(s) for s in shown))
    bar = 14 if len(names) > 1 else 18
    group = bar * len(names) + 10
    top = 30 if len(names) > 1 else 8
    plot = width - left - 64
    height = top + group * len(categories) + 26
    maximum = maximum or 1.0
    parts = [_legend(names, left, 6, colors)] if len(names) > 1 else []
    for t in _ticks(maximum):
        x = left + plot * t / maximum
        parts.append(f'<line x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{height - 22}" stroke="#d8dee4"/>'
                     f'<text x="{x:.1f}" y="{height - 8}" text-anchor="middle" class="tick">'
                     f'{f"{100 * t:.0f}%" if percent else _e(f"{t:g}")}</text>')
    for i, (category, short) in enumerate(zip(categories, shown)):
        y0 = top + i * group
        parts.append(f'<text x="{left - 8:.1f}" y="{y0 + (group - 10) / 2 + 4:.1f}" text-anchor="end">'
                     f"<title>{_e(category)}</title>{_e(short)}</text>")
        for s, name in enumerate(names):
            v, y = series[name][i], y0 + s * bar
            if _missing(v):
                parts.append(f'<text x="{left + 4:.1f}" y="{y + bar - 4:.1f}" class="tick">n/a</text>')
                continue
            w = plot * min(max(float(v) / maximum, 0.0), 1.0)
            text = _pct(v) if percent else _fmt(v)
            parts.append(f'<rect x="{left:.1f}" y="{y:.1f}" width="{w:.1f}" height="{bar - 2}" fill="{colors[s % len(colors)]}">'
                         f"<title>{_e(category)}, {_e(name)}: {_e(text)}</title></rect>"
                         f'<text x="{left + w + 4:.1f}" y="{y + bar - 4:.1f}" class="tick">{_e(text)}</text>')
    return _svg(width, height, "".join(parts), label)


def reliability(P: np.ndarray, y: np.ndarray, bins: int = 10, unit: str = "records") -> tuple[str, float]:
    """A reliability diagram of top-class confidence against accuracy, with the confidence histogram; and the ECE."""
    from labelloop.labelers.calibration import ece

    P, y = np.asarray(P, dtype=float), np.asarray(y, dtype=int)
    if not len(P):
        raise ValueError("no gold records")
    confidence, correct = P.max(axis=1), (P.argmax(axis=1) == y).astype(float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    left, top, side, hist = 52, 12, 340, 64
    width, height = left + side + 20, top + side + 40 + hist + 22

    def px(v):
        return left + side * v

    def py(v):
        return top + side * (1 - v)

    parts = []
    for t in np.linspace(0, 1, 6):
        parts.append(f'<line x1="{px(t):.1f}" y1="{top}" x2="{px(t):.1f}" y2="{top + side}" stroke="#eef1f4"/>'
                     f'<line x1="{left}" y1="{py(t):.1f}" x2="{left + side}" y2="{py(t):.1f}" stroke="#eef1f4"/>'
                     f'<text x="{px(t):.1f}" y="{top + side + 16}" text-anchor="middle" class="tick">{t:.1f}</text>'
                     f'<text x="{left - 6}" y="{py(t) + 4:.1f}" text-anchor="end" class="tick">{t:.1f}</text>')
    counts = np.bincount(which, minlength=bins)
    for b in range(bins):
        if not counts[b]:
            continue
        acc, conf = correct[which == b].mean(), confidence[which == b].mean()
        x0, w = px(edges[b]) + 1, side / bins - 2
        tip = (f"<title>confidence {edges[b]:.1f}-{edges[b + 1]:.1f}: {int(counts[b])} records, accuracy {acc:.3f}, "
               f"mean confidence {conf:.3f}</title>")
        parts.append(f'<rect x="{x0:.1f}" y="{py(acc):.1f}" width="{w:.1f}" height="{side * acc:.1f}" fill="{PALETTE[0]}" '
                     f'fill-opacity="0.85">{tip}</rect>'
                     f'<line x1="{x0 + w / 2:.1f}" y1="{py(acc):.1f}" x2="{x0 + w / 2:.1f}" y2="{py(conf):.1f}" '
                     'stroke="#e45756" stroke-width="2"/>'
                     f'<line x1="{x0 + 2:.1f}" y1="{py(conf):.1f}" x2="{x0 + w - 2:.1f}" y2="{py(conf):.1f}" '
                     f'stroke="#e45756" stroke-width="3">{tip}</line>')
    parts.append(f'<line x1="{px(0)}" y1="{py(0)}" x2="{px(1)}" y2="{py(1)}" stroke="#59636e" stroke-dasharray="5 4"/>')
    key = ((f'<rect x="0" y="-9" width="12" height="10" fill="{PALETTE[0]}"/>', "accuracy"),
           ('<line x1="0" y1="-4" x2="12" y2="-4" stroke="#e45756" stroke-width="3"/>', "mean confidence"),
           ('<line x1="0" y1="-4" x2="12" y2="-4" stroke="#59636e" stroke-dasharray="4 3"/>', "perfect calibration"))
    parts += [f'<g transform="translate({left + 10} {top + 20 + 16 * i})">{mark}<text x="18" y="0">{text}</text></g>'
              for i, (mark, text) in enumerate(key)]
    parts.append(f'<rect x="{left}" y="{top}" width="{side}" height="{side}" fill="none" stroke="#8c959f"/>'
                 f'<text x="{left + side / 2}" y="{top + side + 30}" text-anchor="middle">confidence of the top class</text>'
                 f'<text transform="translate(14 {top + side / 2}) rotate(-90)" text-anchor="middle">accuracy</text>')
    h0 = top + side + 40
    peak = max(int(counts.max()), 1)
    for b in range(bins):
        h = hist * counts[b] / peak
        parts.append(f'<rect x="{px(edges[b]) + 1:.1f}" y="{h0 + hist - h:.1f}" width="{side / bins - 2:.1f}" height="{h:.1f}" '
                     f'fill="#8c959f"><title>{int(counts[b])} {unit}</title></rect>')
    parts.append(f'<line x1="{left}" y1="{h0 + hist}" x2="{left + side}" y2="{h0 + hist}" stroke="#8c959f"/>'
                 f'<text x="{left - 6}" y="{h0 + 10}" text-anchor="end" class="tick">{peak}</text>'
                 f'<text x="{left + side / 2}" y="{h0 + hist + 16}" text-anchor="middle" class="tick">{unit} per bin</text>')
    error = ece(P, y, bins)
    return _svg(width, height, "".join(parts), f"reliability diagram, ECE {error:.3f}"), error


def confusion_table(y: np.ndarray, pred: np.ndarray, names: list[str]) -> str:
    """Gold rows, predicted columns; each cell shaded by its share of the row; the diagonal is right."""
    k = len(names)
    M = np.zeros((k, k), dtype=int)
    np.add.at(M, (np.asarray(y, dtype=int), np.asarray(pred, dtype=int)), 1)
    keep = list(range(k))
    if k > MAX_CONFUSION:
        keep = sorted(sorted(np.flatnonzero(M.sum(axis=1) + M.sum(axis=0)), key=lambda j: -M[j].sum())[:MAX_CONFUSION])
    head = "".join(f'<th class="vert" title="{_e(names[j])}"><span>{_e(_short(names[j], 28))}</span></th>' for j in keep)
    rows = []
    for i in keep:
        total = M[i].sum()
        cells = []
        for j in keep:
            share = M[i, j] / total if total else 0.0
            color = "84,162,75" if i == j else "228,87,86"
            style = f"background:rgba({color},{0.12 + 0.75 * share:.2f})" if M[i, j] else ""
            cells.append(f'<td style="{style}" title="gold {_e(names[i])}, predicted {_e(names[j])}: {M[i, j]}">'
                         f"{M[i, j] or ''}</td>")
        recall = _pct(M[i, i] / total) if total else "n/a"
        rows.append(f'<tr><th title="{_e(names[i])}">{_e(_short(names[i], 28))}</th>{"".join(cells)}'
                    f'<td class="n">{total}</td><td class="n">{recall}</td></tr>')
    note = f'<p class="note">The {len(keep)} most frequent of {k} labels.</p>' if len(keep) < k else ""
    return (f'<div class="wrap"><table class="cm"><thead><tr><th class="corner">gold \\ predicted</th>{head}'
            f'<th class="vert"><span>records</span></th><th class="vert"><span>recall</span></th></tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table></div>{note}")


# ---------------------------------------------------------------------------------------------- sections


def _score_rows(metrics: dict) -> list[dict]:
    return [{"split": split, "method": method, **vals}
            for split, by_method in (metrics.get("scores") or {}).items() for method, vals in by_method.items()]


def _headline(metrics: dict) -> tuple[str, str] | None:
    """The student's main score on the test split (else dev), for the cards."""
    for split in ("test", "dev"):
        student = (metrics.get("scores") or {}).get(split, {}).get("student")
        for key in ("accuracy", "micro_f1"):
            if student and key in student:
                return f"student {key.replace('_', ' ')} ({split})", _fmt(student[key])
    return None


def _facts(metrics: dict, run_name: str | None) -> str:
    cards = [("records labeled", _fmt(metrics.get("n_train"))), ("covered by a labeler", _pct(metrics.get("coverage"))),
             ("LLM calls", _fmt(metrics.get("llm_calls"))), ("label model", _fmt(metrics.get("label_model"))),
             ("wall time", "n/a" if _missing(metrics.get("wall_s")) else f"{metrics['wall_s']:.1f} s")]
    if (headline := _headline(metrics)) is not None:
        cards.append(headline)
    out = ['<div class="cards">'] + [f'<div class="card"><div class="k">{_e(k)}</div><div class="v">{_e(v)}</div></div>'
                                     for k, v in cards] + ["</div>"]
    facts = [("run folder", run_name), ("task", metrics.get("task")), ("labels", len(metrics.get("labels") or [])),
             ("LLM", metrics.get("model")), ("student features", metrics.get("features"))]
    if metrics.get("labels_with_snorkel") is not None:
        facts.append(("labels with a Snorkel model", metrics["labels_with_snorkel"]))
    rec = metrics.get("records")
    if rec:
        facts += [("records in all files", f"{rec['total']:,}, {rec['new']:,} new or changed this run"),
                  ("LLM answers", f"{rec['answers_new']:,} new, {rec['answers_reused']:,} reused from the vote store")]
        failed = {k: v for k, v in (rec.get("failed") or {}).items() if v}
        if failed:
            facts.append(("records without an LLM answer", _fmt(failed)))
        truncated = {k: v for k, v in (rec.get("truncated") or {}).items() if v}
        if truncated:
            facts.append(("records shortened to fit the context", _fmt(truncated)))
    student = metrics.get("student")
    if student:
        how = "trained in this run" if student["retrain"] else f"kept from {student['kept_from']}"
        facts.append(("student", f"{how} ({student['reason']})"))
    cal = metrics.get("calibration") or {}
    if "temperature" in cal:
        abstain = (f"abstains below confidence {cal['threshold']}" if cal.get("target") else "never abstains")
        facts.append(("calibration", f"temperature {cal['temperature']}, {abstain}"))
    elif "thresholds" in cal:
        facts.append(("calibration", f"per-label thresholds ({cal.get('target')})"))
    budget = metrics.get("llm_budget")
    if budget:
        facts.append(("LLM budget", f"{budget['spent']} of {budget['max_answers']} answers spent on train, "
                                    f"{budget['unasked']} of {budget['pairs']} pairs unasked; stopped: {budget['stopped']}"))
    out.append('<dl class="facts">' + "".join(f"<dt>{_e(k)}</dt><dd>{_e(_fmt(v))}</dd>" for k, v in facts
                                             if not _missing(v)) + "</dl>")
    return "".join(out)


def _labeler_rows(summary: pd.DataFrame, labels: list[str]) -> list[dict]:
    rows = []
    for name, row in summary.iterrows():
        out = {"labeler": name}
        for column, value in row.items():
            if column == "polarity" and isinstance(value, (list, tuple, np.ndarray)):
                value = [labels[int(v)] if _numeric(v) and 0 <= int(v) < len(labels) else v for v in value]
            out[column] = value
        rows.append(out)
    return rows


def _labelers(summary: pd.DataFrame, labels: list[str]) -> str:
    names = [str(n) for n in summary.index]
    series = {c: [summary[c].iloc[i] for i in range(len(names))] for c in ("coverage", "overlaps", "conflicts")
              if c in summary.columns}
    plot = _plot("labeler coverage chart", hbars, names, series, label="coverage, overlaps and conflicts per labeler",
                 maximum=_scale([x for v in series.values() for x in v]), colors=(PALETTE[0], "#9ecae9", "#e45756"))
    return ('<p class="note">Share of the training records each labeler voted on (coverage), on which another labeler '
            "also voted (overlaps), and on which another labeler voted differently (conflicts).</p>"
            f"{plot}{_table(_labeler_rows(summary, labels))}")


def _accuracy(summary: pd.DataFrame, inputs: ReportInputs | None, metrics: dict) -> str:
    names = [str(n) for n in summary.index]
    empirical = next((c for c in ("dev_accuracy", "dev_precision") if c in summary.columns), None)
    estimated = inputs.estimated_accuracy if inputs is not None else None
    series = {}
    if estimated:
        series["estimated by the label model"] = [estimated.get(n) for n in names]
    if empirical:
        series[f"{empirical.replace('_', ' ')} on gold"] = summary[empirical].tolist()
    if not series:
        return ('<p class="note">Nothing to show: a majority-vote label model estimates no accuracies, and there is no '
                "gold dev.</p>")
    why = ("Snorkel's estimate of each labeler's accuracy (<code>get_weights</code>, from agreements and disagreements "
           "alone, no gold)" if estimated else f"The {_e(metrics.get('label_model', ''))} label model estimates no accuracies")
    if estimated and metrics.get("task") == "multilabel":
        why += ", the mean over the labels that have a Snorkel model"
    if empirical:
        what = "accuracy" if empirical == "dev_accuracy" else "precision of the positive votes"
        why += f", beside its {what} on the gold dev records it voted on"
    return f'<p class="note">{why}.</p>' + (_plot("labeler accuracy chart", hbars, names, series, label="labeler accuracy") or "")


def _balance(inputs: ReportInputs) -> str:
    if not inputs.balance:
        return '<p class="note">No class counts.</p>'
    labels = inputs.labels
    shares = {}
    for source, counts in inputs.balance.items():
        total = sum(counts.values()) or 1
        shares[f"{source}, {total:,}"] = [counts.get(x, 0) / total for x in labels]
    order = sorted(range(len(labels)), key=lambda j: -max(s[j] for s in shares.values()))[:MAX_BARS]
    order = sorted(order)
    series = {k: [v[j] for j in order] for k, v in shares.items()}
    top = _scale([x for v in series.values() for x in v])
    sample = (f" The student's counts come from a random sample of {inputs.student_sample:,} training records."
              if inputs.student_sample and inputs.student_sample >= STUDENT_SAMPLE else "")
    more = f" The {len(order)} most frequent of {len(labels)} labels." if len(order) < len(labels) else ""
    return (f'<p class="note">Share of each label: in the gold dev records, the label model\'s argmax over the covered '
            f"training records, and the student's predictions on the training records.{sample}{more}</p>"
            + (_plot("class balance chart", hbars, [labels[j] for j in order], series, label="class balance",
                     maximum=top) or ""))


def _per_label(inputs: ReportInputs) -> str:
    from sklearn.metrics import precision_recall_fscore_support

    Y, P = np.asarray(inputs.gold, dtype=bool), np.asarray(inputs.student_proba, dtype=float)
    thresholds = np.asarray(inputs.thresholds if inputs.thresholds is not None else [0.5] * P.shape[1])
    pred = P >= thresholds
    precision, recall, f1, support = precision_recall_fscore_support(Y, pred, average=None, zero_division=0)
    order = [j for j in np.argsort(-support, kind="stable") if support[j] or pred[:, j].any()]
    shown = order[:MAX_BARS]
    names = [f"{inputs.labels[j]} ({support[j]})" for j in shown]
    plot = _plot("per-label F1 chart", hbars, names, {"F1": [f1[j] for j in shown]}, label="per-label F1",
                 percent=False) if shown else ""
    rows = [{"label": inputs.labels[j], "support": int(support[j]), "predicted": int(pred[:, j].sum()),
             "precision": float(precision[j]), "recall": float(recall[j]), "f1": float(f1[j]),
             "threshold": float(thresholds[j])} for j in shown]
    more = f" The {len(shown)} labels with the most gold records of {len(order)} seen." if len(shown) < len(order) else ""
    return (f'<p class="note">The student on the {len(Y):,} gold {_e(inputs.gold_split)} records, each label at its '
            f"threshold; support: gold records with the label (in brackets in the chart).{more}</p>{plot or ''}{_table(rows)}")


def _calibration(inputs: ReportInputs, metrics: dict) -> str:
    P, y = inputs.student_proba, inputs.gold
    if inputs.multilabel:
        flat = np.asarray(P, dtype=float).ravel()
        P, y = np.stack([1 - flat, flat], axis=1), np.asarray(y, dtype=bool).ravel().astype(int)
        what = "each (record, label) probability of the student as a yes/no prediction"
    else:
        temperature = (metrics.get("calibration") or {}).get("temperature", 1.0)
        what = f"the student's top-class confidence after its temperature ({temperature})"
    drawn = _plot("reliability diagram", reliability, P, y, unit="(record, label) pairs" if inputs.multilabel else "records")
    if drawn is None:
        return '<p class="note">The reliability diagram could not be drawn (see the log).</p>'
    svg, error = drawn
    cal = metrics.get("calibration") or {}
    rows = [{"split": split, **cal[split]} for split in ("dev", "test") if isinstance(cal.get(split), dict)]
    table = f'<div><p class="note">As fitted and measured in this run (<code>metrics.json</code>):</p>{_table(rows)}</div>'
    return (f'<p class="note">On the {len(inputs.gold):,} gold {_e(inputs.gold_split)} records, {what}: records grouped '
            "by confidence; a well calibrated student's bars (their accuracy) reach the red marks (their mean "
            f"confidence) on the diagonal. Expected calibration error (ECE): <b>{error:.3f}</b>.</p>"
            f'<div class="row">{svg}{table if rows else ""}</div>')


def read_issues(run_dir: Path, limit: int | None = MAX_ISSUES, file: str = ISSUES_FILE) -> pd.DataFrame | None:
    """The first ``limit`` rows (all when None) of ``file`` (default ``label_issues.csv``) in the run folder, as
    text, or None when it is not there."""
    path = Path(run_dir) / file
    if not path.is_file():
        return None
    return pd.read_csv(path, dtype=str, keep_default_na=False, nrows=limit)


def _cell(value: str):
    """A CSV cell as shown: decimals as numbers (three places), anything else as shortened text."""
    if re.fullmatch(r"-?\d*\.\d+(e-?\d+)?|nan", value.strip(), flags=re.I):
        return float(value)
    return _short(value, MAX_TEXT)


def _cells(frame: pd.DataFrame) -> list[dict]:
    """The first ``MAX_ISSUES`` rows of an issues CSV as table rows (see ``_cell``)."""
    return [{str(c): _cell(str(v)) for c, v in row.items()} for row in frame.head(MAX_ISSUES).to_dict("records")]


def _issues(issues: pd.DataFrame) -> str:
    rows = _cells(issues)
    return (f'<p class="note">The first {len(rows)} rows of <code>{ISSUES_FILE}</code> in the run folder: training '
            "records whose weak label is most likely wrong. Texts are shortened.</p>" + _table(rows, cls="issues"))


def _gold_issues(frame: pd.DataFrame | None, quality: dict) -> str:
    """The gold labels the run's models disagree with: flagged rows first, then the lowest scores."""
    if quality.get("skipped"):
        return f'<p class="note">Gold labels were not checked: {_e(quality["skipped"])}.</p>'
    if frame is None:
        return f'<p class="note"><code>{GOLD_ISSUES_FILE}</code> is not in the run folder.</p>'
    counts = "; ".join(f"{_e(split)}: <b>{_e(_fmt(q.get('flagged')))}</b> of {_e(_fmt(q.get('n')))} flagged "
                       f"({_e(_fmt(q.get('scored')))} scored)" for split, q in quality.items() if isinstance(q, dict))
    rule = f" A label is flagged by {_e(quality['rule'])}." if quality.get("rule") else ""
    flags = f" Flags: {_e(quality['flags'])}." if quality.get("flags") else ""
    unflagged = ~frame["flagged"].astype(str).str.lower().eq("true").to_numpy()
    score = pd.to_numeric(frame["score"], errors="coerce").to_numpy(dtype=float)
    order = pd.DataFrame({"unflagged": unflagged, "score": score}).sort_values(["unflagged", "score"],
                                                                             na_position="last", kind="stable").index
    rows = _cells(frame.iloc[order][[c for c in GOLD_ISSUE_COLUMNS if c in frame.columns]])
    return (f'<p class="note"><code>{GOLD_ISSUES_FILE}</code> in the run folder scores every gold dev and test label '
            "by the run's models (score: their probability of the gold label; low = likely wrong)." + rule + flags
            + (f" Per split: {counts}." if counts else "")
            + f" Below: the first {len(rows)} of {len(frame):,} rows, flagged first, then the lowest scores. "
            "Texts are shortened.</p>" + _table(rows, cls="issues"))


def _plot(what: str, fn: Callable, *args, **kwargs):
    return _attempt(what, fn, *args, **kwargs)


ISSUES_MARK = ("<!--issues-link-->", "<!--/issues-link-->", "<!--issues-->", "<!--/issues-->")


def _section(anchor: str, title: str, build: Callable[[], str]) -> tuple[str, str]:
    """(nav link, section); a section whose content raises says so instead of losing the page."""
    content = _attempt(f"section {title!r}", build)
    if content is None:
        content = '<p class="note">This section could not be drawn; the log says why.</p>'
    return (f'<a href="#{anchor}">{_e(title.split(":")[0])}</a>',
            f'<section id="{anchor}"><h2>{_e(title)}</h2>{content}</section>')


def _issues_parts(issues: pd.DataFrame | None) -> tuple[str, str]:
    return ("", "") if issues is None else _section("issues", "Likely wrong labels", lambda: _issues(issues))


def refresh_issues(run_dir: Path) -> bool:
    """Fill the run folder's ``report.html`` with the rows of ``label_issues.csv`` written after the report.

    Returns:
        True when the report was rewritten; False when either file is missing or the report has no place for them.
    """
    from labelloop.flows.io import write_text

    path = Path(run_dir) / "report.html"
    if not path.is_file() or not (Path(run_dir) / ISSUES_FILE).is_file():
        return False
    page = path.read_text(encoding="utf-8")
    if ISSUES_MARK[2] not in page:
        return False
    link, section = _issues_parts(read_issues(run_dir))
    for start, end, content in ((ISSUES_MARK[0], ISSUES_MARK[1], link), (ISSUES_MARK[2], ISSUES_MARK[3], section)):
        page = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _, s=start, c=content, e=end: s + c + e, page,
                      count=1, flags=re.S)
    write_text(path, page)
    return True


CSS = """
:root{--fg:#1f2328;--muted:#59636e;--line:#d1d9e0;--soft:#f6f8fa}
*{box-sizing:border-box}
body{margin:0;font:14px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;color:var(--fg);
 background:#fff}
header{background:#24292f;color:#fff;padding:22px 0 14px}
header .in,main{max-width:1120px;margin:0 auto;padding:0 32px}
header h1{margin:0 0 4px;font-size:24px;font-weight:600}
header p{margin:0 0 10px;color:#c9d1d9}
nav a{color:#9ecbff;margin-right:16px;text-decoration:none;font-size:13px;white-space:nowrap}
main{padding-bottom:48px}
section{margin-top:30px}
h2{font-size:19px;font-weight:600;border-bottom:1px solid var(--line);padding-bottom:6px;margin:0 0 10px}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:12px;margin:14px 0}
.card{border:1px solid var(--line);border-radius:8px;padding:10px 14px;background:var(--soft)}
.card .k{color:var(--muted);font-size:12px;text-transform:uppercase;letter-spacing:.04em}
.card .v{font-size:22px;font-weight:600;overflow-wrap:anywhere}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:2px 18px;margin:8px 0}
dl.facts dt{color:var(--muted)}
dl.facts dd{margin:0}
.wrap{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;font-size:13px;margin:12px 0}
th,td{border-bottom:1px solid var(--line);padding:4px 10px;text-align:left;vertical-align:top}
thead th{background:var(--soft);font-weight:600}
td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tbody tr:hover td{background:#f0f6ff}
table.issues td{max-width:460px}
table.cm td{text-align:center;min-width:42px;font-variant-numeric:tabular-nums;border:1px solid #fff}
table.cm th.vert{vertical-align:bottom;padding:6px 4px}
table.cm th.vert span{writing-mode:vertical-rl;transform:rotate(180deg);white-space:nowrap}
table.cm th.corner{vertical-align:bottom;color:var(--muted);font-weight:400}
.note{color:var(--muted);font-size:13px;max-width:900px}
code{font-size:12px;background:var(--soft);padding:1px 4px;border-radius:4px}
svg{display:block;max-width:100%;height:auto;margin:8px 0}
svg text{font-size:12px;fill:var(--fg)}
svg text.tick{font-size:11px;fill:var(--muted)}
.row{display:flex;gap:32px;flex-wrap:wrap;align-items:flex-start}
.row svg{flex:none}
footer{color:var(--muted);font-size:12px;margin-top:40px}
"""


def render_html_report(name: str, metrics: dict, summary: pd.DataFrame, inputs: ReportInputs | None = None, *,
                       issues: pd.DataFrame | None = None, gold_issues: pd.DataFrame | None = None,
                       run_name: str | None = None) -> str:
    """The report as one self-contained HTML page (inline CSS and SVG, no scripts, no external resources).

    Args:
        name: the project's name. metrics: the run's ``metrics.json``. summary: the labeler summary (indexed by labeler).
        inputs: what the plots need beyond those (``report_inputs``); without it only the tables and labeler plots.
        issues: rows of ``label_issues.csv`` to show, when the run folder has one.
        gold_issues: the rows of ``gold_issues.csv`` (all of them: the flagged ones are picked here), when the run
            folder has one; the section is left out when neither it nor ``metrics["gold_quality"]`` is there.
        run_name: the run folder's name.
    """
    labels = list(inputs.labels if inputs is not None else metrics.get("labels") or [])
    has_gold = inputs is not None and inputs.student_proba is not None and inputs.gold is not None
    sections: list[tuple[str, str, Callable[[], str]]] = [
        ("run", "Run", lambda: _facts(metrics, run_name)),
        ("scores", "Scores on gold records", lambda: _table(_score_rows(metrics))),
        ("labelers", "Labelers: coverage, overlaps, conflicts", lambda: _labelers(summary, labels)),
        ("accuracy", "Labeler accuracy", lambda: _accuracy(summary, inputs, metrics)),
    ]
    if inputs is not None and not inputs.multilabel:
        sections.append(("balance", "Class balance", lambda: _balance(inputs)))
    if has_gold and inputs.multilabel:
        sections.append(("per-label", f"Per-label F1 on gold {inputs.gold_split}", lambda: _per_label(inputs)))
    elif has_gold:
        sections.append(("confusion", f"Student confusion matrix on gold {inputs.gold_split}",
                         lambda: f'<p class="note">{len(inputs.gold):,} gold {_e(inputs.gold_split)} records; rows: gold '
                                 "label, columns: the student's label (abstains counted as their label).</p>"
                                 + confusion_table(inputs.gold, np.asarray(inputs.student_proba).argmax(axis=1), labels)))
    if has_gold:
        sections.append(("calibration", "Calibration of the student", lambda: _calibration(inputs, metrics)))
    if gold_issues is not None or metrics.get("gold_quality"):
        sections.append(("gold-issues", "Likely errors in your gold labels",
                         lambda: _gold_issues(gold_issues, metrics.get("gold_quality") or {})))
    body, nav = [], []
    for anchor, title, build in sections:
        link, section = _section(anchor, title, build)
        nav.append(link)
        body.append(section)
    # the likely-wrong-labels section sits between markers, so refresh_issues can fill it in later
    link, section = _issues_parts(issues)
    nav.append(f"{ISSUES_MARK[0]}{link}{ISSUES_MARK[1]}")
    body.append(f"{ISSUES_MARK[2]}{section}{ISSUES_MARK[3]}")
    subtitle = " · ".join(_e(x) for x in (run_name, metrics.get("task"), f"{len(labels)} labels") if x)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>labelloop run: {_e(name)}</title><style>{CSS}</style></head><body>"
        f'<header><div class="in"><h1>labelloop run: {_e(name)}</h1><p>{subtitle}</p><nav>{"".join(nav)}</nav></div></header>'
        f'<main>{"".join(body)}<footer>Written by labelloop beside report.md and metrics.json; the numbers here are '
        "the same.</footer></main></body></html>\n"
    )


def write_html_report(run_dir: Path, name: str, metrics: dict, summary: pd.DataFrame,
                      inputs: ReportInputs | None = None) -> Path | None:
    """Render and write ``report.html`` into the run folder atomically; on any failure log a warning and return None."""
    from labelloop.flows.io import write_text

    try:
        issues = _attempt(f"the rows of {ISSUES_FILE}", read_issues, run_dir)
        # run_project writes gold_issues.csv before report.html; all rows: the flagged ones are picked when drawn
        gold_issues = _attempt(f"the rows of {GOLD_ISSUES_FILE}", read_issues, run_dir, limit=None,
                               file=GOLD_ISSUES_FILE)
        text = render_html_report(name, metrics, summary, inputs, issues=issues, gold_issues=gold_issues,
                                  run_name=Path(run_dir).name)
        return write_text(Path(run_dir) / "report.html", text)
    except Exception as exc:  # noqa: BLE001 - the run folder is complete without it
        logger.warning("report.html not written: %s: %s", type(exc).__name__, exc)
        return None


# ---------------------------------------------------------------------------------------------- Prefect artifacts


def _artifact_key(name: str) -> str:
    """A Prefect artifact key (lowercase letters, digits, dashes) from a project's name.

    >>> _artifact_key("Support_Intents v2")
    'support-intents-v2'
    """
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "labelloop"


def _plain(value):
    """A JSON-safe number (None for NaN), or the value."""
    if isinstance(value, (np.integer, int)) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return None if math.isnan(value) else round(float(value), 4)
    return value


def artifact_tables(run_dir: Path) -> dict[str, list[dict]]:
    """The scores and the labeler summary of a run folder as rows of names and numbers only (no record text)."""
    run_dir = Path(run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    scores = [{k: v if k in ("split", "method") else _plain(v) for k, v in row.items() if k in ("split", "method") or
               _numeric(v)} for row in _score_rows(metrics)]
    summary = pd.read_csv(run_dir / "lf_summary.csv")
    numeric = [c for c in summary.columns if c != "labeler" and pd.api.types.is_numeric_dtype(summary[c])]
    labelers = [{"labeler": str(row["labeler"]), **{c: _plain(row[c]) for c in numeric}} for _, row in summary.iterrows()]
    return {"scores": scores, "labelers": labelers}


def publish_artifacts(run_dir: Path) -> list[str]:
    """Inside a Prefect flow run: the run's scores and labeler summary as table artifacts, and a markdown artifact
    with the report's path and the run's counts. Names, counts, scores and paths only, no record text.

    Outside a flow run it publishes nothing. A failure is logged, never raised: the run folder is complete.

    Returns:
        The keys of the artifacts created.
    """
    from prefect.context import FlowRunContext

    if FlowRunContext.get() is None:
        return []
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    run_dir = Path(run_dir).resolve()
    try:
        metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
        key, tables = _artifact_key(str(metrics.get("name", run_dir.name))), artifact_tables(run_dir)
        create_table_artifact(tables["scores"], key=f"{key}-scores", description=f"Scores on gold records, {run_dir.name}")
        create_table_artifact(tables["labelers"], key=f"{key}-labelers",
                              description=f"Labelers: coverage, overlaps, conflicts, accuracy on gold dev, {run_dir.name}")
        report = run_dir / "report.html"
        lines = [f"# labelloop run `{run_dir.name}`", "",
                 f"- report: [{report.name}]({report.as_uri()}) (`{report}`)" if report.is_file() else
                 f"- report: `{run_dir / 'report.md'}`",
                 f"- run folder: `{run_dir}`",
                 f"- records labeled: {metrics.get('n_train')}, covered by a labeler: {metrics.get('coverage', 0):.1%}",
                 f"- LLM calls: {metrics.get('llm_calls')}, label model: {metrics.get('label_model')}",
                 f"- wall time: {metrics.get('wall_s', 0):.1f} s"]
        create_markdown_artifact("\n".join(lines) + "\n", key=f"{key}-report", description=f"Run report, {run_dir.name}")
        return [f"{key}-scores", f"{key}-labelers", f"{key}-report"]
    except Exception as exc:  # noqa: BLE001 - artifacts are a view of the run folder, not part of it
        logger.warning("Prefect artifacts not published: %s: %s", type(exc).__name__, exc)
        return []
