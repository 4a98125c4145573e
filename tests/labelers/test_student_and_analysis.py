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


def _spec(**kw):
    from labelloop.flows.config import StudentSpec

    return StudentSpec(features="tfidf", **kw)


def test_self_training_labels_uncovered_records_with_the_first_student():
    from labelloop.labelers.tasks import self_trained

    P = np.array([[0.9, 0.1], [0.2, 0.8], [0.0, 0.0], [0.0, 0.0]])
    covered = np.array([True, True, False, False])
    fits = []

    def fit(rows, labels):
        fits.append((rows.copy(), labels.copy()))
        return len(fits)

    def predict(student, texts):
        assert student == 1 and texts == ["c", "d"]  # the first student, on the uncovered texts only
        return np.array([[0.3, 0.7], [0.6, 0.4]])

    assert self_trained(fit, ["a", "b", "c", "d"], P, covered, _spec(), predict) == 2
    assert fits[0][0].tolist() == covered.tolist()
    assert fits[1][0].all() and fits[1][1].tolist() == [[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.6, 0.4]]
    assert P[2:].sum() == 0  # the caller's labels are left alone
    fits.clear()
    assert self_trained(fit, ["a", "b", "c", "d"], P, covered, _spec(self_train=False), predict) == 1
    assert self_trained(fit, ["a", "b"], P[:2], covered[:2], _spec(), predict) == 2 and len(fits) == 2  # all covered: one fit


def test_self_trained_student_learns_words_only_uncovered_records_hold():
    from labelloop.labelers.tasks import TASKS

    covered_texts = ["refund my money", "charged twice refund", "parcel is late", "where is my parcel"] * 4
    uncovered = ["parcel zorbleflux", "late parcel zorbleflux again", "refund invoice please"] * 3
    texts = covered_texts + uncovered
    P = np.zeros((len(texts), 2))
    P[:len(covered_texts)] = [[0.9, 0.1], [0.9, 0.1], [0.1, 0.9], [0.1, 0.9]] * 4
    covered = np.arange(len(texts)) < len(covered_texts)
    task = TASKS["multiclass"]
    plain = task.train_student(texts, P, covered, _spec(self_train=False), 0)
    self_taught = task.train_student(texts, P, covered, _spec(), 0)
    probe = ["zorbleflux"]  # a word no covered record has: only the self-trained student saw it, with parcels
    assert predict_proba_full(self_taught, probe, 2)[0, 1] > predict_proba_full(plain, probe, 2)[0, 1] + 0.05
    assert self_taught.predict(["charged a refund", "my parcel"]).tolist() == [0, 1]


def test_self_training_multilabel_student():
    from labelloop.labelers.tasks import TASKS

    texts = ["refund and parcel", "refund only", "parcel only", "nothing here"] * 4 + ["refund zorbleflux"] * 4
    P = np.zeros((len(texts), 2))
    P[:16] = [[1, 1], [1, 0], [0, 1], [0, 0]] * 4
    covered = np.arange(len(texts)) < 16
    task = TASKS["multilabel"]
    plain = task.train_student(texts, P, covered, _spec(self_train=False), 0)
    self_taught = task.train_student(texts, P, covered, _spec(), 0)
    assert self_taught.predict_proba(["zorbleflux"])[0, 0] > plain.predict_proba(["zorbleflux"])[0, 0] + 0.05
    assert P[16:].sum() == 0
