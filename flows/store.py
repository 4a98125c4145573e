"""What has been paid for, kept on disk: every LLM answer, bootstrap step answers, label embeddings.

- ``VoteStore``: labeler answers keyed by (labeler version, text hash): a changed text is a new
  question, the same text under another id is not. Each answer is committed the moment it
  arrives, so a crash or SIGKILL loses none that the LLM returned. Runs sharing a store claim the
  records they ask (a lease that expires), so overlapping runs pay once; failed asks are counted
  per record so that a record that keeps failing stops being asked.
- ``StepCache``: bootstrap step answers and markers, in a table of their own beside the votes.
- ``stored_or_asked``: the one way an answer is obtained: from the store, else claimed, asked and committed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import sqlite3
import time
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from labelloop.programs.errors import LabelloopError, LLMUnavailable, redact_secrets

logger = logging.getLogger("labelloop")

SCHEMA = """
CREATE TABLE IF NOT EXISTS {table} (
    labeler_version TEXT NOT NULL,
    record_id TEXT NOT NULL,
    text_hash TEXT NOT NULL,
    answer TEXT NOT NULL,
    created TEXT NOT NULL DEFAULT (datetime('now')),
    PRIMARY KEY (labeler_version, record_id, text_hash)
);
CREATE INDEX IF NOT EXISTS {table}_by_text ON {table} (labeler_version, text_hash);
CREATE TABLE IF NOT EXISTS claims (
    labeler_version TEXT NOT NULL,
    text_hash TEXT NOT NULL,
    owner TEXT NOT NULL,
    expires REAL NOT NULL,
    PRIMARY KEY (labeler_version, text_hash)
);
CREATE TABLE IF NOT EXISTS failures (
    labeler_version TEXT NOT NULL,
    text_hash TEXT NOT NULL,
    record_id TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    error TEXT NOT NULL,
    updated TEXT NOT NULL DEFAULT (datetime('now')),
    PRIMARY KEY (labeler_version, text_hash)
);
"""


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


class VoteStore:
    """A SQLite file of LLM answers, shared safely by concurrent runs and scheduled jobs; a context manager."""

    table = "answers"

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=60, check_same_thread=False, isolation_level=None)
        deadline = time.monotonic() + 60
        while True:  # switching a new file to WAL can answer "locked" at once, without SQLite's busy wait
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a committed answer survives a killed process
                self._db.executescript(SCHEMA.format(table=self.table))
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _write(self):
        """A write transaction that takes the lock up front, so concurrent runs queue instead of failing."""
        return _Immediate(self._db)

    def get_many(self, version: str, items: list[tuple[str, str]]) -> dict[str, dict]:
        """Stored answers for (record id, text) pairs, keyed by record id; looked up by text, missing ones absent.

        The same text stored twice (under two ids by an older store) gives its first stored answer.
        """
        rows = self._db.execute(f"SELECT text_hash, answer FROM {self.table} WHERE labeler_version = ? "
                                "ORDER BY rowid DESC", (version,))
        by_text = {th: ans for th, ans in rows}  # the earliest row wins: it is written last into the dict
        out = {}
        for rid, text in items:
            found = by_text.get(text_hash(text))
            if found is not None:
                out[rid] = json.loads(found)
        return out

    def put_many(self, version: str, rows: list[tuple[str, str, dict]]) -> None:
        """Store (record id, text, answer) rows in one transaction; their claims and failures are cleared."""
        hashed = [(rid, text_hash(text), json.dumps(ans)) for rid, text, ans in rows]
        with self._write():
            self._db.executemany(f"INSERT OR REPLACE INTO {self.table} (labeler_version, record_id, text_hash, answer) "
                                 "VALUES (?, ?, ?, ?)", [(version, rid, th, ans) for rid, th, ans in hashed])
            for table in ("claims", "failures"):
                self._db.executemany(f"DELETE FROM {table} WHERE labeler_version = ? AND text_hash = ?",
                                     [(version, th) for _, th, _ in hashed])

    def claim(self, version: str, hashes: list[str], owner: str, lease_s: float) -> set[str]:
        """Claim texts for asking: those no other live run holds. Returns the hashes now held by ``owner``.

        A claim lapses after ``lease_s`` seconds, so a run that was killed holds nothing for long.
        """
        now = time.time()
        with self._write():
            self._db.execute("DELETE FROM claims WHERE expires < ?", (now,))
            here = f"{socket.gethostname()}:"
            for (other,) in self._db.execute("SELECT DISTINCT owner FROM claims WHERE owner LIKE ? AND owner != ?",
                                             (here + "%", owner)).fetchall():
                if not _alive(other):  # killed on this machine: no need to wait for its lease
                    self._db.execute("DELETE FROM claims WHERE owner = ?", (other,))
            self._db.executemany("INSERT OR IGNORE INTO claims (labeler_version, text_hash, owner, expires) VALUES (?, ?, ?, ?)",
                                 [(version, th, owner, now + lease_s) for th in hashes])
            held = set()
            for start in range(0, len(hashes), 500):
                chunk = hashes[start:start + 500]
                marks = ",".join("?" * len(chunk))
                held |= {th for (th,) in self._db.execute(
                    f"SELECT text_hash FROM claims WHERE labeler_version = ? AND owner = ? AND text_hash IN ({marks})",
                    (version, owner, *chunk))}
                # answered since the caller looked: not worth a claim (the caller finds the answer)
                held -= {th for (th,) in self._db.execute(
                    f"SELECT text_hash FROM {self.table} WHERE labeler_version = ? AND text_hash IN ({marks})",
                    (version, *chunk))}
            self._db.executemany("DELETE FROM claims WHERE labeler_version = ? AND owner = ? AND text_hash = ?",
                                 [(version, owner, th) for th in set(hashes) - held])
        return held

    def renew(self, owner: str, lease_s: float) -> None:
        """Extend every claim ``owner`` holds: a live run keeps what it is asking."""
        with self._write():
            self._db.execute("UPDATE claims SET expires = ? WHERE owner = ?", (time.time() + lease_s, owner))

    def release(self, owner: str) -> None:
        """Drop every claim ``owner`` still holds (records it did not get to)."""
        with self._write():
            self._db.execute("DELETE FROM claims WHERE owner = ?", (owner,))

    def record_failures(self, version: str, rows: list[tuple[str, str, str]]) -> None:
        """Count one more failed attempt for each (record id, text, error) and release its claim."""
        with self._write():
            for rid, text, error in rows:
                th = text_hash(text)
                self._db.execute("INSERT INTO failures (labeler_version, text_hash, record_id, attempts, error) "
                                 "VALUES (?, ?, ?, 1, ?) ON CONFLICT (labeler_version, text_hash) DO UPDATE SET "
                                 "attempts = attempts + 1, error = excluded.error, updated = datetime('now')",
                                 (version, th, rid, error[:500]))
                self._db.execute("DELETE FROM claims WHERE labeler_version = ? AND text_hash = ?", (version, th))

    def failures(self, version: str, items: list[tuple[str, str]]) -> dict[str, tuple[int, str]]:
        """(failed attempts, last error) per record id of ``items`` that has failed and has no answer."""
        rows = self._db.execute("SELECT text_hash, attempts, error FROM failures WHERE labeler_version = ?", (version,))
        by_text = {th: (n, err) for th, n, err in rows}
        return {rid: by_text[th] for rid, text in items if (th := text_hash(text)) in by_text}

    def move(self, old_version: str, new_version: str) -> int:
        """Re-key every answer stored under ``old_version`` to ``new_version`` (a migration); returns how many moved."""
        with self._write():
            moved = self._db.execute(f"UPDATE OR IGNORE {self.table} SET labeler_version = ? WHERE labeler_version = ?",
                                     (new_version, old_version)).rowcount
            self._db.execute(f"DELETE FROM {self.table} WHERE labeler_version = ?", (old_version,))
        return moved

    def count(self) -> int:
        return self._db.execute(f"SELECT COUNT(*) FROM {self.table}").fetchone()[0]

    def close(self) -> None:
        self._db.close()


def new_owner() -> str:
    """A claim owner: host and process (so a run on the same machine can tell it was killed), and a nonce."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _alive(owner: str) -> bool:
    try:
        os.kill(int(owner.split(":")[1]), 0)
    except (IndexError, ValueError):
        return True  # not ours to judge: its lease decides
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _Immediate:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on error) on an autocommit connection."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind, *_):
        self.db.execute("ROLLBACK" if kind else "COMMIT")


