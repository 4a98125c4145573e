"""What has been paid for, kept on disk: every LLM answer, bootstrap step answers, label embeddings.

- ``VoteStore``: labeler answers keyed by (labeler version, record id, text hash), committed as
  they arrive, so a crash loses nothing already paid for and an unchanged re-run makes no call.
- ``StepCache``: bootstrap step answers and markers, in a table of their own beside the votes.
- ``stored_or_asked``: the one way an answer is obtained: from the store, else asked and committed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from labelloop.programs.errors import LabelloopError

logger = logging.getLogger("labelloop")

TABLE = """
CREATE TABLE IF NOT EXISTS {table} (
    labeler_version TEXT NOT NULL,
    record_id TEXT NOT NULL,
    text_hash TEXT NOT NULL,
    answer TEXT NOT NULL,
    created TEXT NOT NULL DEFAULT (datetime('now')),
    PRIMARY KEY (labeler_version, record_id, text_hash)
)
"""


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


class VoteStore:
    """A SQLite file of LLM answers. Safe to share between runs and scheduled jobs; a context manager."""

    table = "answers"

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(TABLE.format(table=self.table))
        self._db.commit()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _rows(self, table: str, version: str, items: list[tuple[str, str]]) -> dict[str, dict]:
        wanted = {(rid, text_hash(text)) for rid, text in items}
        rows = self._db.execute(f"SELECT record_id, text_hash, answer FROM {table} WHERE labeler_version = ?", (version,))
        return {rid: json.loads(ans) for rid, th, ans in rows if (rid, th) in wanted}

    def get_many(self, version: str, items: list[tuple[str, str]]) -> dict[str, dict]:
        """Stored answers for (record id, text) pairs, keyed by record id; missing ones are absent."""
        return self._rows(self.table, version, items)

    def put_many(self, version: str, rows: list[tuple[str, str, dict]]) -> None:
        """Store (record id, text, answer) rows in one transaction."""
        with self._db:
            self._db.executemany(
                f"INSERT OR REPLACE INTO {self.table} (labeler_version, record_id, text_hash, answer) VALUES (?, ?, ?, ?)",
                [(version, rid, text_hash(text), json.dumps(ans)) for rid, text, ans in rows],
            )

    def move(self, old_version: str, new_version: str) -> int:
        """Re-key every answer stored under ``old_version`` to ``new_version`` (a migration); returns how many moved."""
        with self._db:
            moved = self._db.execute(f"UPDATE OR IGNORE {self.table} SET labeler_version = ? WHERE labeler_version = ?",
                                     (new_version, old_version)).rowcount
            self._db.execute(f"DELETE FROM {self.table} WHERE labeler_version = ?", (old_version,))
        return moved

    def count(self) -> int:
        return self._db.execute(f"SELECT COUNT(*) FROM {self.table}").fetchone()[0]

    def close(self) -> None:
        self._db.close()


class StepCache(VoteStore):
    """Bootstrap step answers (name, generate, update, review) and markers, keyed like votes, in their own table.

    Stores written before this table existed kept them in the vote table: a lookup that misses here
    finds them there and moves them over, so no answer is paid for again.
    """

    table = "bootstrap_steps"

    def get_many(self, version: str, items: list[tuple[str, str]]) -> dict[str, dict]:
        found = self._rows(self.table, version, items)
        missing = [(rid, text) for rid, text in items if rid not in found]
        legacy = self._rows(VoteStore.table, version, missing) if missing else {}
        if legacy:
            texts = dict(missing)
            self.put_many(version, [(rid, texts[rid], ans) for rid, ans in legacy.items()])
            with self._db:
                self._db.executemany(f"DELETE FROM {VoteStore.table} WHERE labeler_version = ? AND record_id = ? "
                                     "AND text_hash = ?", [(version, rid, text_hash(texts[rid])) for rid in legacy])
        return {**found, **legacy}


def progress_bar(show: bool) -> Progress:
    """The rich progress bar of every per-record LLM pass (hidden when ``show`` is False)."""
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    disable=not show, transient=True)


def stored_or_asked(store: VoteStore, version: str, items: list[tuple[str, str]], ask: Callable[[str], tuple[dict, int]],
                    *, name: str, show_progress: bool = True, max_concurrency: int = 1, batch: int = 16,
                    tolerate_errors: bool = True) -> tuple[dict[str, dict], int, int]:
    """Answers for (id, text) items: stored ones from the store, the rest asked and committed batch by batch.

    Args:
        store: where answers are kept.
        version: the asker's version; part of every key.
        items: (record id, text) pairs.
        ask: ``text -> (answer, LLM calls it made)``.
        name: the progress bar's label.
        max_concurrency: asks in flight at once.
        batch: answers committed together (1: each as it arrives).
        tolerate_errors: log and count a failed ask (not stored, so a later run retries it) instead of raising;
            a ``LabelloopError`` (a model that is not installed, for instance) always stops the run.

    Returns:
        Answers by record id, the number of LLM calls made, and the number of failed asks.
    """
    known = store.get_many(version, items)
    todo = [(rid, text) for rid, text in items if rid not in known]
    if not todo:
        return known, 0, 0
    errors = calls = 0
    with progress_bar(show_progress) as progress, ThreadPoolExecutor(max_workers=max_concurrency) as pool:
        bar = progress.add_task(name, total=len(todo))
        for start in range(0, len(todo), batch):
            chunk = todo[start:start + batch]
            futures = [pool.submit(ask, text) for _, text in chunk]
            done = []
            for (rid, text), fut in zip(chunk, futures):
                try:
                    answer, n = fut.result()
                except Exception as exc:  # one failed call is data, not a crash; a labelloop error stops the run
                    if not tolerate_errors or isinstance(exc, LabelloopError):
                        store.put_many(version, done)
                        raise
                    errors += 1
                    logger.warning("%s failed on %s: %s: %s", name, rid, type(exc).__name__, exc)
                else:
                    done.append((rid, text, answer))
                    calls += n
                progress.advance(bar)
            store.put_many(version, done)
            known.update({rid: ans for rid, _, ans in done})
    return known, calls, errors


def label_vectors(texts: list[str], cache_dir: Path, embedder: str | None = None):
    """Embeddings of a taxonomy's label texts, computed once per label set and embedder and kept as .npy."""
    import numpy as np

    from labelloop.flows.io import atomic_path
    from labelloop.programs.embeddings import DEFAULT_EMBEDDER, embed
    from labelloop.programs.retrieval import label_fingerprint

    embedder = embedder or DEFAULT_EMBEDDER
    path = Path(cache_dir) / f"labels-{label_fingerprint(texts, embedder)}.npy"
    if path.is_file():
        vectors = np.load(path)
        if vectors.shape[0] == len(texts):
            return vectors
    vectors = embed(texts, embedder)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, vectors)
    return vectors
