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
from scipy import sparse  # noqa: E402
from snorkel.labeling import LFApplier  # noqa: E402

from flows.project import Project  # noqa: E402
from flows.store import VoteStore, label_vectors  # noqa: E402
from labelers.irr import IRRLabeler  # noqa: E402
from labelers.label_model import estimate_class_balance  # noqa: E402
from labelers.labels import ABSTAIN  # noqa: E402
from labelers.llm import CONTENT_FREE_TEXTS, LLMLabeler, build_program  # noqa: E402
from labelers.multilabel import single_label_votes  # noqa: E402
from programs.lm import make_lm, model_identity  # noqa: E402
from programs.retrieval import LabelIndex, label_fingerprint  # noqa: E402

BATCH = 16


@dataclass
class SplitVotes:
    """Votes of every labeler on one split."""

    ids: list[str]
    texts: list[str]
    L: np.ndarray  # (n, m) label ids or ABSTAIN (multi-class)
    answers: dict[str, list[dict | None]] = field(default_factory=dict)  # LLM labeler -> raw answers
    V: list[sparse.csr_matrix] = field(default_factory=list)  # multi-label: per labeler (n, k) +1/-1/0 votes


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


def label_texts(project: Project) -> list[str]:
    """What the label index embeds: each label's name, with its description when it has one."""
    tax = project.taxonomy
    return [f"{n}: {d}" if d else n for n, d in zip(tax.names, tax.descriptions)]


def labeler_version(project: Project, labeler: LLMLabeler | IRRLabeler) -> str:
    if isinstance(labeler, IRRLabeler):
        return labeler.version(model_identity(project.config.lm.model), lm_params(project),
                               label_fingerprint(label_texts(project)))
    return labeler.version(model_identity(project.config.lm.model), lm_params(project))


def program_for(project: Project, labeler: LLMLabeler | IRRLabeler, optimized: bool = True):
    """The DSPy program that answers for a labeler (IRR: over the taxonomy's label index, with the
    state `labelloop optimize` saved unless ``optimized`` is False)."""
    if not isinstance(labeler, IRRLabeler):
        return build_program(labeler)
    vectors = None
    if labeler.retriever != "bm25":  # embedded once per label set, kept beside the vote store
        vectors = label_vectors(label_texts(project), project.config.store.parent / "labels")
    index = LabelIndex(list(project.taxonomy.names), vectors, retriever=labeler.retriever)
    return labeler.build_program(index, project.programs.get(labeler.name) if optimized else None)


def progress_bar(show: bool) -> Progress:
    """The rich progress bar of every per-record LLM pass (hidden when ``show`` is False)."""
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    disable=not show, transient=True)


def _answer_one(program, lm, text: str) -> dict:
    with dspy.context(lm=lm):
        pred = program(text=text)
    return dict(pred.items())


@task(cache_policy=NO_CACHE)
def answer_with_llm(name: str, program, items: list[tuple[str, str]], lm, store: VoteStore, version: str,
                    max_concurrency: int = 1, show_progress: bool = True) -> tuple[dict[str, dict], int, int]:
    """Answers for (id, text) items: stored ones from the store, the rest from the LM.

    Returns:
        answers by record id, the number of LLM calls made (an IRR answer reports its own count),
        and the number of failed calls (failed calls are not stored, so a later run retries them).
    """
    known = store.get_many(version, items)
    todo = [(rid, text) for rid, text in items if rid not in known]
    if not todo:
        return known, 0, 0
    errors = calls = 0
    with progress_bar(show_progress) as progress, \
            ThreadPoolExecutor(max_workers=max_concurrency) as pool:
        bar = progress.add_task(name, total=len(todo))
        for start in range(0, len(todo), BATCH):
            batch = todo[start:start + BATCH]
            futures = [pool.submit(_answer_one, program, lm, text) for _, text in batch]
            done = []
            for (rid, text), fut in zip(batch, futures):
                try:
                    done.append((rid, text, fut.result()))
                except Exception as exc:  # one failed call is data, not a crash
                    errors += 1
                    get_run_logger().warning("%s failed on %s: %s: %s", name, rid, type(exc).__name__, exc)
                progress.advance(bar)
            store.put_many(version, done)
            known.update({rid: ans for rid, _, ans in done})
            calls += sum(ans.get("calls", 1) for _, _, ans in done)
    return known, calls, errors


