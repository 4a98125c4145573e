"""Errors in the user's own gold labels: ranked by the run's models, and audited by the LLM.

After "Are LLMs Better than Reported? Detecting Label Errors and Mitigating Their Effect on Model
Performance": a gold dev or test label can be wrong too, and a wrong one misstates every score.

- ``gold_quality`` (every multi-class run with gold, no LLM): cleanlab's label quality score of each
  gold label under the run's models: the student's calibrated probabilities (it never trained on a
  gold label), averaged with the label model's posterior where the record got a vote. A label is
  flagged by confident learning (``cleanlab.filter.find_label_issues``) over the dev and test records
  together. Written to ``gold_issues.csv`` in the run folder; counts in ``metrics["gold_quality"]``.
- ``audit_gold`` (``labelloop audit-gold``): several fixed phrasings (``labelloop.programs.audit``)
  ask the LLM about each gold label; a label is flagged when the share of phrasings that disagree
  with it, weighted by their probabilities, exceeds a threshold. Every answer goes through the vote
  store under its phrasing's version, so a rerun makes no call.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from labelloop.flows.project import Project
from labelloop.labelers.quality import flag_label_issues
from labelloop.programs.errors import ConfigError

logger = logging.getLogger("labelloop")

GOLD_SPLITS = ("dev", "test")
FLAG_RULE = ("cleanlab.filter.find_label_issues (confident learning, prune_by_noise_rate) over the dev and test records "
             "together, on the student's calibrated probabilities averaged with the label model's posterior where the "
             "record got a vote (the label model alone without a student)")
ISSUE_COLUMNS = ["split", "id", "text", "gold_label", "suggested_label", "score", "ranked", "flagged", "source"]


# -- without an LLM: the run's models ------------------------------------------------------------------------------


def model_probabilities(project: Project, result, model, student, temperature: float = 1.0):
    """Per gold split: (probabilities (n, k), source per record: "student+label_model", "student",
    "label_model" or "" where nothing scores it)."""
    from labelloop.labelers.student import predict_proba_full

    task, k, out = project.task, len(project.taxonomy), {}
    for split in GOLD_SPLITS:
        if not project.gold(split):  # no such split, or an empty file
            continue
        votes = result.splits[split]
        covered = task.covered(votes.votes)
        P_model = np.asarray(model.predict_proba(votes.votes), dtype=float) if covered.any() else np.zeros((len(covered), k))
        if student is not None:
            P = predict_proba_full(student, votes.texts, k, temperature)
            P = np.where(covered[:, None], (P + P_model) / 2, P)
            source = np.where(covered, "student+label_model", "student")
        else:
            P = np.where(covered[:, None], P_model, 0.0)
            source = np.where(covered, "label_model", "")
        total = P.sum(axis=1, keepdims=True)
        out[split] = (np.divide(P, total, out=np.zeros_like(P), where=total > 0), source)
    return out


def gold_quality(project: Project, result, model, student, calibration: dict | None = None) -> tuple[pd.DataFrame | None, dict]:
    """How strongly the run's models disagree with each gold label (dev and test), without an LLM.

    Returns:
        The ``gold_issues.csv`` frame (None when there is nothing to write) and ``metrics["gold_quality"]``:
        ``{split: {n, scored, flagged}, "rule": ...}`` (and ``"flags": "none: why"`` when confident learning
        could not run, e.g. gold of a single class: nothing is flagged then), or ``{"skipped": why}``.
        ``score`` is cleanlab's label quality score (self-confidence: the models' probability of the gold label; low = likely
        wrong), ``ranked`` the record's place in its split by score (1 = the most likely wrong),
        ``suggested_label`` the models' most probable label.
    """
    if project.task.name != "multiclass":
        return None, {"skipped": "multi-label gold is not scored (a label set has no single label quality score); "
                                 "`labelloop audit-gold` is multi-class only too"}
    if not any(project.gold(split) for split in GOLD_SPLITS):
        return None, {"skipped": "no gold dev or test records"}
    try:
        from cleanlab.rank import get_label_quality_scores
    except ImportError:
        return None, {"skipped": "cleanlab is not installed (pip install 'cleanlab>=2.6')"}
    temperature = (calibration or {}).get("temperature", 1.0) if student is not None else 1.0
    names = np.array(project.taxonomy.names, dtype=object)
    frames = []
    for split, (P, source) in model_probabilities(project, result, model, student, temperature).items():
        df = project.splits[split]
        y = np.asarray(project.gold(split), dtype=int)
        scored = source != ""
        score = np.full(len(y), np.nan)
        if scored.any():
            score[scored] = get_label_quality_scores(y[scored], P[scored])
        frames.append(pd.DataFrame({"split": split, "id": df["id"].to_numpy(), "text": df["text"].to_numpy(),
                                    "gold_label": names[y], "suggested_label": np.where(scored, names[P.argmax(axis=1)], ""),
                                    "score": score.round(6), "source": source, "_y": y, "_P": list(P)}))
    frame = pd.concat(frames, ignore_index=True)
    frame["flagged"] = False
    scored = frame["source"] != ""
    why_none = None  # why no label could be flagged, when that is so
    if scored.sum() >= 2:
        frame.loc[scored, "flagged"], why_none = flag_label_issues(frame.loc[scored, "_y"].to_numpy(),
                                                                   np.stack(frame.loc[scored, "_P"].to_list()))
    else:
        why_none = f"only {int(scored.sum())} gold record(s) scored, it needs at least 2"
    frame["ranked"] = frame.groupby("split")["score"].rank(method="first").astype("Int64")
    frame = frame.sort_values(["split", "ranked"], na_position="last", kind="stable")
    metrics = {split: {"n": int((frame["split"] == split).sum()),
                       "scored": int(((frame["split"] == split) & (frame["source"] != "")).sum()),
                       "flagged": int((frame["flagged"] & (frame["split"] == split)).sum())}
               for split in frame["split"].unique()}
    metrics["rule"] = FLAG_RULE
    if why_none is not None:
        metrics["flags"] = f"none: confident learning could not run ({why_none})"
    return frame[ISSUE_COLUMNS].reset_index(drop=True), metrics


# -- with an LLM: several phrasings judge each gold label ----------------------------------------------------------


@dataclass
class GoldAudit:
    """What ``audit_gold`` found and what it cost."""

    frame: pd.DataFrame  # one row per gold record, most disagreed-with first
    path: Path  # where the audit was written
    phrasings: list[str]
    threshold: float
    calls: int = 0  # LLM calls made
    asked: int = 0  # answers new to the vote store
    reused: int = 0  # answers found in the vote store
    failed: int = 0  # (phrasing, record) pairs left without an answer
    per_phrasing: dict[str, dict] = field(default_factory=dict)  # name -> {calls, asked, reused, failed}

    @property
    def flagged(self) -> pd.DataFrame:
        return self.frame[self.frame["flagged"]]


def phrasing_version(phrasing, label: str | None, project: Project) -> str:
    """What decides a phrasing's answers for one gold label: its prompt, the answer format and the model.

    The best-label phrasing is the zero-shot classifier, with the zero-shot labeler's version: the
    answers a ``zero_shot`` labeler already paid for on the gold records are reused.
    """
    from labelloop.labelers.llm import zero_shot_labeler
    from labelloop.programs.audit import AUDIT_FORMAT, YES_NO, JudgeLabel
    from labelloop.programs.choice import PROMPT_FORMAT

    ctx = project.context()
    if not phrasing.per_label:
        return zero_shot_labeler(project.taxonomy).version(ctx)
    taxonomy = project.taxonomy
    question = phrasing.prompt(label, taxonomy.descriptions[taxonomy.id(label)])
    model, params = ctx.lm.key()
    blob = json.dumps([PROMPT_FORMAT, AUDIT_FORMAT, phrasing.name, JudgeLabel.instructions, question, YES_NO, model, params],
                      sort_keys=True)
    return "gold_audit:" + hashlib.sha256(blob.encode()).hexdigest()[:16]


def audit_path(project: Project) -> Path:
    """Where the audit goes by default: ``gold_audit.csv`` beside the config (beside the runs folder for a dict config)."""
    folder = project.config_path.parent if project.config_path is not None else project.config.runs_dir.parent
    return folder / "gold_audit.csv"


def _gold_records(project: Project, split: str) -> list[tuple[str, str, str, str]]:
    """(split, id, text, gold label) of the gold splits asked for; refuses when there are none."""
    if split not in ("dev", "test", "both"):
        raise ConfigError(f"--split must be dev, test or both, got {split!r}")
    if project.task.name != "multiclass":
        raise ConfigError("audit-gold checks multi-class gold labels (one label per record); this project is multilabel")
    wanted = GOLD_SPLITS if split == "both" else (split,)
    present = [s for s in wanted if project.gold(s)]
    if not present:
        where = project.config_path or "the config"
        keys = " or ".join(f"`{'gold' if s == 'dev' else 'test'}:`" for s in wanted)
        raise ConfigError(f"audit-gold needs gold labels, and {where} has no {keys} file; add labelled dev or test "
                          "records (id, text, label) to audit")
    return [(s, rid, text, label) for s in present
            for rid, text, label in zip(project.splits[s]["id"], project.splits[s]["text"], project.splits[s]["label"])]


def audit_gold(project: Project, *, phrasings: int = 3, threshold: float = 0.5, split: str = "both", lm=None,
               output: Path | None = None, show_progress: bool = True) -> GoldAudit:
    """Ask ``phrasings`` fixed phrasings about every gold label; flag the labels they disagree with.

    Args:
        project: the loaded project (multi-class, with gold dev and/or test records).
        phrasings: how many of ``labelloop.programs.audit.PHRASINGS`` to ask, in their order.
        threshold: a label is flagged when the mean disagreement of the phrasings that answered
            (each the probability of its disagreeing answer) is above this.
        split: ``dev``, ``test`` or ``both``.
        lm: the DSPy LM that answers; built from the config's ``lm:`` when None (and only if an answer is missing).
        output: the CSV to write (default ``audit_path(project)``); written atomically.
        show_progress: rich progress bars.

    Returns:
        The audit: one row per gold record with each phrasing's disagreement, their mean, whether it is
        flagged, and the label the best-label phrasing prefers; and the calls made and answers reused.
    """
    from labelloop.flows.io import write_frame
    from labelloop.flows.label_dataset import asker, lm_getter
    from labelloop.flows.store import VoteStore, stored_or_asked
    from labelloop.programs.audit import PHRASINGS
    from labelloop.programs.calls import is_fatal

    if not 1 <= phrasings <= len(PHRASINGS):
        raise ConfigError(f"--phrasings must be between 1 and {len(PHRASINGS)}, got {phrasings}")
    if not 0.0 <= threshold < 1.0:
        raise ConfigError(f"--threshold must be in [0, 1), got {threshold}")
    records = _gold_records(project, split)
    cfg, taxonomy = project.config, project.taxonomy
    names, descriptions = list(taxonomy.names), list(taxonomy.descriptions)
    chosen = PHRASINGS[:phrasings]
    audit = GoldAudit(pd.DataFrame(), Path(output) if output is not None else audit_path(project),
                      [p.name for p in chosen], threshold)
    get_lm = lm_getter(project, lm)
    answers: dict[str, dict[tuple[str, str], dict]] = {}  # phrasing -> (id, gold label) -> answer
    with VoteStore(cfg.store) as store:
        for phrasing in chosen:
            counts = dict.fromkeys(("calls", "asked", "reused", "failed"), 0)
            answers[phrasing.name] = got_here = {}
            groups = sorted({label for *_, label in records}) if phrasing.per_label else [None]
            for label in groups:  # one label's records in a row: they share the prompt prefix
                items = list({rid: (rid, text) for _, rid, text, gold in records if label in (None, gold)}.values())
                got = stored_or_asked(store, phrasing_version(phrasing, label, project), items,
                                      asker(phrasing.program(names, descriptions, label), get_lm,
                                            attempts=1 + cfg.lm.retries),
                                      name=f"audit {phrasing.name}" + (f" ({label})" if label else ""),
                                      show_progress=show_progress, max_concurrency=cfg.lm.max_concurrency,
                                      max_attempts=cfg.max_attempts, fatal=is_fatal)
                counts["calls"] += got.calls
                counts["asked"] += len(got.new)
                counts["reused"] += len(got.answers) - len(got.new)
                counts["failed"] += len(got.failed)
                for _, rid, _, gold in records:
                    if label in (None, gold) and rid in got.answers:
                        got_here[(rid, gold)] = got.answers[rid]
            audit.per_phrasing[phrasing.name] = counts
            for key in ("calls", "asked", "reused", "failed"):
                setattr(audit, key, getattr(audit, key) + counts[key])
            logger.info("audit %s: %d LLM calls, %d answers reused, %d failed", phrasing.name, counts["calls"],
                        counts["reused"], counts["failed"])
    rows = []
    for split_name, rid, text, gold in records:
        row = {"split": split_name, "id": rid, "text": text, "gold_label": gold}
        for phrasing in chosen:
            row[f"disagree_{phrasing.name}"] = phrasing.disagreement(answers[phrasing.name].get((rid, gold)), gold)
        best = answers.get("best_label", {}).get((rid, gold))
        row["suggested_label"] = best["answer"] if best and best.get("answer") not in (None, gold) else ""
        rows.append(row)
    columns = [f"disagree_{p.name}" for p in chosen]
    frame = pd.DataFrame(rows, columns=["split", "id", "text", "gold_label", "suggested_label", *columns])
    given = frame[columns].astype(float)
    frame.insert(5, "disagreement", given.mean(axis=1, skipna=True).round(4))
    frame.insert(6, "answered", given.notna().sum(axis=1).astype(int))
    frame.insert(7, "flagged", frame["disagreement"].gt(threshold).fillna(False).astype(bool))
    frame = frame.sort_values(["disagreement", "split", "id"], ascending=[False, True, True], na_position="last",
                              kind="stable").reset_index(drop=True)
    audit.frame = frame
    write_frame(audit.path, frame)
    return audit
