"""Labelling: run every labeler over every split and build the label matrices.

LLM answers come from the vote store when present; only missing ones are asked, each committed as
it arrives (see ``labelloop.flows.store``). With an ``llm_budget`` the train split's answers are
asked in rounds, only on the records where they could change the label (``labelloop.flows.budget``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from types import SimpleNamespace
from typing import TYPE_CHECKING

import dspy
import numpy as np
from snorkel.labeling import LFApplier

from labelloop.flows.project import Project
from labelloop.flows.store import Asked, VoteStore, stored_or_asked
from labelloop.labelers.base import LLMLabeler
from labelloop.labelers.labels import ABSTAIN
from labelloop.programs.calls import call_with_retries, is_context_overflow, is_fatal

if TYPE_CHECKING:
    from labelloop.flows.budget import BudgetUse

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
    failed: dict[str, int]  # LLM labeler -> records left without an answer (their asks failed; they abstain)
    truncated: dict[str, int] = field(default_factory=dict)  # LLM labeler -> answers given on a shortened text
    asked: dict[str, int] = field(default_factory=dict)  # LLM labeler -> answers new to the store this run
    reused: dict[str, int] = field(default_factory=dict)  # LLM labeler -> answers found in the store
    new_records: set[str] = field(default_factory=set)  # records some LLM labeler asked about this run
    failed_records: set[str] = field(default_factory=set)  # records some LLM labeler has no answer for
    budget: BudgetUse | None = None  # with an llm_budget: what it bought on the train split; else None


TRUNCATIONS = 6  # halvings of a text too long for the model's context before the record counts as failed


def asker(program, get_lm: Callable[[], dspy.LM], *, attempts: int = 1):
    """``text -> (answer dict, LLM calls)`` for a labeler's program (an IRR answer reports its own count).

    ``get_lm`` is called on the first ask, so an LM is only built when an answer is missing. Transient
    errors are retried (``attempts`` tries in all); a text too long for the context is halved until it
    fits, and the answer then says how many characters it saw (``truncated_to``).
    """

    def once(text: str) -> dict:
        with dspy.context(lm=get_lm()):
            return dict(program(text=text).items())

    def ask(text: str) -> tuple[dict, int]:
        seen = text
        for halvings in range(TRUNCATIONS + 1):
            try:
                answer = call_with_retries(partial(once, seen), attempts=attempts)
                break
            except Exception as exc:
                if halvings == TRUNCATIONS or not is_context_overflow(exc) or len(seen) < 2:
                    raise
                seen = seen[: len(seen) // 2]
        if seen is not text:
            answer["truncated_to"] = len(seen)
        return answer, answer.get("calls", 1)

    return ask


def labeler_items(project: Project, labeler: LLMLabeler) -> list[tuple[str, str]]:
    """Every (id, text) a labeler answers: its own extra items, then all records of every split."""
    return labeler.extra_items() + [it for df in project.splits.values() for it in zip(df["id"], df["text"])]


def unbudgeted_items(project: Project, labeler: LLMLabeler) -> list[tuple[str, str]]:
    """What a labeler answers in full whatever the budget: all its items without an ``llm_budget``; with
    one, its extra items and the gold splits' records (the train split is asked as the budget allows)."""
    if project.config.llm_budget is None:
        return labeler_items(project, labeler)
    return labeler.extra_items() + [it for split, df in project.splits.items() if split != "train"
                                    for it in zip(df["id"], df["text"])]


def answer_labeler(project: Project, labeler: LLMLabeler, store: VoteStore, get_lm: Callable[[], dspy.LM], *,
                   items: list[tuple[str, str]] | None = None, show_progress: bool = True) -> Asked:
    """A labeler's answers on ``items`` (default: all of them): stored, else claimed, asked and committed one by one."""
    cfg, ctx = project.config, project.context()
    return stored_or_asked(store, labeler.version(ctx), labeler_items(project, labeler) if items is None else items,
                           asker(labeler.program(ctx), get_lm, attempts=1 + cfg.lm.retries), name=labeler.name,
                           show_progress=show_progress, max_concurrency=cfg.lm.max_concurrency,
                           max_attempts=cfg.max_attempts, fatal=is_fatal)


def _built_once(make: Callable[[], dspy.LM]) -> Callable[[], dspy.LM]:
    """``make()`` on the first call, the same LM afterwards (thread-safe: asks may run concurrently)."""
    lock, made = threading.Lock(), []

    def get() -> dspy.LM:
        with lock:
            if not made:
                made.append(make())
        return made[0]

    return get


def lm_getter(project: Project, lm=None) -> Callable[[], dspy.LM]:
    """The LM to answer with: ``lm``, else built from the config on the first missing answer."""
    return _built_once(project.config.lm.make) if lm is None else (lambda: lm)


