"""The example project against a real OpenAI-compatible HTTP server: counts, concurrency, retries, no leaked key.

Everything goes through the public API (``labelloop.load_project`` / ``plan`` / ``label``) and the
config's ``lm:`` block, so DSPy's own OpenAI client, HTTP and the thread pool are all exercised.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

import pytest
import yaml

import labelloop
from tests.fake_openai import Failure, FakeOpenAIServer, answered_by

API_KEY = "sk-test-secret-0123456789abcdef"


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)


def _project(config_path: Path, url: str, *, max_concurrency: int = 4, records: int | None = None, **lm):
    """The example project answered by ``url``; ``records``: keep only the first lines of each data file."""
    return labelloop.load_project(answered_by(config_path, url, keep=records, max_concurrency=max_concurrency, **lm))


def _missing(project) -> int:
    return sum(row["llm_calls"] for row in labelloop.plan(project))


def test_requests_equal_missing_answers_and_a_rerun_makes_none(example_project):
    with FakeOpenAIServer() as server:
        project = _project(example_project, server.url)
        missing = _missing(project)
        assert missing == 560  # 280 records, two LLM labelers
        run_dir = labelloop.label(project)
        assert server.requests == missing
        assert _missing(labelloop.load_project(example_project)) == 0
        labelloop.label(labelloop.load_project(example_project))
        assert server.requests == missing  # every answer came from the store
    body = server.bodies[0]
    assert body["logprobs"] is True and body["model"] == "fake-model"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["llm_calls"] == missing


@pytest.mark.parametrize("max_concurrency", [1, 4])
def test_max_concurrency_bounds_requests_in_flight(example_project, max_concurrency):
    with FakeOpenAIServer(delay=0.2) as server:
        project = _project(example_project, server.url, max_concurrency=max_concurrency, records=4)
        missing = _missing(project)
        labelloop.label(project)
    assert server.requests == missing == 2 * 12
    assert server.max_in_flight == max_concurrency


def _first_ask_fails(failure: Failure):
    """A ``fail`` rule: the first request for each (prompt, record) fails as ``failure``; its retry is answered."""
    seen, lock = set(), threading.Lock()

    def fail(number: int, body: dict) -> Failure | None:
        key = json.dumps(body["messages"], sort_keys=True)
        with lock:
            if key in seen:
                return None
            seen.add(key)
        return failure

    return fail


@pytest.mark.parametrize("failure", [Failure(429, retry_after=0), Failure(500)], ids=["429", "500"])
def test_transient_errors_are_retried_until_every_answer_arrives(example_project, monkeypatch, failure):
    if failure.status == 500:  # no Retry-After: skip the backoff's sleep (its delays are tested in test_calls)
        monkeypatch.setattr("labelloop.programs.calls.backoff", lambda *a, **k: 0.0)
    with FakeOpenAIServer(fail=_first_ask_fails(failure)) as server:
        project = _project(example_project, server.url, records=10)
        missing = _missing(project)
        labelloop.label(project)
        assert server.requests == 2 * missing  # one failed and one answered request per ask
        assert _missing(labelloop.load_project(example_project)) == 0  # every answer is stored


def test_the_api_key_is_sent_but_never_written_or_logged(example_project, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    with FakeOpenAIServer(fail={1: Failure(429, retry_after=0)}) as server:
        project = _project(example_project, server.url, records=6)
        run_dir = labelloop.label(project)
    with FakeOpenAIServer(fail=lambda n, body: Failure(401, message="Incorrect API key provided")) as rejecting:
        config = yaml.safe_load(example_project.read_text())
        config["lm"]["api_base"], config["store"] = rejecting.url, "other-store.sqlite"
        example_project.write_text(yaml.safe_dump(config))
        with pytest.raises(labelloop.LabelloopError, match="Incorrect API key") as info:  # a wrong key stops the run
            labelloop.label(labelloop.load_project(example_project))
    assert set(server.authorization) == set(rejecting.authorization) == {f"Bearer {API_KEY}"}
    assert 1 <= rejecting.requests <= 4 and API_KEY not in str(info.value)  # not retried: at most the asks in flight
    written = [p for p in example_project.parent.rglob("*") if p.is_file()]
    assert any(p.is_relative_to(run_dir) for p in written)
    for path in written:
        assert API_KEY.encode() not in path.read_bytes(), path
    out = capsys.readouterr()
    assert API_KEY not in out.out + out.err
    assert API_KEY not in caplog.text


def test_credentials_in_api_base_reach_no_output_or_log(example_project, capsys, caplog):
    """The OpenAI client cannot use a user:password@ URL (it tries to resolve "bob:...@127.0.0.1"), so the run
    stops; what matters is that the credentials are in no message, log line, stored failure or run file."""
    caplog.set_level(logging.DEBUG)
    secret = "hunter2-basic-auth-pw"
    with FakeOpenAIServer() as server:
        url = server.url.replace("http://", f"http://bob:{secret}@")
        project = _project(example_project, url, records=4, retries=1)
        with pytest.raises(labelloop.LLMUnavailable) as info:
            labelloop.run(project)
    assert secret not in str(info.value) and "***@127.0.0.1" in str(info.value)
    written = [p for p in example_project.parent.rglob("*") if p.is_file() and p != example_project]
    assert any(p.suffix == ".sqlite" for p in written)
    for path in written:
        assert secret.encode() not in path.read_bytes(), path
    out = capsys.readouterr()
    assert secret not in out.out + out.err and secret not in caplog.text
