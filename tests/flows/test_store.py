"""The vote store under crashes, interrupts, concurrent runs and failing LLMs (no LLM: asks are plain functions)."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from labelloop.flows.store import VoteStore, stored_or_asked
from labelloop.programs.errors import LLMUnavailable

ROOT = Path(__file__).resolve().parents[2]

# A child process that asks through stored_or_asked; each ask first appends to a "paid" file (what an
# LLM server would bill), then sleeps, then answers. The parent kills or interrupts it.
CHILD = textwrap.dedent("""
    import os, sys, time
    from labelloop.flows.store import VoteStore, stored_or_asked
    store_path, paid_path = sys.argv[1], sys.argv[2]
    n, delay, concurrency = int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
    start = sys.argv[6] if len(sys.argv) > 6 else None  # wait for this file: runs that start together
    if start:
        open(f"{start}.{os.getpid()}", "w").close()
        while not os.path.exists(start):
            time.sleep(0.01)

    def ask(text):
        with open(paid_path, "a") as paid:
            paid.write(text + "\\n")
        time.sleep(delay)
        return {"answer": text.upper()}, 1

    with VoteStore(store_path) as store:
        got = stored_or_asked(store, "v1", [(f"r{i}", f"text {i}") for i in range(n)], ask, name="child",
                              show_progress=False, max_concurrency=concurrency, poll_s=0.05)
    print("calls", got.calls, flush=True)
