"""ONNX export of the TF-IDF student: the exported graph predicts what the scikit-learn student predicts."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from labelloop.flows.cli import app
from labelloop.flows.config import ConfigError
from labelloop.flows.predict import Student, load_model
from labelloop.labelers.student import make_student

pytest.importorskip("onnxruntime")
pytest.importorskip("skl2onnx")

from labelloop.flows.export import OnnxStudent, check_exportable, export_onnx  # noqa: E402

# what the graph must split, lower-case and count as scikit-learn does: empty and blank texts, one-letter
# words, whitespace of every kind, upper-case letters outside ASCII, words longer than any in the batch
TRICKY = ["", "   ", "a", "!!", "I", "REFUND MY PAYMENT!!", "Refund\tmy\u00a0parcel\r\nnow,please", "Ünïcode ÇA  héllo_w0rld",
          "DELIVERY delivered Delivering", "pay-bill can't won't", "where's my parcel?" * 40, "😀 refund 😀", "日本語 ok",
          "Ωmega ÉCOLE Straße", "x" * 500, "\u2028line\u2029para\u3000ideographic space"]


@pytest.fixture
def run_copy(trained_run, tmp_path) -> Path:
    """A copy of the shared run folder, for tests that write into it or edit it."""
    return Path(shutil.copytree(trained_run, tmp_path / "run"))


def test_the_export_predicts_what_the_student_predicts(trained_run, tmp_path):
    result = export_onnx(trained_run, tmp_path / "student.onnx")
    print("parity on the run's dev and test texts:", result)  # shown with pytest -s
    path = Path(result["path"])
    assert path == tmp_path / "student.onnx" and path.is_file()
    heldout = sum(len(pd.read_parquet(trained_run / f"votes_{split}.parquet")) for split in ("dev", "test"))
    assert result["n_texts"] == heldout
    assert result["agreement"] == 1.0 and result["max_abs_diff"] < 1e-5
    assert result["docs_per_s_onnx"] > 0 and result["docs_per_s_sklearn"] > 0

    student, exported = load_model(trained_run), OnnxStudent(path)
    texts = pd.read_parquet(trained_run / "votes_train.parquet")["text"].tolist() + TRICKY
    assert np.abs(student.predict_proba(texts) - exported.predict_proba(texts)).max() < 1e-5
    for text in TRICKY:  # alone too: a batch's padding follows its longest text
        assert np.abs(student.predict_proba([text]) - exported.predict_proba([text])).max() < 1e-5, text
    assert exported.predict(texts)["label"] == student.predict(texts)["label"]
    assert exported.predict_proba([]).shape == (0, 3)

    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert exported.labels == metrics["labels"] == ["billing", "shipping", "other_topics"]
    assert exported.temperature == pytest.approx(metrics["calibration"]["temperature"])
    assert exported.threshold == pytest.approx(metrics["calibration"]["threshold"])
    assert exported.metadata["model_sha256"] == metrics["model_sha256"]
    assert exported.metadata["task"] == "multiclass" and exported.metadata["features"] == "tfidf"
    assert [o.name for o in exported.session.get_outputs()] == ["label", "probabilities"]


def test_letters_outside_ascii_and_every_kind_of_whitespace_are_handled_as_scikit_learn_does(tmp_path):
    import random

    from labelloop.flows.export import to_onnx
    from labelloop.labelers.student import fit_student

    rng = random.Random(0)
    letters = "abcdeyzABCDEYZ0189_àéöÀÉÖßẞçÇñÑσςαβΑΒжЖдДıIiǅǄǆ😀日本'-.,!?"  # no İ, no Σ: see flows/export.py
    spaces = [" ", " ", "  ", "\t", "\n", "\r\n", "\u00a0", "\u2003", "\u3000"]

    def text():
        words = ("".join(rng.choice(letters) for _ in range(rng.choice([1, 1, 2, 3, 5, 9]))) for _ in range(rng.randint(0, 20)))
        return "".join(w + rng.choice(spaces) for w in words)

    train = [text() for _ in range(300)]
    pipeline = fit_student(train, np.random.default_rng(0).dirichlet([1, 1, 1], size=len(train)),
                           student=make_student("tfidf", max_features=2000))
    student = Student(pipeline, {"labels": ["a", "b", "c"], "task": "multiclass", "model_sha256": "0" * 64,
                                 "calibration": {"temperature": 0.5}}, tmp_path / "model.skops")
    (tmp_path / "m.onnx").write_bytes(to_onnx(student).SerializeToString())
    texts = [text() for _ in range(500)] + train[:100]
    assert np.abs(student.predict_proba(texts) - OnnxStudent(tmp_path / "m.onnx").predict_proba(texts)).max() < 1e-5


def test_students_other_than_tfidf_multiclass_are_refused(run_copy, tmp_path):
    metrics = run_copy / "metrics.json"
    info = json.loads(metrics.read_text())
    for change, expected in (({"features": "tfidf+embeddings"}, "features 'tfidf+embeddings'"),
                             ({"task": "multilabel"}, "task is 'multilabel'")):
        metrics.write_text(json.dumps({**info, **change}))
        with pytest.raises(ConfigError, match="supports a multi-class student with student.features: tfidf") as error:
            export_onnx(run_copy, tmp_path / "x.onnx")
        assert expected in str(error.value)
    assert not (tmp_path / "x.onnx").exists()
    # the pipeline itself is checked too, whatever metrics.json says
    info = {"labels": ["a", "b"], "task": "multiclass"}
    with pytest.raises(ConfigError, match="feature 'embeddings' is SentenceEmbedder"):
        check_exportable(Student(make_student("tfidf+embeddings"), info, run_copy / "model.skops"))
    pipeline = make_student("tfidf")
    pipeline.named_steps["features"].transformer_list[1][1].set_params(ngram_range=(1, 5))
    with pytest.raises(ConfigError, match=r"feature 'chars' uses analyzer='char_wb' with ngram_range=\(1, 5\)"):
        check_exportable(Student(pipeline, info, run_copy / "model.skops"))


@pytest.mark.parametrize("value", [1.01, 0, -0.5, True, "0.9"])
def test_min_agreement_must_be_in_zero_one(trained_run, tmp_path, value):
    with pytest.raises(ConfigError, match=r"min_agreement must be a number in \(0, 1\]"):
        export_onnx(trained_run, tmp_path / "x.onnx", min_agreement=value)


def test_disagreement_below_min_agreement_writes_nothing_unless_forced(trained_run, tmp_path, monkeypatch, caplog):
    run = OnnxStudent.predict_proba
    monkeypatch.setattr(OnnxStudent, "predict_proba", lambda self, texts: run(self, texts)[:, ::-1])  # labels swapped
    out = tmp_path / "out" / "student.onnx"
    with pytest.raises(ConfigError, match=r"same label as the scikit-learn student on \d+\.\d\d% of 120 texts, below "
                                          r"min_agreement 99\.00%.*nothing written"):
        export_onnx(trained_run, out)
    assert not out.exists() and not list(out.parent.iterdir())  # no temporary file left behind either
    with caplog.at_level(logging.WARNING, logger="labelloop"):
        result = export_onnx(trained_run, out, force=True)
    assert out.is_file() and result["agreement"] < 0.99
    assert "writing it anyway" in caplog.text


def test_the_command_line_exports_beside_the_model(run_copy):
    result = CliRunner().invoke(app, ["export", str(run_copy)])
    assert result.exit_code == 0, result.output
    assert "agreement with the scikit-learn student: 100.00% of 120" in result.output
    assert (run_copy / "model.onnx").is_file() and str(run_copy / "model.onnx") in result.output.replace("\n", "")

    result = CliRunner().invoke(app, ["export", str(run_copy), "--format", "pmml"])
    assert result.exit_code == 2 and "--format must be onnx" in result.output
    result = CliRunner().invoke(app, ["export", str(run_copy), "--min-agreement", "1.5", "-o", str(run_copy / "y.onnx")])
    assert result.exit_code == 2 and "min_agreement must be a number in (0, 1]" in result.output
    assert not (run_copy / "y.onnx").exists()
