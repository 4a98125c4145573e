"""The task a project labels for, as one object: multi-class (one label per record) or multi-label.

A task supplies everything that differs between the two: how labeler answers become the label
matrix, which label model denoises it, which student learns from it, how it is scored and
summarised, and the frame of probabilistic labels. ``labelloop.flows.run_project`` has one path
and asks the task.

Votes on one split are, for multi-class, an (n, m) int array of label ids or ABSTAIN; for
multi-label, a list of m sparse (n, k) int8 matrices, +1 / -1 / 0 (see ``labelers.multilabel``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from labelloop.labelers import budget
from labelloop.labelers import calibration as cal
from labelloop.labelers.analysis import lf_summary, scores
from labelloop.labelers.base import single_label_votes
from labelloop.labelers.label_model import estimate_class_balance, make_label_model
from labelloop.labelers.labels import ABSTAIN, Taxonomy
from labelloop.labelers.multilabel import (
    MultiLabelModel,
    gold_matrix,
    label_prevalence,
    multilabel_scores,
    multilabel_summary,
    rankings,
)
from labelloop.labelers.student import fit_multilabel_student, fit_student, make_student, predict_proba_full
from labelloop.programs.errors import NotEnoughVotes


def _require_covered(covered: np.ndarray) -> None:
    if covered.sum() < 2:
        raise NotEnoughVotes(f"only {int(covered.sum())} record(s) got any vote; add labelers or data before training")


def self_trained(fit, texts: list[str], P: np.ndarray, covered: np.ndarray, spec, predict):
    """``fit(rows, labels)``: a student trained on the ``rows`` of ``texts`` with those ``labels``. With ``spec.self_train``
    and records no labeler voted on, one more round: those records get the first student's probabilities as
    their labels, and a second student learns from every record (one round of self-training).

    Where the labelers cover a part of the records (keyword rules, an ``llm_budget``), the student still
    reads the rest: on the 1,386 held-out YouTube records it lifted the student of LLM-written rules
    (41% coverage) from 0.796 to 0.833 and budgeted runs at 30% of the answers by 0.3-0.6 points. A run
    whose labelers cover every record trains exactly one student.
    """
    student = fit(covered, P)
    if not spec.self_train or covered.all():
        return student
    labels, uncovered = np.array(P, dtype=float), ~covered
    labels[uncovered] = predict(student, [t for t, u in zip(texts, uncovered) if u])
    return fit(np.ones(len(labels), dtype=bool), labels)


class MultiClass:
    """One label per record: Snorkel's LabelModel (or majority vote) over L, a logistic regression student."""

    name = "multiclass"
    score_columns = ("accuracy", "macro_f1", "coverage", "n")

    def gold(self, labels, taxonomy: Taxonomy) -> list[int]:
        return [taxonomy.id(x) for x in labels]

    def class_balance(self, gold: list | None, k: int):
        """Class balance of gold dev labels (add-one smoothed), or None without them."""
        return estimate_class_balance(gold, k) if gold else None

    def votes(self, llm_votes: list, heuristic: np.ndarray, taxonomy: Taxonomy, n: int) -> np.ndarray:
        """The label matrix: the LLM labelers' columns, then the heuristic LFs'."""
        llm = np.stack(llm_votes, axis=1) if llm_votes else np.empty((n, 0), dtype=int)
        return np.concatenate([llm, heuristic], axis=1).astype(int)

    def llm_votes(self, labeler, answers, taxonomy: Taxonomy):
        return labeler.votes(answers, taxonomy)

    def covered(self, V) -> np.ndarray:
        return (np.asarray(V) != ABSTAIN).any(axis=1)

    def budget_scores(self, P: np.ndarray, V, k: int) -> np.ndarray:
        """How much LLM answers could change each record (``llm_budget``): posterior entropy plus vote disagreement."""
        return budget.entropy(P) + budget.disagreement(V, k)

    def fit_label_model(self, kind: str, V, k: int, gold_dev=None, seed: int = 0):
        """The configured label model and majority vote, fitted on the train votes.

        Returns:
            (label model, majority vote, the kind actually used: Snorkel needs three labelers).
        """
        balance = estimate_class_balance(gold_dev, k) if gold_dev is not None and len(gold_dev) else None
        if kind == "snorkel" and V.shape[1] < 3:
            kind = "majority"  # Snorkel refuses fewer than three labelers
        model = make_label_model(kind, k, seed).fit(V, class_balance=balance)
        majority = make_label_model("majority", k, seed).fit(V, class_balance=balance)
        return model, majority, kind

    def train_student(self, texts: list[str], P: np.ndarray, covered: np.ndarray, spec, seed: int):
        """The student, trained on the records at least one labeler voted on (and, with ``spec.self_train``, on
        the others with its own probabilities: ``self_trained``)."""
        _require_covered(covered)

        def fit(rows, labels):
            student = make_student(spec.features, max_features=spec.max_features, C=spec.C, seed=seed)
            try:
                return fit_student([t for t, c in zip(texts, rows) if c], labels[rows],
                                   min_confidence=spec.min_confidence, student=student, seed=seed)
            except ValueError as exc:
                raise NotEnoughVotes(str(exc)) from None

        return self_trained(fit, texts, P, covered, spec,
                            lambda student, x: predict_proba_full(student, x, P.shape[1]))

    def evaluate(self, gold: list, V, texts: list[str], model, majority, student, direct: dict, names) -> dict:
        """Scores per method on one gold split; ``direct``: labeler name -> what asking the LLM directly gives."""
        y, k = np.array(gold), len(names)
        rows = {"majority_vote": scores(y, majority.predict(V), k), "label_model": scores(y, model.predict(V), k)}
        if student is not None:
            rows["student"] = scores(y, predict_proba_full(student, texts, k).argmax(axis=1), k)
        for name, P in direct.items():
            rows[f"{name}_llm"] = scores(y, np.where(P.sum(axis=1) > 0, P.argmax(axis=1), ABSTAIN), k)
        return rows

    def summary(self, V, names: list[str], V_dev=None, gold_dev=None, invalid=None, k: int = 0) -> pd.DataFrame:
        return lf_summary(V, names, L_dev=V_dev, y_dev=gold_dev, invalid=invalid)

    def probabilities(self, ids, texts, P: np.ndarray, covered: np.ndarray, names) -> pd.DataFrame:
        """One row per train record: p_<label> columns, the label and its confidence (empty where nobody voted)."""
        frame = pd.DataFrame(P, columns=[f"p_{n}" for n in names])
        frame.insert(0, "id", ids)
        frame.insert(1, "text", texts)
        frame["label"] = np.where(covered, np.array(names, dtype=object)[P.argmax(axis=1)], "")
        frame["confidence"] = np.where(covered, P.max(axis=1), 0.0)
        return frame

    def label_counts(self, frame: pd.DataFrame) -> dict:
        return frame.loc[frame["label"] != "", "label"].value_counts().to_dict()

    def matrix_frame(self, names: list[str], ids, texts, V, label_names) -> pd.DataFrame:
        """The label matrix as a readable frame: one column per labeler, label names or empty for abstain."""
        frame = pd.DataFrame({"id": ids, "text": texts})
        lookup = np.array(list(label_names) + [""], dtype=object)
        for j, name in enumerate(names):
            frame[name] = lookup[np.where(V[:, j] == ABSTAIN, -1, V[:, j])]
        return frame

    def model_info(self, model) -> dict:
        return {}

    def calibrate(self, student, names, spec, dev: tuple | None, test: tuple | None) -> dict:
        """The student's temperature and abstain threshold, fitted on gold dev ``(texts, gold)``, scored on dev and test.

        Returns:
            ``temperature`` (1.0: none), ``threshold`` (the confidence a prediction needs; 0.0:
            always answer), and per gold split the calibration error before (``ece_raw``) and after
            (``ece``) the temperature, with the share answered and their accuracy at the threshold.
        """
        k, out = len(names), {"temperature": 1.0, "threshold": 0.0, "target": None}
        if dev is None or not len(dev[1]):
            return out
        P, y = predict_proba_full(student, dev[0], k), np.asarray(dev[1], dtype=int)
        if spec.calibrate:
            out["temperature"] = round(cal.fit_temperature(P, y), 4)
        if spec.abstain is not None:
            Pc = predict_proba_full(student, dev[0], k, out["temperature"])
            out["target"] = spec.abstain.model_dump(exclude_none=True)
            out["threshold"] = round(cal.abstain_threshold(Pc.max(axis=1), Pc.argmax(axis=1) == y,
                                                           **out["target"]), 4)
        for split, gold in (("dev", dev), ("test", test)):
            if gold is None or not len(gold[1]):
                continue
            raw, y = predict_proba_full(student, gold[0], k), np.asarray(gold[1], dtype=int)
            P = raw if out["temperature"] == 1.0 else predict_proba_full(student, gold[0], k, out["temperature"])
            out[split] = {"ece_raw": round(cal.ece(raw, y), 4), "ece": round(cal.ece(P, y), 4),
                          **cal.abstain_scores(P, y, out["threshold"])}
        return out

    def predictions(self, P: np.ndarray, names, threshold) -> dict:
        """Columns of a prediction frame from (n, k) probabilities: the label, its probability, and
        ``abstain`` (True: the probability is under ``threshold``; the label is still given)."""
        confidence = P.max(axis=1)
        return {"label": [names[i] for i in P.argmax(axis=1)], "confidence": confidence,
                "abstain": confidence < (threshold or 0.0)}


