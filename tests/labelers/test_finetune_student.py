"""The fine-tuned encoder student (``student: {features: finetune}``): training on soft labels, safe save and load."""

import io
import json
import zipfile

import numpy as np
import pytest

from labelloop.flows.config import parse_config
from labelloop.flows.predict import load_student, predict, save_student
from labelloop.labelers.student import FinetunedEncoder, fit_student, make_student, predict_proba_full
from labelloop.programs.digest import file_sha256
from labelloop.programs.errors import ConfigError

REFUND = ["refund my money", "charged twice, refund please", "the invoice is wrong, refund it",
          "I want a refund for this charge", "give my money back", "billing error, refund me"]
PARCEL = ["my parcel is late", "where is my parcel", "the parcel never arrived", "the delivery got lost",
          "my package did not come", "shipping takes forever"]
TEXTS = REFUND * 2 + PARCEL * 2  # 24 texts
P = np.array([[0.9, 0.1, 0.0]] * 12 + [[0.15, 0.85, 0.0]] * 12)  # class 2 never gets weight
QUERIES = ["I need a refund for my invoice", "my parcel was lost in shipping", "refund", "parcel"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def student(one_thread):
    pipeline = make_student("finetune", seed=0)
    pipeline[-1].set_params(epochs=1, batch_size=4, lr=1e-4, head_lr=1e-2)  # tiny data: 6 steps
    return fit_student(TEXTS, P, student=pipeline)


def test_finetuned_student_learns_the_soft_labels(student):
    assert isinstance(student[-1], FinetunedEncoder)
    assert student.classes_.tolist() == [0, 1]  # the class without weight is left out
    full = predict_proba_full(student, QUERIES, 3)
    assert full.shape == (4, 3) and np.allclose(full.sum(axis=1), 1) and (full[:, 2] == 0).all()
    assert full.argmax(axis=1).tolist() == [0, 1, 0, 1]
    assert student.predict(QUERIES).tolist() == [0, 1, 0, 1]


def test_training_is_seeded(student):
    again = FinetunedEncoder(epochs=1, batch_size=4, lr=1e-4, head_lr=1e-2, seed=0).fit_soft(TEXTS, P[:, :2])
    assert again.weights_sha256_ == student[-1].weights_sha256_


def test_fit_takes_rows_per_class_like_the_other_students():
    """sklearn's fit(X, y, sample_weight): rows of the same text add up to its soft label (no training here)."""
    captured = {}

    class Spy(FinetunedEncoder):
        def _fit(self, texts, Q, weight, classes):
            captured.update(texts=texts, Q=Q, weight=weight, classes=classes)
            return self

    Spy().fit(["a", "a", "b"], [0, 2, 2], sample_weight=[0.75, 0.25, 1.0])
    assert captured["texts"] == ["a", "b"] and captured["classes"].tolist() == [0, 2]
    assert np.allclose(captured["Q"], [[0.75, 0.25], [0.0, 1.0]]) and np.allclose(captured["weight"], [1, 1])


def test_save_and_load_give_identical_probabilities(student, tmp_path):
    path = save_student(student, tmp_path / "model.skops")
    loaded = load_student(path)
    assert isinstance(loaded[-1], FinetunedEncoder) and loaded.classes_.tolist() == [0, 1]
    np.testing.assert_array_equal(loaded.predict_proba(QUERIES), student.predict_proba(QUERIES))
    names = zipfile.ZipFile(path).namelist()
    assert all(n == "schema.json" or n.endswith(".npy") for n in names)  # the weights as plain arrays, no pickle


def test_a_run_folder_with_a_finetuned_student_predicts(student, tmp_path):
    path = save_student(student, tmp_path / "model.skops")
    metrics = {"labels": ["refund", "parcel", "other"], "task": "multiclass", "features": "finetune",
               "model_sha256": file_sha256(path)}
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    out = predict(tmp_path, QUERIES[:2])
    assert out["label"].tolist() == ["refund", "parcel"]


def _rewrite(path, out, change):
    """A copy of a skops file with ``change(name, bytes) -> bytes`` applied to each entry."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(buffer, "w") as dst:
        for item in src.infolist():
            dst.writestr(item, change(item.filename, src.read(item.filename)))
    out.write_bytes(buffer.getvalue())
    return out


def test_changed_weights_or_types_are_refused(student, tmp_path):
    path = save_student(student, tmp_path / "model.skops")
    target = student[-1].weights_["head.bias"]

    def bump_head_bias(name, data):
        if name.endswith(".npy"):
            array = np.load(io.BytesIO(data), allow_pickle=False)
            if array.shape == target.shape and np.array_equal(array, target):
                array = array + np.float32(0.5)
                buf = io.BytesIO()
                np.save(buf, array, allow_pickle=False)
                return buf.getvalue()
        return data

    changed = _rewrite(path, tmp_path / "changed.skops", bump_head_bias)
    with pytest.raises(ConfigError, match="SHA-256"):
        load_student(changed)
    renamed = _rewrite(path, tmp_path / "renamed.skops",
                       lambda name, data: data.replace(b'"FinetunedEncoder"', b'"Evil"') if name == "schema.json" else data)
    with pytest.raises(ConfigError, match="refusing"):
        load_student(renamed)


def test_config_accepts_finetune_and_refuses_it_for_multilabel():
    base = {"name": "t", "data": "train.jsonl", "taxonomy": [{"name": "a"}, {"name": "b"}],
            "labelers": [{"type": "keywords", "name": "k", "label": "a", "words": ["x"]}],
            "student": {"features": "finetune"}}
    assert parse_config(base).student.features == "finetune"
    with pytest.raises(ConfigError, match="multi-class student only"):
        parse_config({**base, "task": "multilabel"})


def test_multilabel_is_refused():
    with pytest.raises(ValueError, match="multi-class student only"):
        make_student("finetune", multilabel=True)
    with pytest.raises(ValueError, match="multi-class only"):
        FinetunedEncoder().fit_soft(["a", "b"], np.array([[1.0, 1.0], [0.0, 1.0]]))  # label sets, not distributions
    with pytest.raises(ValueError, match="multi-class only"):
        FinetunedEncoder().fit(["a", "b"], np.array([[1, 0], [1, 1]]))