def step_key(*parts) -> str:
    """A step cache version: a short hash of what shapes a step's answers besides its inputs (the step, its prompt
    version, the LM and settings)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def lm_key(lm) -> list:
    """An ``LMSpec``'s key (``LMSpec.key``) as step cache versions hold it: every step sets its own answer budget, so
    ``max_tokens`` is left out."""
    model, params = lm.key()
    return [model, params["temperature"], params["api_base"]]


class StepCache(VoteStore):
    """Step answers of the generative flows (bootstrap's name, generate, update, review, and markers; propose-lfs's
    proposals), keyed by (step, inputs), in their own table.

    Stores written before this table existed kept them in the vote table: a lookup that misses here
    finds them there and moves them over, so no answer is paid for again.
    """

    table = "bootstrap_steps"

    def _rows(self, table: str, version: str, items: list[tuple[str, str]]) -> dict[str, dict]:
        wanted = {(rid, text_hash(text)) for rid, text in items}
        rows = self._db.execute(f"SELECT record_id, text_hash, answer FROM {table} WHERE labeler_version = ?", (version,))
        return {rid: json.loads(ans) for rid, th, ans in rows if (rid, th) in wanted}

    def get_many(self, version: str, items: list[tuple[str, str]]) -> dict[str, dict]:
        found = self._rows(self.table, version, items)
        missing = [(rid, text) for rid, text in items if rid not in found]
        has_votes = self._db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                                     (VoteStore.table,)).fetchone()
        legacy = self._rows(VoteStore.table, version, missing) if missing and has_votes else {}
        if legacy:
            texts = dict(missing)
            self.put_many(version, [(rid, texts[rid], ans) for rid, ans in legacy.items()])
            with self._write():
                self._db.executemany(f"DELETE FROM {VoteStore.table} WHERE labeler_version = ? AND record_id = ? "
                                     "AND text_hash = ?", [(version, rid, text_hash(texts[rid])) for rid in legacy])
        return {**found, **legacy}


def progress_bar(show: bool) -> Progress:
    """The rich progress bar of every per-record LLM pass (hidden when ``show`` is False)."""
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    disable=not show, transient=True)


class ProgressLog:
    """Log lines every ``every`` seconds with done/total, calls per second and time left.

    A scheduled run has no terminal for a progress bar; its log shows these instead.
    """

    def __init__(self, name: str, total: int, every: float):
        self.name, self.total, self.every = name, total, every
        self.started = self.last = time.monotonic()
        self.done = self.calls = 0

    def advance(self, calls: int) -> None:
        self.done += 1
        self.calls += calls
        now = time.monotonic()
        if now - self.last >= self.every and self.done < self.total:
            self.last = now
            rate = self.done / max(now - self.started, 1e-9)
            logger.info("%s: %d/%d asked, %.2f calls/s, ~%.0f s left", self.name, self.done, self.total,
                        self.calls / (now - self.started), (self.total - self.done) / rate)


@dataclass
class Asked:
    """What ``stored_or_asked`` got: answers by record id and what it cost."""

    answers: dict[str, dict]
    calls: int = 0  # LLM calls made
    new: set[str] = field(default_factory=set)  # record ids answered by an ask in this call (not from the store)
    failed: dict[str, tuple[int, str]] = field(default_factory=dict)  # record id -> (attempts, last error), no answer
    gave_up: int = 0  # records not asked any more: they failed max_attempts times


@dataclass
class _Item:
    rid: str
    text: str
    th: str


def stored_or_asked(store: VoteStore, version: str, items: list[tuple[str, str]], ask: Callable[[str], tuple[dict, int]],
                    *, name: str, show_progress: bool = True, max_concurrency: int = 1, tolerate_errors: bool = True,
                    max_attempts: int = 3, stop_after: int = 5, lease_s: float = 120.0, poll_s: float = 0.5,
                    log_every: float = 30.0, fatal: Callable[[BaseException], bool] | None = None) -> Asked:
    """Answers for (id, text) items: stored ones from the store, the rest claimed, asked and committed one by one.

    Args:
        store: where answers are kept.
        version: the asker's version; part of every key.
        items: (record id, text) pairs.
        ask: ``text -> (answer, LLM calls it made)``.
        name: the progress bar's and log's label.
        max_concurrency: asks in flight at once.
        tolerate_errors: count a failed ask against its record (a later run asks again, up to
            ``max_attempts`` times) instead of raising; a ``LabelloopError`` always stops the run.
        max_attempts: failed asks after which a record is not asked again (it stays without an answer).
        stop_after: consecutive failed asks that stop the run (the LLM, not the records, is failing);
            those failures are not counted against the records.
        lease_s: how long a claim on a record holds off other runs unless renewed (this run renews its
            claims while it works; a run killed on the same machine loses them at once).
        poll_s: how often to look for answers that another run claimed.
        log_every: seconds between progress log lines.
        fatal: errors that stop the run at once (a rejected API key, for instance).

    Returns:
        Answers by record id, LLM calls made, records newly answered, and records that failed.
    """
    result = Asked(store.get_many(version, items))
    todo = [(rid, text) for rid, text in items if rid not in result.answers]
    if not todo:
        return result
    failed = store.failures(version, todo)
    pending = deque()
    for rid, text in todo:
        if failed.get(rid, (0, ""))[0] >= max_attempts:
            result.failed[rid] = failed[rid]
            result.gave_up += 1
        else:
            pending.append(_Item(rid, text, text_hash(text)))
    if not pending:
        return result
    # one claim per text: records sharing a text share its answer
    by_hash: dict[str, list[_Item]] = {}
    for it in pending:
        by_hash.setdefault(it.th, []).append(it)
    pending = deque(group[0] for group in by_hash.values())
    owner, chunk = new_owner(), max(8, 2 * max_concurrency)
    renewed = time.monotonic()
    claimed: deque[_Item] = deque()
    waiting: list[_Item] = []  # claimed by another run: its answer will arrive in the store
    in_flight: dict = {}
    streak: list[tuple[str, str, str]] = []  # consecutive failures, not yet counted against their records
    log = ProgressLog(name, len(pending), log_every)

    def settle(it: _Item, answer: dict) -> None:
        for twin in by_hash[it.th]:
            result.answers[twin.rid] = answer
            result.failed.pop(twin.rid, None)

    def flush_streak() -> None:
        store.record_failures(version, streak)
        for rid, _, error in streak:
            result.failed[rid] = (failed.get(rid, (0, ""))[0] + 1, error)
        streak.clear()

    pool = ThreadPoolExecutor(max_workers=max_concurrency)
    try:
        with progress_bar(show_progress) as progress:
            bar = progress.add_task(name, total=len(pending))
            while pending or claimed or in_flight or waiting:
                if not claimed and pending:
                    batch = [pending.popleft() for _ in range(min(chunk, len(pending)))]
                    held = store.claim(version, [it.th for it in batch], owner, lease_s)
                    claimed.extend(it for it in batch if it.th in held)
                    waiting.extend(it for it in batch if it.th not in held)
                while claimed and len(in_flight) < max_concurrency:
                    it = claimed.popleft()
                    in_flight[pool.submit(ask, it.text)] = it
                if not in_flight:
                    if waiting and not pending and not claimed:
                        time.sleep(poll_s)
                        got = store.get_many(version, [(it.rid, it.text) for it in waiting])
                        for it in [it for it in waiting if it.rid in got]:
                            settle(it, got[it.rid])
                            progress.advance(bar)
                        waiting = [it for it in waiting if it.rid not in got]
                        held = store.claim(version, [it.th for it in waiting], owner, lease_s) if waiting else set()
                        claimed.extend(it for it in waiting if it.th in held)  # the other run died: its lease lapsed
                        waiting = [it for it in waiting if it.th not in held]
                    continue
                done, _ = wait(in_flight, timeout=lease_s / 4, return_when=FIRST_COMPLETED)
                if time.monotonic() - renewed > lease_s / 4:
                    store.renew(owner, lease_s)
                    renewed = time.monotonic()
                for fut in done:
                    it = in_flight.pop(fut)
                    try:
                        answer, n = fut.result()
                    except Exception as exc:  # one failed call is data, not a crash; see the rules above
                        if not tolerate_errors or isinstance(exc, LabelloopError):
                            raise
                        error = redact_secrets(f"{type(exc).__name__}: {exc}")  # stored and logged: no credentials
                        if fatal is not None and fatal(exc):
                            # from None: the client's own error may hold the credentials that ``error`` masks
                            raise LLMUnavailable(f"{name}: the LLM refused the request: {error}") from None
                        streak.append((it.rid, it.text, error))
                        logger.warning("%s failed on %s: %s", name, it.rid, error)
                        log.advance(0)
                        if len(streak) >= stop_after:
                            raise LLMUnavailable(f"{name}: {len(streak)} LLM calls in a row failed, so the run stopped "
                                                 f"(no record is counted as failed); last error: {error}") from None
                    else:
                        store.put_many(version, [(it.rid, it.text, answer)])  # committed now: a kill loses nothing paid for
                        settle(it, answer)
                        result.calls += n
                        result.new.update(twin.rid for twin in by_hash[it.th])
                        if streak:
                            flush_streak()
                        log.advance(n)
                    progress.advance(bar)
        if streak:
            flush_streak()
    except BaseException:
        # Ctrl-C or a stopping error: cancel what has not started, keep what was already paid for
        pool.shutdown(wait=False, cancel_futures=True)
        for fut in [f for f in in_flight if not f.cancelled()]:
            try:
                answer, n = fut.result(timeout=30)
            except BaseException:  # the call in flight failed or is still hanging: nothing to keep
                continue
            store.put_many(version, [(in_flight[fut].rid, in_flight[fut].text, answer)])
            result.calls += n
        raise
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        store.release(owner)
    return result


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
