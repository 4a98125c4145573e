"""The `label_dataset` flow: run every labeler over every split and build the label matrices.

LLM answers come from the vote store when present; only missing ones are computed, committed in
small batches as they arrive.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")

import dspy  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402
from rich.progress import (  # noqa: E402
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)
from snorkel.labeling import LFApplier  # noqa: E402

from flows.project import Project  # noqa: E402
from flows.store import VoteStore  # noqa: E402
from labelers.label_model import estimate_class_balance  # noqa: E402
from labelers.labels import ABSTAIN  # noqa: E402
from labelers.llm import CONTENT_FREE_TEXTS, LLMLabeler, build_program  # noqa: E402
from programs.lm import make_lm, model_identity  # noqa: E402

BATCH = 16


@dataclass
class SplitVotes:
    """Votes of every labeler on one split."""

    ids: list[str]
    texts: list[str]
    L: np.ndarray
    answers: dict[str, list[dict | None]] = field(default_factory=dict)  # LLM labeler -> raw answers


@dataclass
class LabelingResult:
    names: list[str]
    splits: dict[str, SplitVotes]
    llm_calls: int
    invalid: dict[str, int]
    errors: dict[str, int]


def lm_params(project: Project) -> dict:
    lm = project.config.lm
    return {"temperature": lm.temperature, "max_tokens": lm.max_tokens, "api_base": lm.api_base}


def labeler_version(project: Project, labeler: LLMLabeler) -> str:
    return labeler.version(model_identity(project.config.lm.model), lm_params(project))


def _answer_one(program, lm, text: str) -> dict:
    with dspy.context(lm=lm):
        pred = program(text=text)
    return {"answer": pred.answer, "probs": pred.probs, "raw": pred.raw}


@task(cache_policy=NO_CACHE)
def answer_with_llm(labeler: LLMLabeler, items: list[tuple[str, str]], lm, store: VoteStore, version: str,
                    max_concurrency: int = 1, show_progress: bool = True) -> tuple[dict[str, dict], int, int]:
    """Answers for (id, text) items: stored ones from the store, the rest from the LM.

    Returns:
        answers by record id, the number of LLM calls made, and the number of failed calls
        (failed calls are not stored, so a later run retries them).
    """
    known = store.get_many(version, items)
    todo = [(rid, text) for rid, text in items if rid not in known]
    if not todo:
        return known, 0, 0
    program = build_program(labeler)
    errors = 0
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()]
    with Progress(*columns, disable=not show_progress, transient=True) as progress, \
            ThreadPoolExecutor(max_workers=max_concurrency) as pool:
        bar = progress.add_task(f"{labeler.name}", total=len(todo))
        for start in range(0, len(todo), BATCH):
            batch = todo[start:start + BATCH]
            futures = [pool.submit(_answer_one, program, lm, text) for _, text in batch]
            done = []
            for (rid, text), fut in zip(batch, futures):
                try:
                    done.append((rid, text, fut.result()))
                except Exception as exc:  # one failed call is data, not a crash
                    errors += 1
                    get_run_logger().warning("%s failed on %s: %s: %s", labeler.name, rid, type(exc).__name__, exc)
                progress.advance(bar)
            store.put_many(version, done)
            known.update({rid: ans for rid, _, ans in done})
    return known, len(todo), errors


@task(cache_policy=NO_CACHE)
def apply_heuristics(lfs: list, texts: list[str]) -> np.ndarray:
    if not lfs:
        return np.empty((len(texts), 0), dtype=int)
    from types import SimpleNamespace

    return LFApplier(lfs).apply([SimpleNamespace(text=t) for t in texts], progress_bar=False)


def content_free_items(labeler: LLMLabeler) -> list[tuple[str, str]]:
    """The extra inputs a labeler with content-free calibration must be asked about."""
    if labeler.calibration != "content_free":
        return []
    return [(f"__content_free_{i}", text or " ") for i, text in enumerate(CONTENT_FREE_TEXTS)]


def dev_class_balance(project: Project):
    dev = project.splits.get("dev")
    if dev is None or not len(dev):
        return None
    return estimate_class_balance([project.taxonomy.id(x) for x in dev["label"]], len(project.taxonomy))


@flow(name="label-dataset", log_prints=True)
def label_dataset(project: Project, show_progress: bool = True) -> LabelingResult:
    """Run every labeler on every split; LLM labelers are calibrated before their answers become votes."""
    logger = get_run_logger()
    cfg = project.config
    store = VoteStore(cfg.store)
    lm = make_lm(cfg.lm.model, api_base=cfg.lm.api_base, temperature=cfg.lm.temperature,
                 max_tokens=cfg.lm.max_tokens, n_threads=cfg.lm.n_threads) if project.llm_labelers else None
    splits = {name: SplitVotes(df["id"].tolist(), df["text"].tolist(), np.empty(0)) for name, df in project.splits.items()}
    calls, invalid, errors = 0, {}, {}
    balance = dev_class_balance(project)
    columns = {name: [] for name in splits}
    try:
        for labeler in project.llm_labelers:
            version = labeler_version(project, labeler)
            # all records of one labeler in a row, so llama.cpp reuses the shared prompt prefix
            items = content_free_items(labeler) + [it for s in splits.values() for it in zip(s.ids, s.texts)]
            answers, n, failed = answer_with_llm(labeler, items, lm, store, version, cfg.lm.max_concurrency, show_progress)
            calls, errors[labeler.name] = calls + n, failed
            labeler.fit_calibration([answers.get(rid) for rid in splits["train"].ids],
                                    content_free_answers=[answers.get(rid) for rid, _ in content_free_items(labeler)],
                                    class_balance=balance)
            invalid[labeler.name] = 0
            for name, s in splits.items():
                got = [answers.get(rid) for rid in s.ids]
                s.answers[labeler.name] = got
                invalid[labeler.name] += sum(1 for a in got if a is not None and a.get("answer") is None)
                columns[name].append(labeler.votes(got))
            logger.info("%s: %d LLM calls (%d answers reused)", labeler.name, n, len(items) - n)
    finally:
        store.close()
    for name, s in splits.items():
        llm_L = np.stack(columns[name], axis=1) if columns[name] else np.empty((len(s.ids), 0), dtype=int)
        s.L = np.concatenate([llm_L, apply_heuristics(project.heuristic_lfs, s.texts)], axis=1).astype(int)
    return LabelingResult(project.labeler_names, splits, calls, invalid, errors)


def label_matrix_frame(names: list[str], votes: SplitVotes, label_names) -> pd.DataFrame:
    """The label matrix as a readable frame: one column per labeler, label names or empty for abstain."""
    lookup = np.array(list(label_names) + [""], dtype=object)
    frame = pd.DataFrame({"id": votes.ids, "text": votes.texts})
    for j, name in enumerate(names):
        frame[name] = lookup[np.where(votes.L[:, j] == ABSTAIN, -1, votes.L[:, j])]
    return frame