def apply_heuristics(lfs: list, texts: list[str]) -> np.ndarray:
    """(n, m) votes of the heuristic labelers ``lfs`` on ``texts``, one column per labeler in the order of ``lfs``.

    Labelers with a ``vote_embedded`` method (``similar``) vote on the texts' sentence embeddings, made
    once for all of them; the others (Snorkel LFs) go through Snorkel's ``LFApplier``.
    """
    out = np.full((len(texts), len(lfs)), ABSTAIN, dtype=int)
    if not lfs or len(texts) == 0:
        return out
    embedded_at = [j for j, lf in enumerate(lfs) if hasattr(lf, "vote_embedded")]
    applied_at = [j for j, lf in enumerate(lfs) if not hasattr(lf, "vote_embedded")]
    if embedded_at:
        from labelloop.programs.embeddings import embed

        embedded = embed(list(texts))
        for j in embedded_at:
            out[:, j] = lfs[j].vote_embedded(embedded)
    if applied_at:
        out[:, applied_at] = LFApplier([lfs[j] for j in applied_at]).apply([SimpleNamespace(text=t) for t in texts],
                                                                            progress_bar=False)
    return out


def llm_votes(project: Project, labeler: LLMLabeler, answers: dict[str, dict], splits: dict[str, SplitVotes],
              balance) -> dict[str, tuple[list, object]]:
    """Fit (calibrate) a labeler on the train answers it has, then its answers and votes on each split.

    ``answers``: by record id; records without one (not stored, failed, or left unasked by a budget) abstain.
    """
    train = splits["train"]
    labeler.fit([answers.get(rid) for rid in train.ids], [answers.get(rid) for rid, _ in labeler.extra_items()],
                class_balance=balance)
    out = {}
    for split, s in splits.items():
        given = [answers.get(rid) for rid in s.ids]
        out[split] = (given, project.task.llm_votes(labeler, given, project.taxonomy))
    return out


def split_votes(project: Project, splits: dict[str, SplitVotes], heuristic: dict[str, np.ndarray],
                answers: dict[str, dict[str, dict]], balance) -> dict[str, object]:
    """The label matrix of each split from the LLM labelers' answers (by labeler name) and the heuristic votes."""
    columns = {name: [] for name in splits}
    for labeler in project.llm_labelers:
        for split, (_, column) in llm_votes(project, labeler, answers[labeler.name], splits, balance).items():
            columns[split].append(column)
    from labelloop.flows.review import with_reviewed_votes

    return {name: with_reviewed_votes(project, name, s.ids, project.task.votes(columns[name], heuristic[name],
                                                                               project.taxonomy, len(s.ids)))
            for name, s in splits.items()}


def label_dataset(project: Project, *, lm=None, show_progress: bool = True, count_stored: bool = False,
                  stored_only: bool = False) -> LabelingResult:
    """Run every labeler on every split; LLM labelers fit (calibrate) on the pool before their answers become votes.

    Args:
        project: the loaded project.
        lm: the DSPy LM that answers; built from the config's ``lm:`` when None (and only if an
            answer is missing).
        show_progress: rich progress bars for LLM work.
        count_stored: with an ``llm_budget``, charge answers already in the vote store against it
            too (they still cost no call): for experiments that compare budgets on a filled store.
        stored_only: with an ``llm_budget``, ask nothing on the train split, use the answers stored
            (``labelloop train``); without one, every answer is stored already (``require_stored``).
    """
    from labelloop.flows.review import with_reviewed_votes

    task, taxonomy = project.task, project.taxonomy
    splits = {name: SplitVotes(df["id"].tolist(), df["text"].tolist()) for name, df in project.splits.items()}
    result = LabelingResult(project.labeler_names, splits, 0, {}, {})
    balance = task.class_balance(project.gold("dev"), len(taxonomy))
    heuristic = {name: apply_heuristics(project.heuristic_lfs, s.texts) for name, s in splits.items()}
    get_lm = lm_getter(project, lm)
    record_ids = {rid for s in splits.values() for rid in s.ids}
    with VoteStore(project.config.store) as store:
        if project.config.llm_budget is None:
            got = {}
            for labeler in project.llm_labelers:
                # all records of one labeler in a row, so llama.cpp reuses the shared prompt prefix
                got[labeler.name] = g = answer_labeler(project, labeler, store, get_lm, show_progress=show_progress)
                logger.info("%s: %d LLM calls, %d answers reused, %d records failed", labeler.name, g.calls,
                            len(g.answers) - len(g.new), len(g.failed))
        else:
            from labelloop.flows.budget import budgeted_answers

            got, result.budget = budgeted_answers(project, store, get_lm, splits, heuristic, balance,
                                                  count_stored=count_stored, stored_only=stored_only,
                                                  show_progress=show_progress)
    columns = {name: [] for name in splits}
    for labeler in project.llm_labelers:
        name, answers = labeler.name, got[labeler.name].answers
        result.llm_calls += got[name].calls
        result.asked[name], result.reused[name] = len(got[name].new), len(answers) - len(got[name].new)
        result.failed[name] = len(got[name].failed)
        result.new_records |= got[name].new & record_ids  # not a labeler's own extra items
        result.failed_records |= set(got[name].failed) & record_ids
        result.truncated[name] = sum(1 for a in answers.values() if "truncated_to" in a)
        result.invalid[name] = 0
        for split, (given, column) in llm_votes(project, labeler, answers, splits, balance).items():
            splits[split].answers[name] = given
            result.invalid[name] += labeler.invalid(given)
            columns[split].append(column)
    for name, s in splits.items():
        s.votes = task.votes(columns[name], heuristic[name], taxonomy, len(s.ids))
        s.votes = with_reviewed_votes(project, name, s.ids, s.votes)  # the `reviewed` labeler's column, last
    return result
