"""Likely-wrong labels in a run, and the review loop: the records most worth a person's time go out as a CSV,
a Label Studio import and an Argilla import; the person's answers come back as gold.

- ``label_issues``: a run's ranking of its train records, most likely wrong first (``label_issues.csv``).
- ``export_review``: picks a budget of records from a run folder by a rule, spread over suggested labels.
- ``import_review``: reads the answers (the CSV filled in, a Label Studio export, an Argilla export), checks
  every one of them, and only then merges them into the config's reviewed-gold file (``review.gold``,
  default ``reviewed.jsonl`` beside the config) in one atomic write.
- The next run reads that file (``load_reviewed``): the reviewed records join the gold dev records (scores,
  class balance, calibration), a labeler named ``reviewed`` votes on exactly those train records, and the
  label model's probabilities on them are replaced by the reviewed label.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from labelloop.flows.config import ConfigError, DataSpec
from labelloop.flows.io import atomic_path, check_labels, id_text, read_records, write_frame, write_json, write_text
from labelloop.labelers.labels import ABSTAIN
from labelloop.programs.errors import DataError, StateError

logger = logging.getLogger("labelloop")

REVIEWER = "reviewed"  # the labeler that votes the reviewed labels
MAX_RANKED = 200_000  # above this many covered train records a run skips the out-of-fold ranking
FOLDS = 5
RULES = ("likely-wrong", "disagreement", "margin")
QUESTION = "label"  # the Label Studio control and the Argilla question that hold the person's answer
FILES = {"csv": "review.csv", "label_studio": "label_studio.json", "label_studio_config": "label_studio_config.xml",
         "argilla": "argilla.json"}


# -- the run's ranking: label_issues.csv ---------------------------------------------------------------------


def _join(labels, sep: str) -> str:
    return sep.join(labels)


def label_issues(project, ids: list[str], texts: list[str], P: np.ndarray,
                 covered: np.ndarray) -> tuple[pd.DataFrame | None, dict]:
    """The covered train records ranked by how likely their label is wrong, and what to report about it.

    Out-of-fold TF-IDF students (``FOLDS`` folds, whatever ``student.features`` is: it costs that many
    student fits) give a second opinion on every record; ``labelloop.labelers.quality.rank_label_issues``
    combines it with the label model's. Records no labeler covered, and reviewed records, are left out.

    Returns:
        (the frame, ranked, or None when skipped; ``metrics["label_quality"]``: ``n_ranked``, ``flagged``
        (cleanlab's ``find_label_issues`` count), the settings, or ``skipped`` with the reason).
    """
    from labelloop.labelers.quality import METHOD, WEIGHT, find_issues, label_sets, out_of_fold_proba, rank_label_issues
    from labelloop.labelers.student import make_student

    cfg, names = project.config, list(project.taxonomy.names)
    multilabel = project.task.name == "multilabel"
    spec = cfg.student
    reviewed = set() if project.reviewed is None else set(project.reviewed["id"])
    keep = np.asarray(covered, dtype=bool) & ~np.isin(np.asarray(ids, dtype=object), list(reviewed))
    n = int(keep.sum())
    info = {"n_ranked": 0, "flagged": 0}
    if not spec.rank_label_issues:
        return None, {**info, "skipped": "student.rank_label_issues is false"}
    if n > MAX_RANKED:
        return None, {**info, "skipped": f"{n} covered train records is more than {MAX_RANKED:,}; the out-of-fold "
                                         f"ranking ({FOLDS} student fits) is skipped above that"}
    if n < 2 * FOLDS:
        return None, {**info, "skipped": f"only {n} covered train records; the ranking needs at least {2 * FOLDS}"}
    started = time.time()
    idx = np.flatnonzero(keep)
    Pk, kept_texts = np.asarray(P, dtype=float)[idx], [texts[i] for i in idx]

    def make():
        return make_student("tfidf", max_features=spec.max_features, C=spec.C, seed=cfg.seed, multilabel=multilabel)

    try:
        S = out_of_fold_proba(kept_texts, Pk, make, folds=FOLDS, seed=cfg.seed, multilabel=multilabel)
    except ValueError as exc:
        return None, {**info, "skipped": f"the out-of-fold students could not be trained: {exc}"}
    score = rank_label_issues(Pk, S, multilabel=multilabel)
    flagged = find_issues(Pk, S, multilabel=multilabel)
    label_names = np.array(names, dtype=object)
    if multilabel:
        from labelloop.labelers.quality import _quality

        sep = cfg.data.label_sep
        given, suggested = label_sets(Pk), label_sets(S)
        frame = pd.DataFrame({"id": [ids[i] for i in idx], "text": kept_texts,
                              "given_labels": [_join(label_names[g], sep) for g in given],
                              "suggested_labels": [_join(label_names[s], sep) for s in suggested],
                              "label_model_confidence": _quality(given, Pk, METHOD, True)})
    else:
        frame = pd.DataFrame({"id": [ids[i] for i in idx], "text": kept_texts, "given_label": label_names[Pk.argmax(axis=1)],
                              "suggested_label": label_names[S.argmax(axis=1)], "label_model_confidence": Pk.max(axis=1)})
    frame["label_model_confidence"] = frame["label_model_confidence"].round(4)
    frame["score"] = np.round(score, 4)
    frame["flagged"] = flagged
    order = np.argsort(-score, kind="stable")
    frame = frame.iloc[order].reset_index(drop=True)
    return frame, {"n_ranked": n, "flagged": int(flagged.sum()),
                   "flagged_by": "cleanlab find_label_issues under the out-of-fold student's probabilities",
                   "score": "1 - (weight * cleanlab quality under the out-of-fold student + (1 - weight) * under the "
                            "label model)", "weight": WEIGHT, "method": METHOD, "folds": FOLDS,
                   "oof_student": "tfidf", "seconds": round(time.time() - started, 2)}


# -- reviewed gold, read by the next run ---------------------------------------------------------------------


def load_reviewed(cfg, splits: dict[str, pd.DataFrame], taxonomy, labeler_names: list[str]) -> pd.DataFrame | None:
    """The reviewed records (``review.gold``) that still match a train record, or None without any.

    A reviewed row whose id left the train split, or whose text changed since, is ignored with a warning.
    """
    path = cfg.review.gold
    if not Path(path).is_file():
        return None
    if REVIEWER in labeler_names:
        raise ConfigError(f"a labeler is named {REVIEWER!r}, the name of the labeler that votes the reviewed labels "
                          f"in {path}; rename it")
    df = read_records(DataSpec(path=path), require_label=True, multilabel=cfg.task == "multilabel")
    check_labels(df, taxonomy, path)
    train = splits["train"]
    text_by_id = dict(zip(train["id"], train["text"]))
    ok = np.array([text_by_id.get(rid) == text for rid, text in zip(df["id"], df["text"])], dtype=bool)
    if (~ok).any():
        logger.warning("%s: %d reviewed record(s) are ignored: their id is no longer in the train split or their text "
                       "changed since the review, e.g. %r", path, int((~ok).sum()), df["id"][~ok].iloc[0])
    df = df[ok].reset_index(drop=True)
    return df if len(df) else None


def merge_into_dev(dev: pd.DataFrame | None, reviewed: pd.DataFrame) -> pd.DataFrame:
    """The gold dev records with the reviewed records added (a reviewed record replaces a dev record of its id)."""
    rows = reviewed[["id", "text", "label"]]
    if dev is None:
        return rows.reset_index(drop=True)
    return pd.concat([dev[~dev["id"].isin(set(rows["id"]))][["id", "text", "label"]], rows], ignore_index=True)


def with_reviewed_votes(project, split: str, ids: list[str], V):
    """The label matrix with the ``reviewed`` labeler's column last: the reviewed label on reviewed train records,
    abstain everywhere else (so the gold dev scores do not read the answers back). Multi-label: +1 on the
    reviewed labels and -1 on every other label of a reviewed record."""
    if getattr(project, "reviewed", None) is None:
        return V
    from scipy import sparse

    taxonomy, n, k = project.taxonomy, len(ids), len(project.taxonomy)
    lookup = dict(zip(project.reviewed["id"], project.reviewed["label"])) if split == "train" else {}
    rows = [(i, lookup[rid]) for i, rid in enumerate(ids) if rid in lookup]
    if project.task.name == "multilabel":
        M = np.zeros((len(rows), k), dtype=np.int8)
        for r, (_, labels) in enumerate(rows):
            M[r] = -1
            M[r, [taxonomy.id(x) for x in labels]] = 1
        at = [i for i, _ in rows]
        column = sparse.csr_matrix((n, k), dtype=np.int8)
        if rows:
            column = sparse.csr_matrix(sparse.coo_matrix(
                (M.ravel(), (np.repeat(at, k), np.tile(np.arange(k), len(at)))), shape=(n, k), dtype=np.int8))
        return list(V) + [column]
    column = np.full(n, ABSTAIN, dtype=int)
    for i, label in rows:
        column[i] = taxonomy.id(label)
    return np.concatenate([np.asarray(V, dtype=int).reshape(n, -1), column[:, None]], axis=1)


def reviewed_probabilities(project, ids: list[str], P: np.ndarray) -> np.ndarray:
    """The label model's train probabilities with each reviewed record's row set to its reviewed label."""
    if getattr(project, "reviewed", None) is None:
        return P
    lookup = dict(zip(project.reviewed["id"], project.reviewed["label"]))
    P = np.array(P, dtype=float, copy=True)
    for i, rid in enumerate(ids):
        if rid in lookup:
            labels = lookup[rid] if isinstance(lookup[rid], list) else [lookup[rid]]
            P[i] = 0.0
            P[i, [project.taxonomy.id(x) for x in labels]] = 1.0
    return P


def review_metrics(project, ids: list[str]) -> dict | None:
    """``metrics["review"]``: how many reviewed records the run used, and where."""
    if getattr(project, "reviewed", None) is None:
        return None
    train = set(ids)
    return {"file": str(project.config.review.gold), "records": len(project.reviewed),
            "train_records_voted": int(sum(rid in train for rid in project.reviewed["id"])),
            "in_dev": int(project.reviewed["id"].isin(set(project.splits["dev"]["id"])).sum())}


# -- export ----------------------------------------------------------------------------------------------------


def newest_run(cfg) -> Path:
    """The newest run folder of the project that holds probabilistic labels."""
    runs = sorted(p for p in cfg.runs_dir.glob(f"{cfg.name}-*") if (p / "probabilistic_labels.parquet").is_file()) \
        if cfg.runs_dir.is_dir() else []
    if not runs:
        raise StateError(f"no run folder of {cfg.name!r} in {cfg.runs_dir}; run `labelloop run CONFIG` first")
    return runs[-1]


def _rule(rule: str) -> str:
    rule = rule.replace("_", "-").lower()
    if rule not in RULES:
        raise ConfigError(f"--rule must be one of {', '.join(RULES)}, got {rule!r}")
    return rule


def _split_labels(value, sep: str) -> list[str]:
    if isinstance(value, str):
        return [x.strip() for x in value.split(sep) if x.strip()]
    if hasattr(value, "tolist"):
        value = value.tolist()
    return [str(x) for x in (value or [])]


def candidates(project, run_dir: Path, rule: str) -> pd.DataFrame:
    """The run's train records that a rule can pick, best first: id, text, given, suggested, score, confidence.

    ``given`` and ``suggested`` are label names (multi-label: lists of them). Rules:

    - ``likely-wrong``: the run's ``label_issues.csv`` order; suggested: the out-of-fold student's label.
    - ``disagreement``: records where the run's student and the label model give different labels,
      strongest disagreement first (total variation distance; multi-label: the largest per-label gap);
      suggested: the student's label.
    - ``margin``: the label model's smallest top-two margin first; suggested: its runner-up label
      (multi-label: the labels with the label decision closest to a coin flip toggled).
    """
    from labelloop.labelers.quality import disagreement, margins

    names, multilabel, sep = list(project.taxonomy.names), project.task.name == "multilabel", project.config.data.label_sep
    if rule == "likely-wrong":
        path = run_dir / "label_issues.csv"
        if not path.is_file():
            raise StateError(f"{run_dir} has no label_issues.csv (the run did not train, student.rank_label_issues is "
                             "false, or the ranking was skipped: see metrics.json label_quality); use --rule margin or "
                             "--rule disagreement")
        df = pd.read_csv(path, dtype={"id": str}, keep_default_na=False)
        g, s = ("given_labels", "suggested_labels") if multilabel else ("given_label", "suggested_label")
        out = pd.DataFrame({"id": df["id"], "text": df["text"], "score": df["score"].astype(float),
                            "confidence": df["label_model_confidence"].astype(float)})
        out["given"] = [_split_labels(v, sep) for v in df[g]] if multilabel else df[g].astype(str)
        out["suggested"] = [_split_labels(v, sep) for v in df[s]] if multilabel else df[s].astype(str)
        return out
    probs = pd.read_parquet(run_dir / "probabilistic_labels.parquet")
    probs["id"] = probs["id"].astype(str)
    if multilabel:
        probs = probs[[len(t) > 0 for t in probs["top_labels"]]].reset_index(drop=True)
        P = np.zeros((len(probs), len(names)))
        for i, (labels, ps) in enumerate(zip(probs["top_labels"], probs["top_probs"])):
            P[i, [names.index(x) for x in labels]] = list(ps)
        given = [list(v) for v in probs["labels"]]
    else:
        probs = probs[probs["label"] != ""].reset_index(drop=True)
        P = probs[[f"p_{x}" for x in names]].to_numpy(dtype=float)
        given = probs["label"].astype(str).tolist()
    out = pd.DataFrame({"id": probs["id"], "text": probs["text"]})
    out["given"] = given
    if rule == "margin":
        m = margins(P, multilabel)
        out["score"] = 1.0 - m
        if multilabel:
            closest = np.abs(2 * P - 1).argmin(axis=1)
            out["suggested"] = [sorted(set(g) ^ {names[j]}, key=names.index) for g, j in zip(given, closest)]
            out["confidence"] = m
        else:
            out["suggested"] = [names[j] for j in np.argsort(-P, axis=1, kind="stable")[:, 1]]
            out["confidence"] = P.max(axis=1)
        return out.iloc[np.argsort(-out["score"].to_numpy(), kind="stable")].reset_index(drop=True)
    from labelloop.flows.predict import load_model

    if not (run_dir / "model.skops").is_file():
        raise StateError(f"{run_dir} has no student (model.skops): --rule disagreement needs a run that trained one")
    S = load_model(run_dir).predict_proba(out["text"].tolist())
    if multilabel:
        G = np.zeros_like(P)
        for i, labels in enumerate(given):
            G[i, [names.index(x) for x in labels]] = 1.0
        mask, strength = disagreement(G, S, multilabel=True)
        out["suggested"] = [[names[j] for j in np.flatnonzero(row >= 0.5)] for row in S]
        out["confidence"] = margins(P, True)
    else:
        mask, strength = disagreement(P, S)
        out["suggested"] = [names[j] for j in S.argmax(axis=1)]
        out["confidence"] = P.max(axis=1)
    out["score"] = strength
    out = out[mask]
    return out.iloc[np.argsort(-out["score"].to_numpy(), kind="stable")].reset_index(drop=True)


def _label_studio_config(names: list[str], multilabel: bool) -> str:
    from xml.sax.saxutils import quoteattr

    choices = "\n".join(f"    <Choice value={quoteattr(x)}/>" for x in names)
    return (f'<View>\n  <Text name="text" value="$text"/>\n  <Choices name="{QUESTION}" toName="text" '
            f'choice="{"multiple" if multilabel else "single"}" showInline="true">\n{choices}\n  </Choices>\n</View>\n')


def export_review(project, *, run_dir: Path | None = None, budget: int = 50, rule: str = "likely-wrong",
                  out_dir: Path | None = None, force: bool = False) -> dict:
    """Write the records a rule picks from a run for a person to review: a CSV, a Label Studio import (and its
    labeling config) and an Argilla import.

    Records already reviewed, and records of the gold dev or test files, are never picked. Diversity:
    each suggested label (multi-label: each suggested label set) takes at most ``ceil(budget / number of
    suggested labels among the candidates)`` of the picks in rank order; slots left over go to the next
    best records whatever their label; a text is picked once (case and spacing aside).

    Args:
        project: the loaded project.
        run_dir: the run folder (default: the project's newest).
        budget: records to pick.
        rule: ``likely-wrong``, ``disagreement`` or ``margin`` (see ``candidates``).
        out_dir: where to write (default: ``review/<run folder name>-<rule>`` beside the config).
        force: overwrite files an earlier export left there.

    Returns:
        ``run``, ``rule``, ``candidates``, ``picked``, ``by_suggested_label`` and the written ``files``.
    """
    from labelloop.labelers.quality import select_diverse

    if budget < 1:
        raise ConfigError(f"--budget must be at least 1, got {budget}")
    rule = _rule(rule)
    cfg, names = project.config, list(project.taxonomy.names)
    multilabel = project.task.name == "multilabel"
    run_dir = Path(run_dir) if run_dir is not None else newest_run(cfg)
    if not (run_dir / "probabilistic_labels.parquet").is_file():
        raise StateError(f"{run_dir} is not a run folder (no probabilistic_labels.parquet)")
    pool = candidates(project, run_dir, rule)
    known = {rid for split in ("dev", "test") if split in project.splits for rid in project.splits[split]["id"]}
    if project.reviewed is not None:
        known |= set(project.reviewed["id"])
    pool = pool[~pool["id"].isin(known) & pool["id"].isin(set(project.splits["train"]["id"]))].reset_index(drop=True)
    groups = [tuple(s) if multilabel else s for s in pool["suggested"]]
    picked = pool.iloc[select_diverse(np.arange(len(pool)), groups, budget, pool["text"].tolist())].reset_index(drop=True)
    base = project.config_path.parent if project.config_path is not None else cfg.runs_dir.parent
    out_dir = Path(out_dir) if out_dir is not None else base / "review" / f"{run_dir.name}-{rule}"
    paths = {key: out_dir / name for key, name in FILES.items()}
    existing = [str(p) for p in paths.values() if p.exists()]
    if existing and not force:
        raise StateError(f"{existing[0]} already exists; pass --force to overwrite it, or -o for another folder")
    sep = cfg.data.label_sep
    shown = (lambda v: _join(v, sep)) if multilabel else str
    g_col, s_col = ("given_labels", "suggested_labels") if multilabel else ("given_label", "suggested_label")
    csv = pd.DataFrame({"id": picked["id"], "text": picked["text"], g_col: [shown(v) for v in picked["given"]],
                        s_col: [shown(v) for v in picked["suggested"]], "score": picked["score"].round(4), "label": ""})
    write_frame(paths["csv"], csv)
    value = (lambda v: list(v)) if multilabel else str
    tasks, records = [], []
    for row in picked.itertuples(index=False):
        meta = {g_col: value(row.given), s_col: value(row.suggested), "score": round(float(row.score), 4), "rule": rule}
        choices = list(row.given) if multilabel else [row.given]
        tasks.append({"data": {"id": row.id, "text": row.text, **meta},
                      "predictions": [{"model_version": f"labelloop {cfg.label_model} label model",
                                       "score": round(float(row.confidence), 4),
                                       "result": [{"from_name": QUESTION, "to_name": "text", "type": "choices",
                                                   "value": {"choices": choices}}]}]})
        records.append({"id": row.id, "fields": {"text": row.text}, "metadata": meta,
                        "suggestions": {QUESTION: {"value": value(row.given), "score": round(float(row.confidence), 4),
                                                   "agent": f"labelloop {cfg.label_model} label model"}},
                        "responses": {}, "vectors": {}, "_server_id": None})
    write_json(paths["label_studio"], tasks)
    write_text(paths["label_studio_config"], _label_studio_config(names, multilabel))
    write_json(paths["argilla"], records)
    counts = Counter(shown(v) for v in picked["suggested"])
    return {"run": str(run_dir), "rule": rule, "candidates": len(pool), "picked": len(picked),
            "by_suggested_label": dict(counts.most_common()), "quota": math.ceil(budget / max(len(set(groups)), 1)),
            "files": {k: str(p) for k, p in paths.items()}}


# -- import ----------------------------------------------------------------------------------------------------


class _Answer:
    """One answer read from a file: where it is, the record id, the text if the file has it, the label(s)."""

    __slots__ = ("where", "field", "id", "text", "label", "given")

    def __init__(self, where: str, field: str, rid, text, label, given=None):
        self.where, self.field, self.id, self.text, self.label, self.given = where, field, rid, text, label, given


def _load_json(path: Path):
    """A JSON document, or (a .jsonl file, or a file of one object per line) a list of them."""
    try:
        raw = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 text: {exc}") from None
    if path.suffix.lower() != ".jsonl":
        try:
            return json.loads(raw)
        except json.JSONDecodeError as exc:
            if not raw.lstrip().startswith("{"):
                raise DataError(f"{path}: not valid JSON, line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    rows = []
    for n, line in enumerate(raw.splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}, line {n}: not valid JSON (column {exc.colno}: {exc.msg})") from None
    return rows


def _majority(answers: list, where: str, field: str, path: Path, rid):
    """The answer most reviewers gave; a tie between different answers is refused."""
    if not answers:
        return None
    counts = Counter(tuple(a) if isinstance(a, list) else a for a in answers).most_common()
    if len(counts) > 1 and counts[0][1] == counts[1][1]:
        raise DataError(f"{path}, {where} (id {rid!r}): field {field!r}: reviewers disagree ({[c[0] for c in counts]}) "
                        "with no majority; settle it in the tool and export again")
    best = counts[0][0]
    return list(best) if isinstance(best, tuple) else best


def _csv_answers(path: Path, multilabel: bool, sep: str) -> list[_Answer]:
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 text: {exc}") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"{path}: not a readable CSV file: {exc}") from None
    missing = [c for c in ("id", QUESTION) if c not in df.columns]
    if missing:
        raise DataError(f"{path}, header: column(s) {missing} missing; found {list(df.columns)} (fill the "
                        f"{QUESTION!r} column of the exported CSV)")
    given_col = next((c for c in ("given_label", "given_labels") if c in df.columns), None)
    out = []
    for n, row in enumerate(df.to_dict("records"), 1):
        value = row[QUESTION].strip()
        if not value:
            continue  # not reviewed
        label = _split_labels(value, sep) if multilabel else value
        out.append(_Answer(f"row {n} (line {n + 1})", QUESTION, row["id"].strip(), row.get("text"), label,
                           row.get(given_col) if given_col else None))
    return out


def _label_studio_answers(path: Path, tasks: list, multilabel: bool) -> list[_Answer]:
    out = []
    for n, task in enumerate(tasks, 1):
        where = f"task {n}"
        if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
            raise DataError(f"{path}, {where}: field 'data': expected an object with the record's id and text")
        data = task["data"]
        annotations = task.get("annotations") or []
        if not isinstance(annotations, list):
            raise DataError(f"{path}, {where}: field 'annotations': expected a list, got {type(annotations).__name__}")
        answers, field = [], "annotations[].result[].value.choices"
        for a, annotation in enumerate(annotations):
            if not isinstance(annotation, dict) or annotation.get("was_cancelled"):
                continue
            results = annotation.get("result") or []
            if not isinstance(results, list):
                raise DataError(f"{path}, {where}: field 'annotations[{a}].result': expected a list")
            chosen = [r for r in results if isinstance(r, dict) and r.get("type") == "choices"]
            chosen = [r for r in chosen if r.get("from_name") == QUESTION] or chosen
            for result in chosen[:1]:
                field = f"annotations[{a}].result[{results.index(result)}].value.choices"
                choices = (result.get("value") or {}).get("choices")
                if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
                    raise DataError(f"{path}, {where}: field {field!r}: expected a list of label names, got {choices!r:.80}")
                if not choices:
                    continue
                if not multilabel and len(choices) != 1:
                    raise DataError(f"{path}, {where}: field {field!r}: expected one label, got {choices}")
                answers.append(sorted(choices) if multilabel else choices[0])
        rid = data.get("id")
        label = _majority(answers, where, field, path, rid)
        if label is not None:
            given = data.get("given_labels") if multilabel else data.get("given_label")
            out.append(_Answer(where, field, rid, data.get("text"), label, given))
    return out


def _argilla_answers(path: Path, records: list, multilabel: bool, numbered: str) -> list[_Answer]:
    out = []
    for n, record in enumerate(records, 1):
        where = f"{numbered} {n}"
        if not isinstance(record, dict):
            raise DataError(f"{path}, {where}: expected an object (an Argilla record), got {type(record).__name__}")
        field = f"responses.{QUESTION}[].value"
        if "responses" in record or "fields" in record:  # nested: rg.Record.to_dict()
            responses = record.get("responses") or {}
            if not isinstance(responses, dict):
                raise DataError(f"{path}, {where}: field 'responses': expected an object of question -> responses")
            given_answers = responses.get(QUESTION, [])
            if not isinstance(given_answers, list):
                raise DataError(f"{path}, {where}: field 'responses.{QUESTION}': expected a list of responses")
            values = []
            for r, response in enumerate(given_answers):
                if not isinstance(response, dict) or "value" not in response:
                    raise DataError(f"{path}, {where}: field 'responses.{QUESTION}[{r}].value' is missing")
                if response.get("status", "submitted") in ("submitted", None):
                    values.append(response["value"])
            text = (record.get("fields") or {}).get("text")
            given = (record.get("metadata") or {}).get("given_labels" if multilabel else "given_label")
        else:  # flattened: "label.responses", "label.responses.status"
            field = f"{QUESTION}.responses"
            values = record.get(field) or []
            statuses = record.get(f"{field}.status") or [None] * len(values)
            if not isinstance(values, list):
                raise DataError(f"{path}, {where}: field {field!r}: expected a list of responses")
            values = [v for v, s in zip(values, statuses) if s in ("submitted", None)]
            text = record.get("text")
            given = record.get("given_labels" if multilabel else "given_label")
        answers = []
        for value in values:
            if multilabel:
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    raise DataError(f"{path}, {where}: field {field!r}: expected a list of label names, got {value!r:.80}")
                if value:
                    answers.append(sorted(value))
            else:
                if isinstance(value, list) and len(value) == 1:
                    value = value[0]
                if not isinstance(value, str):
                    raise DataError(f"{path}, {where}: field {field!r}: expected one label name, got {value!r:.80}")
                answers.append(value)
        label = _majority(answers, where, field, path, record.get("id"))
        if label is not None:
            out.append(_Answer(where, field, record.get("id"), text, label, given))
    return out


def read_answers(path: Path, multilabel: bool = False, sep: str = "|") -> tuple[str, list[_Answer]]:
    """The answers in a review file, by its format: (format name, answers). Unanswered records are left out."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"review file {path} does not exist")
    if path.suffix.lower() == ".csv":
        return "csv", _csv_answers(path, multilabel, sep)
    if path.suffix.lower() not in (".json", ".jsonl"):
        raise DataError(f"{path}: expected a .csv (the exported CSV, filled in), or a .json / .jsonl export of Label "
                        "Studio or Argilla")
    doc = _load_json(path)
    numbered = "line" if path.suffix.lower() == ".jsonl" or isinstance(doc, dict) else "record"
    rows = doc if isinstance(doc, list) else [doc]
    if not rows:
        return "empty", []
    if not all(isinstance(r, dict) for r in rows):
        bad = next(n for n, r in enumerate(rows, 1) if not isinstance(r, dict))
        raise DataError(f"{path}, {numbered} {bad}: expected an object, got {type(rows[bad - 1]).__name__}")
    first = rows[0]
    if "data" in first and ("annotations" in first or "predictions" in first or "id" in first):
        return "label_studio", _label_studio_answers(path, rows, multilabel)
    if "fields" in first or "responses" in first or any(str(key).startswith(f"{QUESTION}.") for key in first):
        return "argilla", _argilla_answers(path, rows, multilabel, numbered)
    raise DataError(f"{path}, {numbered} 1: not a Label Studio task (no 'data') nor an Argilla record (no 'fields' / "
                    f"'responses'); keys: {sorted(first)[:8]}")


def _match_label(value: str, names: list[str]) -> str | None:
    value = value.strip()
    if value in names:
        return value
    folded = [x for x in names if x.lower() == value.lower()]
    return folded[0] if len(folded) == 1 else None


def check_answers(path: Path, answers: list[_Answer], project) -> pd.DataFrame:
    """Every answer checked against the project: (id, text, label, given_label) rows, or a DataError naming
    the row and field of each problem (the first five)."""
    names, multilabel = list(project.taxonomy.names), project.task.name == "multilabel"
    train = project.splits["train"]
    text_by_id = dict(zip(train["id"], train["text"]))
    problems, seen, rows = [], {}, []
    for a in answers:
        rid = "" if a.id is None else id_text(a.id).strip()
        where = f"{a.where} (id {rid!r})" if rid else a.where
        if not rid:
            problems.append(f"{a.where}: field 'id' is missing or empty")
            continue
        if rid in seen:
            problems.append(f"{where}: field 'id' repeats {seen[rid]}")
            continue
        seen[rid] = a.where
        if rid not in text_by_id:
            problems.append(f"{where}: field 'id' is not a train record of the project ({project.config.data.path})")
            continue
        if isinstance(a.text, str) and a.text.strip() and a.text.strip() != text_by_id[rid].strip():
            problems.append(f"{where}: field 'text' differs from the project's text of that record (the data changed "
                            "since the export?)")
            continue
        labels = a.label if isinstance(a.label, list) else [a.label]
        matched = [_match_label(str(x), names) for x in labels]
        unknown = [x for x, m in zip(labels, matched) if m is None]
        if unknown:
            problems.append(f"{where}: field {a.field!r}: {unknown[0]!r} is not a label of the taxonomy; expected one "
                            f"of {names}")
            continue
        label = sorted(set(matched), key=names.index) if multilabel else matched[0]
        rows.append({"id": rid, "text": text_by_id[rid], "label": label, "given_label": a.given})
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise DataError(f"{path}: {len(problems)} problem(s), nothing imported{more}:\n" + "\n".join(problems[:5]))
    return pd.DataFrame(rows, columns=["id", "text", "label", "given_label"])


def import_review(path: Path, project) -> dict:
    """Read a person's answers and merge them into the reviewed-gold file, all or nothing.

    Every answer is checked first (known ids of the train split, unchanged texts, labels of the
    taxonomy, no id twice); then the file is rewritten in one atomic step. An answer for a record
    reviewed before replaces the earlier one. Records left unanswered are skipped.

    Returns:
        ``format``, ``imported``, ``new``, ``replaced``, ``corrected`` (answers that differ from the
        label the export showed, where the file says it), ``total`` reviewed records, and the ``path``.
    """
    cfg = project.config
    multilabel = cfg.task == "multilabel"
    fmt, answers = read_answers(path, multilabel, cfg.data.label_sep)
    new = check_answers(Path(path), answers, project)
    target = Path(cfg.review.gold)
    old = _load_json(target) if target.is_file() else []  # review.gold is JSONL: one object per line
    ids = set(new["id"])
    kept = [row for row in old if str(row.get("id")) not in ids]
    now = datetime.now(UTC).isoformat(timespec="seconds")
    rows = [{**row, "given_label": _plain(row["given_label"]), "source": f"{fmt}: {Path(path).name}", "reviewed_at": now}
            for row in new.to_dict("records")]

    def norm(v):
        return sorted(_split_labels(v, cfg.data.label_sep)) if multilabel else str(v).strip()

    corrected = sum(row["given_label"] is not None and norm(row["given_label"]) != norm(row["label"]) for row in rows)
    with atomic_path(target) as tmp:
        tmp.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in kept + rows), encoding="utf-8")
    return {"format": fmt, "imported": len(rows), "new": len(rows) - (len(old) - len(kept)),
            "replaced": len(old) - len(kept), "corrected": int(corrected), "total": len(kept) + len(rows),
            "path": str(target)}


def _plain(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "tolist"):
        return value.tolist()
    return value
