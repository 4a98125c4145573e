"""labelloop's vectorised majority vote and lf_summary give Snorkel's answers on small matrices.

Snorkel's MajorityLabelVoter and LFAnalysis are the reference (they loop in Python, too slow at a
million rows, which is why labelloop has its own). Where the two differ by design, the test says so:
labelloop's majority-vote probabilities are vote shares (Snorkel's are uniform over the top classes),
and labelloop abstains on records no labeler voted on, whatever the tie-break.
"""

import numpy as np
import pytest
from snorkel.labeling import LFAnalysis
from snorkel.labeling.model import MajorityLabelVoter

from labelloop.labelers.analysis import lf_summary
from labelloop.labelers.label_model import MajorityVote, vote_counts
from labelloop.labelers.labels import ABSTAIN

CASES = [(seed, k) for seed in range(4) for k in (2, 3)] + [(7, 20)]  # 20 classes: the bincount paths


def _votes(seed: int, k: int, n: int = 300, m: int = 6, dtype=np.int64) -> tuple[np.ndarray, np.ndarray]:
    """Labelers of mixed accuracy with many abstains: ties, uncovered rows and conflicts all occur."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    right = rng.random((n, m)) < np.linspace(0.9, 0.4, m)
    L = np.where(right, y[:, None], rng.integers(0, k, (n, m)))
    L[rng.random((n, m)) < 0.5] = ABSTAIN
    L[:10] = ABSTAIN  # records nobody voted on
    L[:, -1] = np.where(L[:, -1] == ABSTAIN, ABSTAIN, 0)  # one single-polarity labeler
    return L.astype(dtype), y


def _top_classes(P: np.ndarray) -> np.ndarray:
    return np.isclose(P, P.max(axis=1, keepdims=True))


@pytest.mark.parametrize("seed,k", CASES)
def test_vote_counts_match_a_plain_count(seed, k):
    L, _ = _votes(seed, k)
    expected = np.array([[np.sum(row == c) for c in range(k)] for row in L])
    assert np.array_equal(vote_counts(L, k), expected)


@pytest.mark.parametrize("seed,k", CASES)
def test_majority_vote_abstain_policy_equals_snorkel(seed, k):
    L, _ = _votes(seed, k)
    ours = MajorityVote(cardinality=k, seed=seed).fit(L)
    snorkel = MajorityLabelVoter(cardinality=k)
    tied = _top_classes(ours.predict_proba(L)).sum(axis=1) > 1
    assert tied[10:].any() and (~tied).any()  # the matrix really has both kinds of covered record
    assert np.array_equal(ours.predict(L, tie_break="abstain"), snorkel.predict(L, tie_break_policy="abstain"))


@pytest.mark.parametrize("seed,k", CASES)
def test_majority_vote_probabilities_have_snorkels_top_classes(seed, k):
    L, _ = _votes(seed, k)
    P = MajorityVote(cardinality=k).fit(L).predict_proba(L)
    counts = vote_counts(L, k)
    covered = (L != ABSTAIN).any(axis=1)
    assert np.allclose(P[covered], counts[covered] / counts[covered].sum(axis=1, keepdims=True))  # vote shares
    top = _top_classes(P)
    # Snorkel's distribution is uniform over the top classes; uncovered records are uniform in both
    assert np.allclose(MajorityLabelVoter(cardinality=k).predict_proba(L), top / top.sum(axis=1, keepdims=True))
    assert np.allclose(P[~covered], 1 / k)


@pytest.mark.parametrize("seed,k", CASES)
def test_majority_vote_random_policy_picks_a_top_class_repeatably(seed, k):
    L, _ = _votes(seed, k)
    mv = MajorityVote(cardinality=k, seed=seed).fit(L)
    P, y = mv.predict_proba(L), mv.predict(L, tie_break="random")
    top, covered = _top_classes(P), (L != ABSTAIN).any(axis=1)
    assert (y[~covered] == ABSTAIN).all()  # labelloop abstains where nobody voted (Snorkel draws a class)
    assert top[covered.nonzero()[0], y[covered]].all()
    untied = covered & (top.sum(axis=1) == 1)
    snorkel = MajorityLabelVoter(cardinality=k).predict(L, tie_break_policy="random")
    assert np.array_equal(y[untied], snorkel[untied])
    assert np.array_equal(y, MajorityVote(cardinality=k, seed=seed).fit(L).predict(L, tie_break="random"))


def test_random_tie_break_is_uniform_over_the_tied_classes_and_depends_on_the_seed():
    L = np.tile([[0, 1, ABSTAIN], [0, 1, 2]], (2000, 1))  # ties between classes {0, 1} and {0, 1, 2}
    picks = {seed: MajorityVote(cardinality=3, seed=seed).fit(L).predict(L, tie_break="random") for seed in (0, 1)}
    two, three = picks[0][0::2], picks[0][1::2]
    assert set(two.tolist()) == {0, 1} and abs((two == 0).mean() - 1 / 2) < 0.05
    assert set(three.tolist()) == {0, 1, 2} and all(abs((three == c).mean() - 1 / 3) < 0.05 for c in range(3))
    assert (picks[0] != picks[1]).any()


@pytest.mark.parametrize("seed,k", CASES)
@pytest.mark.parametrize("dtype", [np.int64, np.int8])
def test_lf_summary_equals_snorkel_lf_analysis(seed, k, dtype):
    L, y = _votes(seed, k, dtype=dtype)
    L[:, 2] = ABSTAIN  # a labeler that never votes
    names = [f"lf{j}" for j in range(L.shape[1])]
    ours = lf_summary(L, names, L_dev=L, y_dev=y)
    theirs = LFAnalysis(L.astype(np.int64)).lf_summary(y)
    assert ours["polarity"].tolist() == theirs["Polarity"].tolist()
    assert ours["polarity"].iloc[2] == [] and ours["polarity"].iloc[-1] == [0]
    for col, snorkel_col in (("coverage", "Coverage"), ("overlaps", "Overlaps"), ("conflicts", "Conflicts")):
        assert np.allclose(ours[col].to_numpy(float), theirs[snorkel_col].to_numpy(float)), col
    assert ours["conflicts"].to_numpy().max() > 0
    # Snorkel writes 0 for a labeler with no votes; labelloop leaves its accuracy undefined
    assert np.isnan(ours["dev_accuracy"].iloc[2]) and theirs["Emp. Acc."].iloc[2] == 0
    acc = ours["dev_accuracy"].to_numpy(float)
    assert np.allclose(np.nan_to_num(acc), theirs["Emp. Acc."].to_numpy(float))
    assert np.allclose(np.nan_to_num(acc) * ours["dev_coverage"].to_numpy(float) * len(L), theirs["Correct"].to_numpy(float))


def test_lf_summary_on_gold_from_other_records_and_without_votes():
    L, y = _votes(3, 3)
    dev, y_dev = L[:40], y[:40]
    ours = lf_summary(L[40:], [f"lf{j}" for j in range(L.shape[1])], L_dev=dev, y_dev=y_dev)
    theirs = LFAnalysis(dev).lf_summary(y_dev)
    assert np.allclose(ours["dev_accuracy"].fillna(0).to_numpy(float), theirs["Emp. Acc."].to_numpy(float))
    assert np.allclose(ours["coverage"].to_numpy(float), LFAnalysis(L[40:]).lf_coverages())
    empty = lf_summary(np.zeros((0, 2), dtype=int), ["a", "b"])
    assert empty["coverage"].tolist() == [0.0, 0.0] and empty["polarity"].tolist() == [[], []]
