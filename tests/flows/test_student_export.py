import numpy as np
import pytest
import skops.io as sio
from sklearn.tree import DecisionTreeClassifier

from labelloop.flows.config import ConfigError
from labelloop.flows.predict import load_student, save_student
from labelloop.labelers.student import fit_student, make_student

TEXTS = ["refund my money", "charged twice, refund please", "parcel is late", "where is my parcel",
         "invoice wrong refund", "parcel never arrived"] * 4
P = np.array([[0.9, 0.1], [0.8, 0.2], [0.2, 0.8], [0.1, 0.9], [0.7, 0.3], [0.3, 0.7]] * 4)


@pytest.mark.parametrize("features", ["tfidf", "embeddings", "tfidf+embeddings"])
def test_student_round_trips_through_skops(tmp_path, features):
    student = fit_student(TEXTS, P, student=make_student(features))
    path = save_student(student, tmp_path / "model.skops")
    loaded = load_student(path)
    probe = ["my refund is missing", "the parcel is lost"]
    assert np.allclose(loaded.predict_proba(probe), student.predict_proba(probe))
    assert loaded.predict(probe).tolist() == [0, 1]


def test_unexpected_types_are_refused(tmp_path):
    path = tmp_path / "other.skops"
    sio.dump(DecisionTreeClassifier().fit([[0], [1]], [0, 1]), path)
    with pytest.raises(ConfigError, match="never holds"):
        load_student(path)


def test_not_a_model_file(tmp_path):
    path = tmp_path / "x.skops"
    path.write_text("hello")
    with pytest.raises(ConfigError, match="not a skops model file"):
        load_student(path)


def test_a_model_naming_an_unknown_embedding_package_is_refused_before_anything_is_imported(tmp_path, monkeypatch):
    import importlib
    import sys

    student = make_student("tfidf+embeddings")
    student.set_params(features__embeddings__package="this")  # `import this` prints the Zen of Python
    path = tmp_path / "crafted.skops"
    sio.dump(student, path)
    imported = []
    real = importlib.import_module
    monkeypatch.setattr(importlib, "import_module", lambda name, *a, **k: imported.append(name) or real(name, *a, **k))
    with pytest.raises(ConfigError, match="'this', not one labelloop knows"):
        load_student(path)
    assert "this" not in imported and "this" not in sys.modules


def test_the_trusted_types_are_exactly_what_students_hold():
    from labelloop.flows.predict import TRUSTED_TYPES

    found = set()
    for features in ("tfidf", "embeddings"):
        for multilabel in (False, True):
            found |= set(sio.get_untrusted_types(data=sio.dumps(make_student(features, multilabel=multilabel))))
    assert sio.get_untrusted_types(data=sio.dumps(make_student("tfidf"))) == []
    assert found | {"labelloop.labelers.student.FinetunedEncoder"} == TRUSTED_TYPES
    assert "builtins.type" not in TRUSTED_TYPES


def test_unknown_embedding_packages_are_never_imported():
    from labelloop.programs.embeddings import embed

    with pytest.raises(ConfigError, match="refusing to import"):
        embed(["a text"], "this")