class MultiLabel:
    """Label sets: one binary label model per label, a one-vs-rest student, micro/macro F1 and RP@k."""

    name = "multilabel"
    score_columns = ("micro_f1", "macro_f1", "rp5", "rp10", "n")

    def gold(self, labels, taxonomy: Taxonomy) -> list[list[int]]:
        return [[taxonomy.id(x) for x in v] for v in labels]

    def class_balance(self, gold: list | None, k: int):
        """Each label's share of all gold dev labels, or None without them."""
        flat = [j for ids in gold or [] for j in ids]
        return estimate_class_balance(flat, k) if flat else None

    def votes(self, llm_votes: list, heuristic: np.ndarray, taxonomy: Taxonomy, n: int) -> list:
        k = len(taxonomy)
        return list(llm_votes) + [single_label_votes(heuristic[:, j], k) for j in range(heuristic.shape[1])]

    def llm_votes(self, labeler, answers, taxonomy: Taxonomy):
        return labeler.vote_sets(answers, taxonomy)

    def covered(self, V) -> np.ndarray:
        if not V:
            return np.zeros(0, bool)
        return np.asarray(sum(abs(v) for v in V).sum(axis=1)).ravel() > 0

    def budget_scores(self, P: np.ndarray, V, k: int) -> np.ndarray:
        """How much LLM answers could change each record: mean per-label entropy plus mean per-label disagreement."""
        return budget.binary_entropy(P) + budget.multilabel_disagreement(V)

    def fit_label_model(self, kind: str, V, k: int, gold_dev=None, seed: int = 0):
        """One binary label model per label, and majority vote; label prevalence comes from gold dev labels."""
        prevalence = label_prevalence(gold_matrix(gold_dev, k)) if gold_dev else None
        return MultiLabelModel(kind, seed).fit(V, prevalence), MultiLabelModel("majority", seed), kind

    def train_student(self, texts: list[str], P: np.ndarray, covered: np.ndarray, spec, seed: int):
        _require_covered(covered)

        def fit(rows, labels):
            student = make_student(spec.features, max_features=spec.max_features, C=spec.C, seed=seed, multilabel=True)
            try:
                return fit_multilabel_student([t for t, c in zip(texts, rows) if c], labels[rows], seed=seed,
                                              student=student)
            except ValueError as exc:
                raise NotEnoughVotes(str(exc)) from None

        return self_trained(fit, texts, P, covered, spec, lambda student, x: student.predict_proba(x))

    def evaluate(self, gold: list, V, texts: list[str], model, majority, student, direct: dict, names) -> dict:
        names = list(names)
        Y = gold_matrix(gold, len(names))
        rows = {"majority_vote": multilabel_scores(Y, majority.predict_proba(V), names),
                "label_model": multilabel_scores(Y, model.predict_proba(V), names)}
        if student is not None:
            rows["student"] = multilabel_scores(Y, student.predict_proba(texts), names)
        for name, P in direct.items():
            rows[f"{name}_llm"] = multilabel_scores(Y, P, names)
        return rows

    def summary(self, V, names: list[str], V_dev=None, gold_dev=None, invalid=None, k: int = 0) -> pd.DataFrame:
        return multilabel_summary(V, names, votes_dev=V_dev, Y_dev=None if gold_dev is None else gold_matrix(gold_dev, k),
                                  invalid=invalid)

    def probabilities(self, ids, texts, P: np.ndarray, covered: np.ndarray, names) -> pd.DataFrame:
        """One row per train record: the labels with probability >= 0.5, and the top ten with their probabilities."""
        names = list(names)
        top = rankings(P, names, 10)
        frame = pd.DataFrame({"id": ids, "text": texts})
        frame["labels"] = [[names[j] for j in np.flatnonzero(row >= 0.5)] if c else [] for row, c in zip(P, covered)]
        frame["top_labels"] = top
        frame["top_probs"] = [[float(round(P[i, names.index(x)], 4)) for x in row] for i, row in enumerate(top)]
        return frame

    def label_counts(self, frame: pd.DataFrame) -> dict:
        return pd.Series([x for row in frame["labels"] for x in row]).value_counts().head(30).to_dict()

    def matrix_frame(self, names: list[str], ids, texts, V, label_names) -> pd.DataFrame:
        """One column per labeler: the list of labels it voted for."""
        frame = pd.DataFrame({"id": ids, "text": texts})
        for name, v in zip(names, V):
            frame[name] = [[label_names[j] for j in row.indices[row.data > 0]] for row in v]
        return frame

    def model_info(self, model) -> dict:
        return {"labels_with_snorkel": model.labels_with_snorkel}

    def calibrate(self, student, names, spec, dev: tuple | None, test: tuple | None) -> dict:
        """One threshold per label, the one with the best F1 on gold dev ``(texts, gold)``; scored on dev and test.

        Returns:
            ``thresholds`` (per label, in the taxonomy's order; 0.5 without gold dev records) and per
            gold split the micro F1 at 0.5 and at the thresholds, the calibration error of the
            (record, label) probabilities, and the share of records given at least one label.
        """
        k = len(names)
        out = {"thresholds": [0.5] * k, "target": "best F1 per label on dev"}
        if dev is None or not len(dev[1]):
            return out
        if spec.abstain is not None or spec.calibrate:
            out["thresholds"] = [round(float(t), 4) for t in
                                 cal.label_thresholds(student.predict_proba(dev[0]), gold_matrix(dev[1], k))]
        for split, gold in (("dev", dev), ("test", test)):
            if gold is None or not len(gold[1]):
                continue
            P, Y = student.predict_proba(gold[0]), gold_matrix(gold[1], k)
            flat = np.stack([1 - P.ravel(), P.ravel()], axis=1)
            out[split] = {"micro_f1_at_0.5": multilabel_scores(Y, P, names)["micro_f1"],
                          "micro_f1": multilabel_scores(Y, P, names, np.array(out["thresholds"]))["micro_f1"],
                          "ece": round(cal.ece(flat, Y.ravel().astype(int)), 4),
                          "coverage": float((P >= np.array(out["thresholds"])).any(axis=1).mean())}
        return out

    def predictions(self, P: np.ndarray, names, thresholds) -> dict:
        """The labels at or above their thresholds for each text, the most probable one, its probability, and
        ``abstain`` (True: no label reaches its threshold)."""
        chosen = P >= np.asarray(0.5 if thresholds is None else thresholds)
        return {"labels": [[names[j] for j in np.flatnonzero(row)] for row in chosen],
                "top_label": [names[j] for j in P.argmax(axis=1)], "confidence": P.max(axis=1),
                "abstain": ~chosen.any(axis=1)}


