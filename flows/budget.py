"""An LLM budget (``llm_budget:``): the cheap labelers everywhere, the LLM where its answers could change the label.

1. Every LLM labeler answers its extra items (content-free inputs) and the gold splits (dev, test)
   in full: they are small, and calibration, the dev score and the scores need them.
2. On the train split, answers already in the vote store are used and cost nothing, nor count
   against the budget (``count_stored=True`` charges them, for experiments on a filled store).
3. Rounds: fit the label model on the current votes (a (record, LLM labeler) pair not asked is an
   abstain), score each train record not asked yet by how much LLM answers could change it
   (``task.budget_scores``: posterior entropy plus vote disagreement), pick the round's share of
   the budget (``labelloop.labelers.budget.pick``: most by score, ``random_share`` uniformly at
   random), have every LLM labeler answer those records through ``answer_labeler`` (claims,
   retries, failures and the store work exactly as without a budget), refit, repeat.
4. Stop when the budget is spent, every record has its answers, ``rounds`` are done, or the dev
   score (the label model's accuracy, micro F1 for multi-label, on the gold dev records) gained
   no more than ``DEV_TOLERANCE`` over ``PATIENCE`` rounds.

The budget counts answers, not calls (an Infer-Retrieve-Rank answer takes two or more calls), and
records are asked whole: every LLM labeler on a picked record, so up to one record's answers of
the budget may stay unspent. Each round's share is what is left divided by the rounds left.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from labelloop.flows.project import Project
from labelloop.flows.store import Asked, VoteStore
from labelloop.labelers.budget import pick, plateaued
from labelloop.labelers.tasks import budget_fit_votes, fit_label_model

logger = logging.getLogger("labelloop")

DEV_TOLERANCE = 0.005  # a dev-score gain this small (under one record in 200) is no gain
PATIENCE = 3  # rounds without a gain after which the rest of the budget is not spent (a 50-record dev score is noisy)


@dataclass
class BudgetUse:
    """What an ``llm_budget`` bought on the train split in one labeling."""

    max_answers: int  # the budget, in (record, LLM labeler) answers
    pairs: int  # (train record, LLM labeler) pairs in all
    count_stored: bool = False  # stored answers were charged against the budget
    spent: int = 0  # answers charged against the budget
    llm_calls: int = 0  # LLM calls made on the train split (gold splits are answered outside the budget)
    reused: int = 0  # train answers taken from the vote store without a call
    unasked: int = 0  # (train record, LLM labeler) pairs left without an answer by the budget: they abstain
    stopped: str = ""  # why the rounds ended
    rounds: list[dict] = field(default_factory=list)  # per round: records by score and at random, answers, calls
    dev_scores: list = field(default_factory=list)  # the label model's dev score before each round, and at the end
    drawn_at_random: list[str] = field(default_factory=list)  # train record ids asked because drawn at random

    def fit_sample(self) -> list[str]:
        """The train records the label model learns from (with the gold dev votes): those drawn at random, while
        some (record, LLM labeler) pairs stay unasked; none (learn from every record) once all were asked."""
        return self.drawn_at_random if self.unasked else []

    def to_dict(self) -> dict:
        out = asdict(self)
        out["drawn_at_random"] = len(self.drawn_at_random)  # a count in metrics.json, not the ids
        return out


def label_model_votes(task, result):
    """The votes a labeling's label model learns from: under an ``llm_budget`` the train records drawn at random
    and the gold dev votes (``budget_fit_votes``), else None (all the train votes)."""
    if result.budget is None:
        return None
    train, dev = result.splits["train"], result.splits.get("dev")
    return budget_fit_votes(task, train.votes, train.ids, result.budget.fit_sample(), [] if dev is None else [dev.votes])


def _merge(into: Asked, got: Asked) -> None:
    into.answers.update(got.answers)
    into.calls += got.calls
    into.new |= got.new
    for rid in got.answers:
        into.failed.pop(rid, None)
    into.failed.update(got.failed)
    into.gave_up += got.gave_up


def budgeted_answers(project: Project, store: VoteStore, get_lm: Callable, splits: dict, heuristic: dict, balance, *,
                     count_stored: bool = False, stored_only: bool = False,
                     show_progress: bool = True) -> tuple[dict[str, Asked], BudgetUse]:
    """Every LLM labeler's answers under the project's ``llm_budget``, and what the budget bought.

    Args:
        project: the loaded project (``config.llm_budget`` set).
        store: the open vote store.
        get_lm: the LM to answer with, built on the first missing answer.
        splits: ``SplitVotes`` by split (ids and texts).
        heuristic: the heuristic labelers' votes by split.
        balance: the class balance the LLM labelers calibrate to.
        count_stored: charge answers already stored against the budget (they still cost no call).
        stored_only: ask nothing on the train split; use the answers stored (``labelloop train``).
        show_progress: rich progress bars for LLM work.

    Returns:
        (answers per labeler name, as ``answer_labeler`` returns them, train and gold splits together;
        the ``BudgetUse``).
    """
    from labelloop.flows.label_dataset import answer_labeler, split_votes, unbudgeted_items

    cfg, task, spec = project.config, project.task, project.config.llm_budget
    labelers, ctx, names = project.llm_labelers, project.context(), list(project.taxonomy.names)
    train, dev, gold_dev = splits["train"], splits.get("dev"), project.gold("dev")
    items, train_ids = list(zip(train.ids, train.texts)), set(train.ids)
    n, m = len(items), len(labelers)
    use = BudgetUse(spec.limit(n * m), n * m, count_stored)
    got = {lf.name: answer_labeler(project, lf, store, get_lm, items=unbudgeted_items(project, lf),
                                   show_progress=show_progress) for lf in labelers}
    versions = [lf.version(ctx) for lf in labelers]
    have: list[dict[str, dict]] = [{} for _ in labelers]  # train answers in hand, per labeler
    new: list[set[str]] = [set() for _ in labelers]  # train records answered by a call
    gave_up: list[dict] = []  # records not asked any more (they failed max_attempts times)
    for version in versions:
        gave_up.append({rid: f for rid, f in store.failures(version, items).items() if f[0] >= cfg.max_attempts})
    askable = np.array([[rid not in g for g in gave_up] for rid in train.ids], dtype=bool).reshape(n, m)
    asked = np.zeros(n, dtype=bool)
    scoped = {s: splits[s] for s in ("train", "dev") if s in splits}

    def take_stored() -> None:
        """Stored train answers are free: in hand at once (a record's twin, answered meanwhile, too)."""
        if count_stored and not stored_only:
            return
        for j, version in enumerate(versions):
            have[j].update(store.get_many(version, [it for it in items if it[0] not in have[j]]))

    def refit():
        answers = {lf.name: {**got[lf.name].answers, **have[j]} for j, lf in enumerate(labelers)}
        V = split_votes(project, scoped, heuristic, answers, balance)
        model, majority, _, _ = fit_label_model(task, cfg.label_model, V["train"], names, gold_dev, V.get("dev"),
                                                cfg.seed)
        score = None
        if dev is not None and gold_dev:
            scores = task.evaluate(gold_dev, V["dev"], dev.texts, model, majority, None, {}, names)
            score = float(scores["label_model"][task.score_columns[0]])
        return V["train"], model.predict_proba(V["train"]), score

    take_stored()
    history, rnd = [], 0
    while True:
        V, P, score = refit()
        history.append(score)
        use.dev_scores.append(None if score is None else round(score, 4))
        held = np.array([[rid in h for h in have] for rid in train.ids], dtype=bool).reshape(n, m)
        costs = np.where(asked, 0, (askable & ~held).sum(axis=1))
        remaining = use.max_answers - use.spent
        if stored_only:
            use.stopped = "stored answers only: nothing asked on the train split"
        elif not (costs > 0).any():
            use.stopped = "every train record has its answers"
        elif remaining < costs[costs > 0].min():
            use.stopped = "budget spent"
        elif plateaued(history, DEV_TOLERANCE, PATIENCE):
            use.stopped = f"dev score gained no more than {DEV_TOLERANCE} over {PATIENCE} rounds"
        elif rnd == spec.rounds:
            use.stopped = f"all {spec.rounds} rounds done"
        if use.stopped:
            break
        share = min(remaining, max(math.ceil(remaining / (spec.rounds - rnd)), int(costs.max())))
        by_score, at_random = pick(task.budget_scores(P, V, len(names)), costs, share, random_share=spec.random_share,
                                   seed=[cfg.seed, rnd], eligible=costs > 0)
        chosen = np.concatenate([by_score, at_random])
        charged, calls = int(costs[chosen].sum()), 0
        asked[chosen] = True
        use.drawn_at_random += [items[i][0] for i in at_random]
        for j, lf in enumerate(labelers):  # all picked records of one labeler in a row (prompt prefix cache)
            todo = [items[i] for i in chosen if askable[i, j] and not held[i, j]]
            if todo:
                g = answer_labeler(project, lf, store, get_lm, items=todo, show_progress=show_progress)
                have[j].update(g.answers)
                new[j] |= g.new & train_ids
                calls += g.calls
                _merge(got[lf.name], g)
        use.spent += charged
        use.llm_calls += calls
        rnd += 1
        use.rounds.append({"round": rnd, "by_score": len(by_score), "at_random": len(at_random), "answers": charged,
                           "llm_calls": calls, "dev_score_before": use.dev_scores[-1]})
        logger.info("llm_budget round %d: %d records by score, %d at random, %d answers (%d LLM calls); "
                    "%d of %d answers left", rnd, len(by_score), len(at_random), charged, calls,
                    use.max_answers - use.spent, use.max_answers)
        take_stored()
    held = np.array([[rid in h for h in have] for rid in train.ids], dtype=bool).reshape(n, m)
    use.unasked = int((askable & ~held)[~asked].sum())
    use.reused = sum(len(h) - len(nw) for h, nw in zip(have, new))
    for j, lf in enumerate(labelers):
        whole = got[lf.name]
        whole.answers.update(have[j])
        for rid, f in gave_up[j].items():
            if rid not in whole.answers:
                whole.failed.setdefault(rid, f)
    logger.info("llm_budget: %d of %d answers spent (%d LLM calls), %d reused from the store, %d pairs left unasked; %s",
                use.spent, use.max_answers, use.llm_calls, use.reused, use.unasked, use.stopped)
    return got, use
