"""Likely-wrong labels: out-of-fold students, cleanlab's scores, and the diverse pick of records for review."""

import numpy as np
import pytest

from labelloop.labelers.quality import (
    auroc,
    disagreement,
    find_issues,
    flag_label_issues,
    margins,
    out_of_fold_proba,
    precision_at,
    rank_label_issues,
    select_diverse,
)
from labelloop.labelers.student import make_student

TOPICS = {
    0: ["refund", "invoice", "charged twice", "payment failed", "my money back", "billing error", "receipt"],
    1: ["parcel", "delivery", "package late", "courier", "tracking number", "shipping address", "arrived damaged"],
    2: ["password", "login", "app crashes", "screen frozen", "cannot sign in", "account locked", "error code"],
}
FRAMES = ["I need help with the {}", "question about {} please", "hello, {} again", "{} is a problem for me",
          "can you look at the {}", "urgent: {}"]


def synthetic(n_per_class: int = 30, flips: int = 9, seed: int = 0):
    """Texts of three clearly separable topics, confident label-model probabilities, and ``flips`` labels swapped."""
    rng = np.random.default_rng(seed)
    texts, y = [], []
    for label, words in TOPICS.items():
        for i in range(n_per_class):
            texts.append(FRAMES[i % len(FRAMES)].format(words[i % len(words)]) + f" (order {rng.integers(10_000)})")
            y.append(label)
    y = np.array(y)
    P = np.full((len(y), 3), 0.05)
    P[np.arange(len(y)), y] = 0.9
    flipped = rng.choice(len(y), flips, replace=False)
    for i in flipped:  # a confident label-model output for the wrong label: the probabilities are swapped
        new = (y[i] + 1 + rng.integers(2)) % 3
        P[i, [y[i], new]] = P[i, [new, y[i]]]
    mask = np.zeros(len(y), dtype=bool)
    mask[flipped] = True
    return texts, P, mask


def test_flipped_labels_rank_first():
    texts, P, flipped = synthetic()
    S = out_of_fold_proba(texts, P, lambda: make_student("tfidf"), folds=5, seed=0)
    assert S.shape == P.shape and np.allclose(S.sum(axis=1), 1.0)
    score = rank_label_issues(P, S)
    assert auroc(score, flipped) >= 0.95
    top = np.argsort(-score)[:flipped.sum()]
    assert flipped[top].mean() >= 0.8  # the flipped records come first
    assert precision_at(score, flipped, 0.05) == 1.0
    assert find_issues(P, S)[flipped].mean() >= 0.5  # cleanlab's find_label_issues flags most of them
    # the out-of-fold student does not just echo the labels it was given, as a student trained on all would
    assert (S.argmax(axis=1)[flipped] != P.argmax(axis=1)[flipped]).mean() >= 0.8


def test_flag_label_issues_is_confident_learning_and_explains_a_refusal():
    from cleanlab.filter import find_label_issues

    y = np.array([0, 0, 0, 1, 1, 1, 2, 2])
    P = np.array([[.8, .1, .1], [.7, .2, .1], [.1, .8, .1], [.1, .8, .1], [.2, .7, .1], [.9, .05, .05], [.1, .1, .8],
                  [.2, .1, .7]])
    mask, why = flag_label_issues(y, P)
    assert why is None and mask.tolist() == find_label_issues(y, P, filter_by="prune_by_noise_rate", n_jobs=1).tolist()
    assert mask[[2, 5]].all() and mask.sum() == 2
    # one class only (not the first): cleanlab refuses ("at least 2 classes"); nothing flagged, and why
    mask, why = flag_label_issues(np.array([1, 1, 1]), P[:3])
    assert mask.tolist() == [False] * 3 and "2 classes" in why
    assert find_issues(np.eye(3)[[1, 1, 1]], P[:3]).tolist() == [False] * 3  # find_issues goes through it


