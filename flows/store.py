"""The persistent vote store: every LLM answer, keyed by (labeler version, record id, text hash).

Answers are committed as they arrive, so a crash loses nothing already paid for, and a re-run of an
unchanged project makes no LLM call at all.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
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
    """A SQLite file of LLM answers. Safe to share between runs and scheduled jobs."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(SCHEMA)
        self._db.commit()

    def get_many(self, version: str, items: list[tuple[str, str]]) -> dict[str, dict]:
        """Stored answers for (record id, text) pairs, keyed by record id; missing ones are absent."""
        wanted = {(rid, text_hash(text)) for rid, text in items}
        rows = self._db.execute("SELECT record_id, text_hash, answer FROM answers WHERE labeler_version = ?", (version,))
        return {rid: json.loads(ans) for rid, th, ans in rows if (rid, th) in wanted}

    def put_many(self, version: str, rows: list[tuple[str, str, dict]]) -> None:
        """Store (record id, text, answer) rows in one transaction."""
        with self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO answers (labeler_version, record_id, text_hash, answer) VALUES (?, ?, ?, ?)",
                [(version, rid, text_hash(text), json.dumps(ans)) for rid, text, ans in rows],
            )

    def count(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]

    def close(self) -> None:
        self._db.close()


def label_vectors(texts: list[str], cache_dir: Path, embedder: str | None = None):
    """Embeddings of a taxonomy's label texts, computed once per label set and embedder and kept as .npy."""
    import numpy as np

    from flows.io import atomic_path
    from programs.embeddings import DEFAULT_EMBEDDER, embed
    from programs.retrieval import label_fingerprint

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