@task(cache_policy=NO_CACHE)
def apply_heuristics(lfs: list, texts: list[str]) -> np.ndarray:
    if not lfs:
        return np.empty((len(texts), 0), dtype=int)
    from types import SimpleNamespace

    return LFApplier(lfs).apply([SimpleNamespace(text=t) for t in texts], progress_bar=False)


def content_free_items(labeler: LLMLabeler | IRRLabeler) -> list[tuple[str, str]]:
    """The extra inputs a labeler with content-free calibration must be asked about."""
    if getattr(labeler, "calibration", None) != "content_free":
        return []
    return [(f"__content_free_{i}", text or " ") for i, text in enumerate(CONTENT_FREE_TEXTS)]


def gold_ids(project: Project, split: str) -> list | None:
    """Gold label ids of a split: one per record, or a list per record for multi-label projects."""
    df = project.splits.get(split)
    if df is None:
        return None
    tax = project.taxonomy
    return [[tax.id(x) for x in v] for v in df["label"]] if project.multilabel else [tax.id(x) for x in df["label"]]


def dev_class_balance(project: Project):
    """Class balance of the gold dev labels (multi-label: each label's share of all gold labels)."""
    y = gold_ids(project, "dev")
    if not y:
        return None
    flat = [j for ids in y for j in ids] if project.multilabel else y
    return estimate_class_balance(flat, len(project.taxonomy)) if flat else None


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
    k = len(project.taxonomy)
    try:
        for labeler in project.llm_labelers:
            version = labeler_version(project, labeler)
            # all records of one labeler in a row, so llama.cpp reuses the shared prompt prefix
            items = content_free_items(labeler) + [it for s in splits.values() for it in zip(s.ids, s.texts)]
            answers, n, failed = answer_with_llm(labeler.name, program_for(project, labeler), items, lm, store, version,
                                                 cfg.lm.max_concurrency, show_progress)
            calls, errors[labeler.name] = calls + n, failed
            irr = isinstance(labeler, IRRLabeler)
            if not irr:
                labeler.fit_calibration([answers.get(rid) for rid in splits["train"].ids],
                                        content_free_answers=[answers.get(rid) for rid, _ in content_free_items(labeler)],
                                        class_balance=balance)
            invalid[labeler.name] = 0
            for name, s in splits.items():
                got = [answers.get(rid) for rid in s.ids]
                s.answers[labeler.name] = got
                if irr:  # labels outside the candidates, dropped by the program
                    invalid[labeler.name] += sum((a or {}).get("invalid") or 0 for a in got)
                    votes = labeler.vote_matrix(got, project.taxonomy) if project.multilabel else labeler.votes(got, project.taxonomy)
                else:
                    invalid[labeler.name] += sum(1 for a in got if a is not None and a.get("answer") is None)
                    votes = labeler.votes(got)
                columns[name].append(votes)
            logger.info("%s: %d LLM calls (%d answers reused)", labeler.name, n, len(items) - n)
    finally:
        store.close()
    for name, s in splits.items():
        heuristic = apply_heuristics(project.heuristic_lfs, s.texts)
        if project.multilabel:
            s.V = [v if sparse.issparse(v) else single_label_votes(v, k) for v in columns[name]]
            s.V += [single_label_votes(heuristic[:, j], k) for j in range(heuristic.shape[1])]
            s.L = np.empty((len(s.ids), 0), dtype=int)
        else:
            llm_L = np.stack(columns[name], axis=1) if columns[name] else np.empty((len(s.ids), 0), dtype=int)
            s.L = np.concatenate([llm_L, heuristic], axis=1).astype(int)
    return LabelingResult(project.labeler_names, splits, calls, invalid, errors)


def label_matrix_frame(names: list[str], votes: SplitVotes, label_names) -> pd.DataFrame:
    """The label matrix as a readable frame: one column per labeler, label names or empty for abstain
    (multi-label: the list of labels each labeler voted for)."""
    frame = pd.DataFrame({"id": votes.ids, "text": votes.texts})
    if votes.V:
        for name, V in zip(names, votes.V):
            frame[name] = [[label_names[j] for j in row.indices[row.data > 0]] for row in V]
        return frame
    lookup = np.array(list(label_names) + [""], dtype=object)
    for j, name in enumerate(names):
        frame[name] = lookup[np.where(votes.L[:, j] == ABSTAIN, -1, votes.L[:, j])]
    return frame
