"""The student as deployed: calibration and abstaining chosen on dev, metadata, and a model file that changed."""

import json
import shutil

import numpy as np
import pytest

import labelloop
from labelloop.flows.predict import load_model


def test_the_run_records_calibration_and_the_abstain_threshold(trained_run):
    metrics = json.loads((trained_run / "metrics.json").read_text())
    cal = metrics["calibration"]
    assert cal["target"] == {"precision": 0.9} and 0 < cal["threshold"] < 1 and cal["temperature"] > 0
    assert cal["dev"]["precision"] >= 0.9  # chosen on dev to reach it
    for split in ("dev", "test"):
        assert 0 <= cal[split]["ece"] <= 1 and 0 < cal[split]["coverage"] <= 1 and cal[split]["n"] > 0
    assert len(metrics["model_sha256"]) == 64 and len(metrics["training_data_sha256"]) == 64
    assert "calibration error" in (trained_run / "model_card.md").read_text()


def test_predictions_abstain_below_the_threshold(trained_run):
    student = load_model(trained_run)
    texts = ["I was charged twice, refund please", "zzz qqq"]
    out = labelloop.predict(student, texts)
    assert out["label"].tolist()[0] == "billing"
    assert (out["abstain"] == (out["confidence"] < student.threshold)).all()
    never = labelloop.predict(trained_run, texts, threshold=0.0)
    assert not never["abstain"].any() and never["label"].tolist() == out["label"].tolist()
    always = labelloop.predict(trained_run, texts, threshold=1.01)
    assert always["abstain"].all()


def test_calibrated_probabilities_are_the_tempered_raw_ones(trained_run):
    from labelloop.labelers.calibration import with_temperature

    student = load_model(trained_run)
    texts = ["refund my order", "where is my parcel", "the app crashes"]
    raw = student.pipeline.predict_proba(texts)
    assert np.allclose(student.predict_proba(texts), with_temperature(raw, student.calibration["temperature"]))
    assert (student.predict_proba(texts).argmax(axis=1) == raw.argmax(axis=1)).all()


def test_metadata_names_labels_hashes_and_scores(trained_run):
    meta = load_model(trained_run).metadata()
    assert meta["labels"] == ["billing", "shipping", "other_topics"] and meta["task"] == "multiclass"
    assert meta["scores"]["test"]["accuracy"] > 0.5 and meta["threshold"] > 0
    assert len(meta["model_sha256"]) == 64 and meta["labelloop_version"]


def test_a_model_file_changed_after_training_is_refused(trained_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(trained_run, copy)
    data = bytearray((copy / "model.skops").read_bytes())
    data[-10] ^= 0xFF
    (copy / "model.skops").write_bytes(bytes(data))
    with pytest.raises(labelloop.ConfigError, match="does not match the SHA-256"):
        load_model(copy)
    (copy / "metrics.json").write_text("{not json")
    with pytest.raises(labelloop.ConfigError, match="not valid JSON"):
        load_model(copy)
