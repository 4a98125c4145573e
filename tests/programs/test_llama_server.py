"""Integration: the embedded model behind llama-cpp-python's OpenAI-compatible server, as a hosted LM (--llm_call).

The same weights as ``lm.model: local``, reached the way vLLM, Ollama or a hosted API would be:
``lm.model: openai/<name>`` plus ``lm.api_base``. Log-probabilities must come back over HTTP so the
answers carry probabilities, and each missing answer must be exactly one request.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

import labelloop
from labelloop.programs.lm import ModelNotAvailable, embedded_model_path
from tests.conftest import EXAMPLE

pytestmark = pytest.mark.llm_call

API_KEY = "sk-test-local-server-0123456789"
RECORDS = 6


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    """``python -m llama_cpp.server`` on the embedded GGUF, one thread; yields (api_base, its log file)."""
    try:
        import llama_cpp.server.app  # noqa: F401  (fastapi, sse-starlette, starlette-context, pydantic-settings)
    except ImportError as exc:
        pytest.skip(f"llama_cpp.server needs its extra: pip install 'llama-cpp-python[server]' ({exc})")
    try:
        model = embedded_model_path()
    except ModelNotAvailable as exc:
        pytest.skip(str(exc))
    port, log = _free_port(), tmp_path_factory.mktemp("llama-server") / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1",
                                 "--port", str(port), "--n_ctx", "2048", "--n_threads", "2", "--n_threads_batch", "2"],
                                stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                urllib.request.urlopen(f"{url}/models", timeout=2).read()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"llama_cpp.server did not start:\n{log.read_text()[-2000:]}")
                time.sleep(0.5)
        yield url, log
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def _chat_requests(log: Path) -> int:
    return len(re.findall(r'"POST /v1/chat/completions HTTP/1\.1" 200', log.read_text()))


def test_a_project_through_llama_cpp_server(llama_server, tmp_path, monkeypatch, capsys):
    url, log = llama_server
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)  # the server checks none; DSPy's client wants one
    records = pd.read_json(EXAMPLE / "records.jsonl", lines=True).head(RECORDS)
    config = {"name": "via-server", "taxonomy": str(EXAMPLE / "taxonomy.yaml"), "label_model": "majority",
              "lm": {"model": "openai/qwen2.5-coder-1.5b", "api_base": url, "max_concurrency": 1, "timeout_s": 300},
              "labelers": [{"type": "zero_shot"},
                           {"type": "prompt", "name": "asks_about_money", "answers": {"yes": "billing", "no": "abstain"},
                            "question": "Is the customer writing about a payment, a charge, a refund or an invoice?"},
                           {"type": "keywords", "name": "kw_billing", "label": "billing", "words": ["refund", "invoice"]}]}
    project = labelloop.load_project(config, base_dir=tmp_path, data=records)
    missing = sum(row["llm_calls"] for row in labelloop.plan(project))
    before = _chat_requests(log)
    labelloop.label(project)
    assert missing == 2 * RECORDS and _chat_requests(log) - before == missing

    result = labelloop.label_dataset(project, show_progress=False)  # from the store now
    assert result.llm_calls == 0 and _chat_requests(log) - before == missing
    for name, answers in result.splits["train"].answers.items():
        assert all(a is not None and a["probs"] for a in answers), (name, answers)
        assert all(abs(sum(a["probs"].values()) - 1) < 1e-6 for a in answers)
        # read from the returned log-probabilities: a one-hot fallback would be all 0s and 1s
        assert any(0 < p < 1 for a in answers for p in a["probs"].values()), (name, answers)
    out = capsys.readouterr()
    assert API_KEY not in out.out + out.err + log.read_text()
