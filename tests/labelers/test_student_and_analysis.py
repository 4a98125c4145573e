import numpy as np
import pytest

from labelloop.labelers.analysis import lf_summary, scores
from labelloop.labelers.student import fit_student, predict_proba_full

TEXTS = ["refund my money", "charged twice, refund please", "parcel is late", "where is my parcel",
         "invoice wrong refund", "parcel never arrived"] * 5


def test_student_learns_from_soft_labels():
    P = np.array([[0.9, 0.1], [0.8, 0.2], [0.2, 0.8], [0.1, 0.9], [0.7, 0.3], [0.3, 0.7]] * 5)
    student = fit_student(TEXTS, P)
    assert student.predict(["a refund for my invoice", "my parcel is lost"]).tolist() == [0, 1]
    assert predict_proba_full(student, ["parcel"], 3).shape == (1, 3)


def test_student_refuses_single_class_labels():
    with pytest.raises(ValueError, match="fewer than two classes"):
        fit_student(TEXTS, np.tile([1.0, 0.0], (len(TEXTS), 1)))


def test_lf_summary_counts_dev_accuracy_and_invalid_answers():
    L = np.array([[0, 0, -1], [1, 0, 1], [-1, -1, 1]])
    summary = lf_summary(L, ["a", "b", "c"], L_dev=np.array([[0, 1, -1], [1, 1, 1]]), y_dev=[0, 1],
                         invalid={"a": 2})
    assert summary.loc["a", "dev_accuracy"] == 1.0
    assert summary.loc["b", "dev_accuracy"] == 0.5
    assert summary.loc["c", "dev_accuracy"] == 1.0 and summary.loc["c", "dev_coverage"] == 0.5
    assert summary.loc["b", "conflicts"] == pytest.approx(1 / 3)
    assert summary.loc["a", "invalid_answers"] == 2


def test_scores_count_abstain_as_wrong():
    s = scores([0, 1, 1, 0], [0, 1, -1, 1], 2)
    assert s["accuracy"] == 0.5 and s["coverage"] == 0.75
