"""Labelling: run every labeler over every split and build the label matrices.

LLM answers come from the vote store when present; only missing ones are computed, committed in
small batches as they arrive. ``label_dataset`` is a plain function; ``label_dataset_flow`` runs it
as a Prefect flow.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace

import dspy
import numpy as np
from prefect import flow
from snorkel.labeling import LFApplier

from labelloop.flows.project import Project
from labelloop.flows.store import VoteStore, stored_or_asked

logger = logging.getLogger("labelloop")


@dataclass
class SplitVotes:
    """Votes of every labeler on one split, in the task's form (see ``labelloop.labelers.tasks``)."""

    ids: list[str]
    texts: list[str]
    votes: object = None  # multi-class: (n, m) label ids or ABSTAIN; multi-label: m sparse (n, k) matrices
    answers: dict[str, list[dict | None]] = field(default_factory=dict)  # LLM labeler -> raw answers


@dataclass
class LabelingResult:
    names: list[str]
    splits: dict[str, SplitVotes]
    llm_calls: int
    invalid: dict[str, int]
    errors: dict[str, int]


def asker(program, get_lm: Callable[[], dspy.LM]):
    """``text -> (answer dict, LLM calls)`` for a labeler's program (an IRR answer reports its own count).

    ``get_lm`` is called on the first ask, so an LM is only built when an answer is missing.
    """

    def ask(text: str) -> tuple[dict, int]:
        with dspy.context(lm=get_lm()):
            answer = dict(program(text=text).items())
        return answer, answer.get("calls", 1)

    return ask


def _built_once(make: Callable[[], dspy.LM]) -> Callable[[], dspy.LM]:
    """``make()`` on the first call, the same LM afterwards (thread-safe: asks may run concurrently)."""
    lock, made = threading.Lock(), []

    def get() -> dspy.LM:
        with lock:
            if not made:
                made.append(make())
        return made[0]

    return get


def apply_heuristics(lfs: list, texts: list[str]) -> np.ndarray:
    if not lfs:
        return np.empty((len(texts), 0), dtype=int)
    return LFApplier(lfs).apply([SimpleNamespace(text=t) for t in texts], progress_bar=False)


def label_dataset(project: Project, *, lm=None, show_progress: bool = True) -> LabelingResult:
    """Run every labeler on every split; LLM labelers fit (calibrate) on the pool before their answers become votes.

    Args:
        project: the loaded project.
        lm: the DSPy LM that answers; built from the config's ``lm:`` when None (and only if an
            answer is missing).
        show_progress: rich progress bars for LLM work.
    """
    cfg, task, taxonomy = project.config, project.task, project.taxonomy
    ctx = project.context()
    splits = {name: SplitVotes(df["id"].tolist(), df["text"].tolist()) for name, df in project.splits.items()}
    calls, invalid, errors = 0, {}, {}
    balance = task.class_balance(project.gold("dev"), len(taxonomy))
    columns = {name: [] for name in splits}
    get_lm = _built_once(cfg.lm.make) if lm is None else (lambda: lm)
    with VoteStore(cfg.store) as store:
        for labeler in project.llm_labelers:
            # all records of one labeler in a row, so llama.cpp reuses the shared prompt prefix
            items = labeler.extra_items() + [it for s in splits.values() for it in zip(s.ids, s.texts)]
            answers, n, failed = stored_or_asked(store, labeler.version(ctx), items, asker(labeler.program(ctx), get_lm),
                                                 name=labeler.name, show_progress=show_progress,
                                                 max_concurrency=cfg.lm.max_concurrency)
            calls, errors[labeler.name] = calls + n, failed
            labeler.fit([answers.get(rid) for rid in splits["train"].ids],
                        [answers.get(rid) for rid, _ in labeler.extra_items()], class_balance=balance)
            invalid[labeler.name] = 0
            for name, s in splits.items():
                got = [answers.get(rid) for rid in s.ids]
                s.answers[labeler.name] = got
                invalid[labeler.name] += labeler.invalid(got)
                columns[name].append(task.llm_votes(labeler, got, taxonomy))
            logger.info("%s: %d LLM calls (%d answers reused)", labeler.name, n, len(items) - n)
    for name, s in splits.items():
        s.votes = task.votes(columns[name], apply_heuristics(project.heuristic_lfs, s.texts), taxonomy, len(s.ids))
    return LabelingResult(project.labeler_names, splits, calls, invalid, errors)


label_dataset_flow = flow(name="label-dataset")(label_dataset)