def test_weight_sets_whose_opinion_counts():
    P = np.array([[0.9, 0.1], [0.55, 0.45], [0.8, 0.2]])
    S = np.array([[0.1, 0.9], [0.9, 0.1], [0.8, 0.2]])
    assert np.argmax(rank_label_issues(P, S, weight=1.0)) == 0  # the student disagrees with record 0
    assert np.argmax(rank_label_issues(P, S, weight=0.0)) == 1  # the label model is least sure of record 1
    assert rank_label_issues(P, S, weight=0.5) == pytest.approx(1 - (0.5 * np.array([0.1, 0.9, 0.8]) +
                                                                    0.5 * np.array([0.9, 0.55, 0.8])))
    with pytest.raises(ValueError, match="differ in shape"):
        rank_label_issues(P, S[:2])
    with pytest.raises(ValueError, match="weight"):
        rank_label_issues(P, S, weight=2)
    assert rank_label_issues(np.zeros((0, 2)), np.zeros((0, 2))).shape == (0,)


def test_multilabel_ranks_label_sets_the_student_contradicts():
    P = np.array([[0.9, 0.1, 0.1], [0.9, 0.9, 0.1], [0.1, 0.1, 0.9], [0.9, 0.1, 0.9]])
    S = np.array([[0.9, 0.1, 0.1], [0.1, 0.9, 0.1], [0.1, 0.2, 0.8], [0.8, 0.1, 0.9]])
    score = rank_label_issues(P, S, multilabel=True)
    assert np.argmax(score) == 1  # the student says label 0 does not apply to record 1
    assert find_issues(P, S, multilabel=True).dtype == bool


def test_out_of_fold_multilabel_and_refusals():
    texts, P, _ = synthetic(10, 0)
    S = out_of_fold_proba(texts, (P > 0.5).astype(float), lambda: make_student("tfidf", multilabel=True), folds=3,
                          multilabel=True)
    assert S.shape == P.shape and ((S >= 0) & (S <= 1)).all()
    with pytest.raises(ValueError, match="at least 2 records"):
        out_of_fold_proba(texts[:1], P[:1], lambda: make_student("tfidf"))
    with pytest.raises(ValueError, match="texts"):
        out_of_fold_proba(texts[:3], P, lambda: make_student("tfidf"))


def test_margin_and_disagreement():
    P = np.array([[0.5, 0.4, 0.1], [0.9, 0.05, 0.05], [0.2, 0.7, 0.1]])
    assert margins(P).round(2).tolist() == [0.1, 0.85, 0.5]
    assert margins(np.array([[0.55, 0.9], [0.1, 0.99]]), multilabel=True).round(2).tolist() == [0.1, 0.8]
    S = np.array([[0.1, 0.9, 0.0], [0.9, 0.05, 0.05], [0.6, 0.3, 0.1]])
    mask, strength = disagreement(P, S)
    assert mask.tolist() == [True, False, True] and strength[1] == pytest.approx(0.0)
    mask, _ = disagreement(np.array([[0.9, 0.1]]), np.array([[0.9, 0.6]]), multilabel=True)
    assert mask.tolist() == [True]


def test_select_diverse_caps_each_group_then_fills_and_skips_repeated_texts():
    order = np.arange(8)
    groups = ["a", "a", "a", "a", "b", "c", "a", "b"]
    texts = ["one", "two", "two ", "three", "four", "five", "six", "seven"]
    assert select_diverse(order, groups, 3, texts) == [0, 4, 5]  # a quota of one per suggested label
    picked = select_diverse(order, groups, 6, texts)
    assert picked == [0, 1, 3, 4, 5, 7]  # quota two each, then filled in rank order; "two " repeats "two"
    assert select_diverse(order, groups, 100, texts) == [0, 1, 3, 4, 5, 6, 7]
    assert select_diverse(np.array([], dtype=int), [], 5) == []
    assert select_diverse(np.array([1, 0]), [["x", "y"], ["x"]], 1) == [1]  # rank order kept, list groups allowed
