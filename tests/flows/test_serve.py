"""The student over real HTTP on loopback: predictions, thresholds, metadata, the schema, and every limit."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time

import httpx
import numpy as np
import pytest
import uvicorn
from typer.testing import CliRunner

from labelloop.flows.cli import app as cli
from labelloop.flows.predict import Student, load_model
from labelloop.flows.serve import ENVIRONMENT, MAX_BATCH, MAX_BODY_BYTES, MAX_TEXT_CHARS, make_app
from labelloop.programs.errors import ConfigError

LABELS = ["billing", "shipping", "other_topics"]
LIMITS = {"max_batch": 4, "max_text_chars": 200, "max_body_bytes": 2048}


class _Server:
    """A uvicorn server for ``app`` in a background thread, on a free loopback port."""

    def __init__(self, app):
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", access_log=False,
                                                    lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def student(trained_run) -> Student:
    return load_model(trained_run)


@pytest.fixture(scope="module")
def client(student):
    with _Server(make_app(student, **LIMITS)) as url, httpx.Client(base_url=url, timeout=10) as http:
        yield http


def _refused(response, status: int, *expected: str) -> str:
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail
    for text in expected:
        assert text in detail, detail
    return detail


def test_predict_a_batch(client, student):
    texts = ["I was charged twice, please refund me", "My parcel never arrived", "zzz qqq", ""]
    response = client.post("/predict", json={"texts": texts})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_sha256"] == student.metadata()["model_sha256"] and body["threshold"] == student.threshold
    predictions = body["predictions"]
    assert len(predictions) == len(texts)
    for p in predictions:
        assert p["label"] in LABELS and set(p["probabilities"]) == set(LABELS)
        assert sum(p["probabilities"].values()) == pytest.approx(1.0)
        assert p["confidence"] == pytest.approx(max(p["probabilities"].values()))
        assert p["probabilities"][p["label"]] == p["confidence"]
        assert p["abstain"] == (p["confidence"] < student.threshold)
    assert predictions[0]["label"] == "billing" and predictions[1]["label"] == "shipping"
    expected = student.predict(texts)  # the same answers as the Python API
    assert [p["label"] for p in predictions] == expected["label"]
    assert [p["abstain"] for p in predictions] == expected["abstain"].tolist()
    assert np.allclose([p["confidence"] for p in predictions], expected["confidence"])


def test_the_request_threshold_overrides_the_runs(client):
    texts = ["I was charged twice, please refund me", "zzz qqq"]
    never = client.post("/predict", json={"texts": texts, "threshold": 0}).json()
    assert never["threshold"] == 0 and not any(p["abstain"] for p in never["predictions"])
    always = client.post("/predict", json={"texts": texts, "threshold": 1.01}).json()
    assert all(p["abstain"] for p in always["predictions"])
    assert [p["label"] for p in always["predictions"]] == [p["label"] for p in never["predictions"]]
    _refused(client.post("/predict", json={"texts": texts, "threshold": -1}), 422, "threshold")
    _refused(client.post("/predict", json={"texts": texts, "threshold": "high"}), 422, "threshold")


def test_health_metadata_and_schema(client, student):
    assert client.get("/health").json() == {"status": "ok"}
    meta = client.get("/metadata").json()
    assert meta["labels"] == LABELS and meta["task"] == "multiclass"
    assert meta["model_sha256"] == student.metadata()["model_sha256"] and len(meta["model_sha256"]) == 64
    assert meta["threshold"] == student.threshold and meta["limits"] == LIMITS
    schema = client.get("/openapi.json").json()
    assert set(schema["paths"]) >= {"/predict", "/health", "/metadata"}
    post = schema["paths"]["/predict"]["post"]
    assert {"200", "413", "422"} <= set(post["responses"])
    request = schema["components"]["schemas"]["PredictRequest"]["properties"]["texts"]
    assert request["maxItems"] == LIMITS["max_batch"] and request["minItems"] == 1
    assert request["items"]["maxLength"] == LIMITS["max_text_chars"]
    assert "MulticlassPrediction" in schema["components"]["schemas"]
    assert client.get("/docs").status_code == 200


def test_too_many_texts(client):
    _refused(client.post("/predict", json={"texts": ["refund"] * 5}), 413, "5 texts", "at most 4 (max_batch)")


def test_a_text_too_long_is_named_by_its_index(client):
    detail = _refused(client.post("/predict", json={"texts": ["refund", "x" * 201]}), 422,
                      "texts[1]", "201 characters", "at most 200 (max_text_chars)")
    assert "xxxx" not in detail  # the text is not echoed back


def test_malformed_requests(client):
    _refused(client.post("/predict", json={"texts": []}), 422, "texts is empty")
    _refused(client.post("/predict", json={"texts": ["refund", 3, None]}), 422,
             "texts[1] must be a string, got int", "texts[2] must be a string, got null")
    _refused(client.post("/predict", json={"texts": "refund"}), 422, "texts")
    _refused(client.post("/predict", json={"text": ["refund"]}), 422, "texts is missing")
    _refused(client.post("/predict", json=["refund"]), 422, "JSON object")
    _refused(client.post("/predict", content=b"{not json", headers={"content-type": "application/json"}), 422,
             "not valid JSON")
    assert client.get("/predict").status_code == 405


def test_a_body_over_the_limit_is_refused_before_parsing(client):
    big = json.dumps({"texts": ["a" * 150] * 4, "pad": "b" * 3000}).encode()
    _refused(client.post("/predict", content=big, headers={"content-type": "application/json"}), 413,
             f"{len(big)} bytes", "at most 2048 (max_body_bytes)")

    def chunks():  # no Content-Length: counted as it arrives
        for _ in range(10):
            yield b"x" * 500

    _refused(client.post("/predict", content=chunks(), headers={"content-type": "application/json"}), 413,
             "more than 2048 bytes")
    assert client.get("/health").status_code == 200  # the server still answers


def test_a_tampered_or_missing_model_refuses_to_start(trained_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(trained_run, copy)
    data = bytearray((copy / "model.skops").read_bytes())
    data[-10] ^= 0xFF
    (copy / "model.skops").write_bytes(bytes(data))
    with pytest.raises(ConfigError, match="does not match the SHA-256"):
        make_app(copy)
    with pytest.raises(ConfigError, match="nowhere does not exist: expected a run folder"):
        make_app(tmp_path / "nowhere")
    (copy / "metrics.json").unlink()
    with pytest.raises(ConfigError, match="metrics.json is missing"):
        make_app(copy)
    with pytest.raises(ConfigError, match="max_batch must be a positive"):
        make_app(trained_run, max_batch=0)


def test_defaults_are_sensible(trained_run):
    assert (MAX_BATCH, MAX_TEXT_CHARS, MAX_BODY_BYTES) == (256, 20_000, 4 * 1024 * 1024)
    meta = next(r for r in make_app(trained_run).routes if getattr(r, "path", "") == "/metadata").endpoint()
    assert json.loads(meta.body)["limits"] == {"max_batch": 256, "max_text_chars": 20_000, "max_body_bytes": 4 << 20}


class _FixedProba:
    def predict_proba(self, texts):
        return np.tile([0.9, 0.2, 0.6], (len(texts), 1))[:, : len(LABELS)]


def test_a_multilabel_student(tmp_path):
    info = {"name": "ml", "task": "multilabel", "labels": LABELS, "model_sha256": "0" * 64,
            "calibration": {"thresholds": [0.5, 0.5, 0.7]}}
    with _Server(make_app(Student(_FixedProba(), info, tmp_path / "model.skops"))) as url:
        body = httpx.post(f"{url}/predict", json={"texts": ["a", "b"]}).json()
        assert body["threshold"] == [0.5, 0.5, 0.7]
        assert body["predictions"][0] == {"labels": ["billing"], "top_label": "billing", "confidence": 0.9,
                                          "abstain": False,
                                          "probabilities": {"billing": 0.9, "shipping": 0.2, "other_topics": 0.6}}
        lower = httpx.post(f"{url}/predict", json={"texts": ["a"], "threshold": 0.1}).json()
        assert lower["predictions"][0]["labels"] == LABELS and lower["threshold"] == [0.1] * 3
        assert httpx.get(f"{url}/openapi.json").json()["components"]["schemas"]["MultilabelPrediction"]


def test_the_command_line(trained_run, tmp_path, monkeypatch):
    result = CliRunner().invoke(cli, ["serve", str(tmp_path / "missing")])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "missing does not exist" in lines[0], result.output

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: calls.append((app, options)))
    monkeypatch.setenv(ENVIRONMENT, "")  # restored after the test
    result = CliRunner().invoke(cli, ["serve", str(trained_run), "--port", "8123", "--max-batch", "8"])
    assert result.exit_code == 0, result.output
    assert "http://127.0.0.1:8123" in result.output and "http://127.0.0.1:8123/docs" in result.output
    app, options = calls[-1]
    assert options["port"] == 8123 and options["log_level"] == "warning"
    assert app.routes and next(r for r in app.routes if getattr(r, "path", "") == "/predict")

    result = CliRunner().invoke(cli, ["serve", str(trained_run), "--workers", "2", "--max-text-chars", "99"])
    assert result.exit_code == 0, result.output
    target, options = calls[-1]
    assert options["factory"] and options["workers"] == 2 and target.endswith(":app_from_environment")
    settings = json.loads(os.environ[ENVIRONMENT])
    assert settings["max_text_chars"] == 99 and settings["model"] == str(trained_run.resolve())

    result = CliRunner().invoke(cli, ["serve", str(trained_run), "--max-batch", "0"])
    assert result.exit_code == 2