""")


def _child(tmp_path: Path, n: int, delay: float, concurrency: int = 1, start: Path | None = None) -> subprocess.Popen:
    args = [str(tmp_path / "votes.sqlite"), str(tmp_path / "paid.txt"), str(n), str(delay), str(concurrency)]
    return subprocess.Popen([sys.executable, "-c", CHILD, *args, *([str(start)] if start else [])], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)


def _paid(tmp_path: Path) -> list[str]:
    path = tmp_path / "paid.txt"
    return path.read_text().splitlines() if path.exists() else []


def _stored(tmp_path: Path, n: int) -> dict:
    with VoteStore(tmp_path / "votes.sqlite") as store:
        return store.get_many("v1", [(f"r{i}", f"text {i}") for i in range(n)])


def _wait_for_paid(tmp_path: Path, count: int, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while len(_paid(tmp_path)) < count:
        assert time.time() < deadline, f"the child paid only {len(_paid(tmp_path))} calls"
        time.sleep(0.01)


def test_sigkill_loses_no_answer_the_llm_returned(tmp_path):
    child = _child(tmp_path, n=40, delay=0.05, concurrency=2)
    _wait_for_paid(tmp_path, 10)
    child.send_signal(signal.SIGKILL)
    child.wait()
    paid, stored = _paid(tmp_path), _stored(tmp_path, 40)
    assert len(stored) >= len(paid) - 2  # at most the calls in flight are lost
    rerun = _child(tmp_path, n=40, delay=0.0)
    assert rerun.communicate()[0].split() == ["calls", str(40 - len(stored))]
    assert len(_stored(tmp_path, 40)) == 40 and len(_paid(tmp_path)) <= 40 + 2


def test_ctrl_c_cancels_pending_calls_and_keeps_the_answers(tmp_path):
    child = _child(tmp_path, n=40, delay=0.3)
    _wait_for_paid(tmp_path, 3)
    child.send_signal(signal.SIGINT)
    child.wait(timeout=30)
    assert child.returncode != 0
    paid = _paid(tmp_path)
    assert len(paid) <= 4  # the call in flight finishes; nothing pending starts
    assert len(_stored(tmp_path, 40)) == len(paid)  # and what was paid for is stored


def test_two_runs_on_one_store_pay_once(tmp_path):
    start = tmp_path / "start"
    runs = [_child(tmp_path, n=40, delay=0.02, start=start) for _ in range(2)]
    deadline = time.time() + 120
    while len(list(tmp_path.glob("start.*"))) < 2:  # both imported and ready: they overlap for sure
        assert time.time() < deadline, "the runs did not start"
        time.sleep(0.01)
    start.touch()
    calls = [int(run.communicate()[0].split()[1]) for run in runs]
    assert sum(calls) == 40 and len(_paid(tmp_path)) == 40
    assert min(calls) > 0  # both did some of the work
    assert len(_stored(tmp_path, 40)) == 40


def test_a_claim_of_a_killed_run_lapses(tmp_path):
    with VoteStore(tmp_path / "votes.sqlite") as store:
        from labelloop.flows.store import text_hash

        assert store.claim("v1", [text_hash("text 0")], "dead-run", lease_s=0.2) == {text_hash("text 0")}
        started = time.time()
        got = stored_or_asked(store, "v1", [("r0", "text 0")], lambda t: ({"answer": t}, 1), name="x",
                              show_progress=False, poll_s=0.05)
        assert got.calls == 1 and got.answers["r0"] == {"answer": "text 0"} and time.time() - started >= 0.15


def test_answers_are_found_by_text_not_by_id(tmp_path):
    asked = []

    def ask(text):
        asked.append(text)
        return {"answer": text}, 1

    with VoteStore(tmp_path / "votes.sqlite") as store:
        # the same id in two files with different texts: two questions, two answers
        got = stored_or_asked(store, "v1", [("1", "train text"), ("1b", "test text")], ask, name="x", show_progress=False)
        assert got.answers == {"1": {"answer": "train text"}, "1b": {"answer": "test text"}}
        # the same text under another id is not asked again; a changed text is
        again = stored_or_asked(store, "v1", [("7", "train text"), ("1", "changed text")], ask, name="x",
                                show_progress=False)
        assert again.answers == {"7": {"answer": "train text"}, "1": {"answer": "changed text"}}
        assert asked == ["train text", "test text", "changed text"]
        # two records with one text in one run: asked once
        stored_or_asked(store, "v1", [("a", "same"), ("b", "same")], ask, name="x", show_progress=False)
        assert asked.count("same") == 1


def test_a_record_that_keeps_failing_is_given_up_after_max_attempts(tmp_path):
    def ask(text):
        if text == "poison":
            raise ValueError("the model cannot answer this")
        return {"answer": text}, 1

    items = [("ok1", "fine"), ("bad", "poison"), ("ok2", "also fine")]
    with VoteStore(tmp_path / "votes.sqlite") as store:
        for attempt in (1, 2, 3):
            got = stored_or_asked(store, "v1", items, ask, name="x", show_progress=False, max_attempts=3)
            assert got.failed["bad"][0] == attempt and "cannot answer" in got.failed["bad"][1]
        got = stored_or_asked(store, "v1", items, ask, name="x", show_progress=False, max_attempts=3)
        assert (got.gave_up, got.calls, set(got.answers)) == (1, 0, {"ok1", "ok2"})


def test_consecutive_failures_stop_the_run_without_blaming_the_records(tmp_path):
    calls = []

    def ask(text):
        calls.append(text)
        raise ConnectionError("connection refused")

    items = [(f"r{i}", f"t{i}") for i in range(20)]
    with VoteStore(tmp_path / "votes.sqlite") as store:
        with pytest.raises(LLMUnavailable, match="5 LLM calls in a row failed.*connection refused"):
            stored_or_asked(store, "v1", items, ask, name="x", show_progress=False, stop_after=5)
        assert len(calls) == 5 and store.failures("v1", items) == {}


def test_a_fatal_error_stops_at_once_and_carries_no_credentials(tmp_path):
    import traceback

    def ask(text):
        raise PermissionError("401 invalid api key for http://bob:hunter2@h/v1?key=K-PLANTED (sk-proj-PLANTED12345)")

    with VoteStore(tmp_path / "votes.sqlite") as store:
        with pytest.raises(LLMUnavailable, match="refused the request.*invalid api key") as info:
            stored_or_asked(store, "v1", [("a", "x"), ("b", "y")], ask, name="x", show_progress=False,
                            fatal=lambda exc: isinstance(exc, PermissionError))
    printed = "".join(traceback.format_exception(info.value))  # what Python prints for an uncaught error
    assert "PermissionError" in printed
    assert [secret for secret in ("hunter2", "K-PLANTED", "PLANTED12345") if secret in printed] == []


def test_progress_is_logged_for_runs_without_a_terminal(tmp_path, caplog):
    def ask(text):
        time.sleep(0.01)
        return {"answer": text}, 1

    with VoteStore(tmp_path / "votes.sqlite") as store, caplog.at_level("INFO", logger="labelloop"):
        stored_or_asked(store, "v1", [(f"r{i}", f"t{i}") for i in range(30)], ask, name="zero_shot",
                        show_progress=False, log_every=0.05)
    lines = [r.getMessage() for r in caplog.records if "asked" in r.getMessage()]
    assert lines and all("zero_shot:" in m and "/30 asked" in m and "calls/s" in m and "s left" in m for m in lines)


def test_store_writers_do_not_block_each_other_for_long(tmp_path):
    path = tmp_path / "votes.sqlite"
    errors = []

    def writer(k):
        try:
            with VoteStore(path) as store:
                for i in range(50):
                    store.put_many("v1", [(f"{k}-{i}", f"{k} text {i}", {"answer": i})])
        except Exception as exc:  # pragma: no cover - the assertion below reports it
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with VoteStore(path) as store:
        assert not errors and store.count() == 200