TASKS = {task.name: task for task in (MultiClass(), MultiLabel())}

AUTO_RULE = ("auto: Snorkel's label model, unless majority vote scores higher on the gold dev records (accuracy; "
             "multi-label: micro F1); Snorkel without gold dev records")


def fit_label_model(task, kind: str, V, names: list[str], gold_dev=None, V_dev=None, seed: int = 0, fit_on=None):
    """The project's label model (``label_model: snorkel | majority | auto``) and majority vote, fitted on ``V``.

    ``auto`` fits Snorkel's and keeps majority vote instead when majority vote scores higher on the gold
    dev records (``V_dev``). Snorkel's estimates need the labelers to overlap on many records: under an
    ``llm_budget`` the LLM labelers answer a few records each, and there its posteriors can fall far
    below majority vote's (on YouTube at 30% of the answers, 0.46 against 0.78 dev accuracy).

    ``fit_on``: the votes the label model learns from, when not ``V`` (under an ``llm_budget``: the records
    asked at random and the gold dev records', an unbiased sample; see ``budget_fit_votes``).

    Returns:
        (label model, majority vote, the kind used, ``{"snorkel": dev score, "majority": dev score}`` when
        ``auto`` compared them on dev, else None).
    """
    fit = V if fit_on is None else fit_on
    if kind != "auto":
        return (*task.fit_label_model(kind, fit, len(names), gold_dev, seed), None)
    model, majority, used = task.fit_label_model("snorkel", fit, len(names), gold_dev, seed)
    if used != "snorkel" or not gold_dev or V_dev is None:
        return model, majority, used, None
    column = task.score_columns[0]
    rows = task.evaluate(gold_dev, V_dev, [], model, majority, None, {}, names)
    dev = {"snorkel": float(rows["label_model"][column]), "majority": float(rows["majority_vote"][column])}
    if dev["majority"] > dev["snorkel"]:
        return (*task.fit_label_model("majority", fit, len(names), gold_dev, seed)[:2], "majority", dev)
    return model, majority, "snorkel", dev


def budget_fit_votes(task, V, ids: list[str], drawn_at_random: list[str], V_gold: list):
    """What the label model learns from under an ``llm_budget`` (multi-class): the train records drawn at random
    (every LLM labeler answered them) stacked with ``V_gold``, the gold dev votes (answered in full; their labels
    are not used), or None when no record was drawn at random (then it learns from all of ``V``).

    The records picked by score are where the cheap labelers disagree, and the LLM labelers are wrong more
    often there: a label model fitted on them, or on every record with the LLM columns missing elsewhere,
    learns biased accuracies. The random draw is a plain sample of the pool, and the posteriors of the
    model fitted on it apply to every record.
    """
    if task.name != "multiclass" or not drawn_at_random:
        return None
    drawn = set(drawn_at_random)
    rows = np.array([i in drawn for i in ids], dtype=bool)
    return np.vstack([np.asarray(V)[rows], *[np.asarray(g) for g in V_gold if g is not None and len(g)]])