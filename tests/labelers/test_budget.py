"""The LLM budget's pure selection logic: scores from posteriors and votes, the seeded pick, the plateau rule."""

import numpy as np
import pytest
from scipy import sparse

from labelloop.labelers.budget import binary_entropy, disagreement, entropy, multilabel_disagreement, pick, plateaued
from labelloop.labelers.labels import ABSTAIN
from labelloop.labelers.tasks import MultiClass, MultiLabel


def test_entropy_is_scaled_to_one_for_any_number_of_classes():
    for k in (2, 3, 7):
        assert entropy(np.full((1, k), 1 / k))[0] == pytest.approx(1.0)
        assert entropy(np.eye(k)[:1])[0] == pytest.approx(0.0)
    P = np.array([[0.6, 0.4], [0.9, 0.1], [0.5, 0.5]])
    assert np.argsort(-entropy(P)).tolist() == [2, 0, 1]
    assert binary_entropy(np.array([[0.5, 0.5], [0.5, 1.0], [0.0, 1.0]])).tolist() == pytest.approx([1.0, 0.5, 0.0])


def test_disagreement_counts_votes_against_the_most_common_one():
    L = np.array([[0, 0, 0, 1], [0, 1, ABSTAIN, ABSTAIN], [ABSTAIN] * 4, [2, 2, ABSTAIN, ABSTAIN]])
    assert disagreement(L, 3).tolist() == pytest.approx([0.25, 0.5, 0.0, 0.0])
    yes = sparse.csr_matrix(np.array([[1, 1], [1, 0]], dtype=np.int8))
    no = sparse.csr_matrix(np.array([[-1, 1], [0, 0]], dtype=np.int8))
    assert multilabel_disagreement([yes, no]).tolist() == pytest.approx([0.25, 0.0])


def test_task_scores_rank_unvoted_and_conflicting_records_above_settled_ones():
    L = np.array([[0, 0, 0], [0, 1, ABSTAIN], [ABSTAIN, ABSTAIN, ABSTAIN]])
    P = np.array([[0.95, 0.05], [0.6, 0.4], [0.5, 0.5]])
    s = MultiClass().budget_scores(P, L, 2)
    assert s[0] < s[2] < s[1]  # the conflict adds disagreement to a near-uniform posterior
    votes = [sparse.csr_matrix(np.array([[1, 0], [1, 0]], dtype=np.int8)),
             sparse.csr_matrix(np.array([[1, 0], [-1, 0]], dtype=np.int8))]
    s = MultiLabel().budget_scores(np.array([[0.99, 0.01], [0.5, 0.01]]), votes, 2)
    assert s[0] < s[1]


def test_highest_scores_are_picked_first_and_ties_by_a_seeded_draw():
    scores = np.array([0.2, 0.9, 0.1, 0.7, 0.7, 0.3])
    by_score, at_random = pick(scores, np.ones(6, int), 3, random_share=0.0, seed=0)
    assert by_score[0] == 1 and set(by_score[1:]) == {3, 4} and len(at_random) == 0
    ties = np.zeros(50)
    first = [pick(ties, np.ones(50, int), 5, random_share=0.0, seed=s)[0].tolist() for s in (1, 1, 2)]
    assert first[0] == first[1] != first[2]


def test_random_share_is_drawn_from_the_records_not_picked_by_score():
    rng = np.random.default_rng(0)
    scores = rng.random(200)
    by_score, at_random = pick(scores, np.ones(200, int), 50, random_share=0.2, seed=3)
    assert (len(by_score), len(at_random)) == (40, 10)
    assert set(by_score) == set(np.argsort(-scores)[:40])
    assert not set(by_score) & set(at_random)
    assert scores[at_random].mean() < scores[by_score].min()  # not the next best: a uniform draw from the rest
    again = pick(scores, np.ones(200, int), 50, random_share=0.2, seed=3)
    assert [a.tolist() for a in again] == [by_score.tolist(), at_random.tolist()]
    other = pick(scores, np.ones(200, int), 50, random_share=0.2, seed=4)
    assert other[0].tolist() == by_score.tolist() and other[1].tolist() != at_random.tolist()
    by_score, at_random = pick(scores, np.ones(200, int), 50, random_share=1.0, seed=3)
    assert (len(by_score), len(at_random)) == (0, 50)


def test_random_picks_are_uniform_over_the_rest():
    scores = np.r_[np.ones(10), np.zeros(40)]  # the 10 best always go by score
    counts = np.zeros(50)
    for seed in range(2000):
        by_score, at_random = pick(scores, np.ones(50, int), 14, random_share=0.3, seed=seed)
        assert set(by_score) <= set(range(10))
        counts[at_random] += 1
    rest = counts[10:]
    assert rest.sum() == 2000 * 4 and counts[:10].sum() == 0
    assert rest.min() > 0.75 * rest.mean() and rest.max() < 1.25 * rest.mean()  # 200 expected each


def test_costs_budget_and_eligibility_are_respected():
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    costs = np.array([3, 0, 3, 3, 1, 3])
    eligible = np.array([True, True, False, True, True, True])
    for seed in range(20):
        by_score, at_random = pick(scores, costs, 8, random_share=0.25, seed=seed, eligible=eligible)
        chosen = np.r_[by_score, at_random]
        assert costs[chosen].sum() <= 8 and len(set(chosen)) == len(chosen)
        assert not {1, 2} & set(chosen)  # nothing left to ask; not eligible
        assert by_score.tolist() == [0, 3]  # 6 of the 8 by score, in score order
    assert [len(a) for a in pick(scores, costs, 0, seed=0)] == [0, 0]
    with pytest.raises(ValueError, match="random_share"):
        pick(scores, costs, 4, random_share=1.5)


def test_plateau_needs_two_rounds_without_a_gain():
    assert not plateaued([0.5], 0.005)
    assert not plateaued([0.5, 0.6], 0.005)
    assert plateaued([0.5, 0.5, 0.5], 0.005)
    assert not plateaued([0.5, 0.5, 0.51], 0.005)
    assert plateaued([0.5, 0.7, 0.69, 0.702], 0.005)  # a gain within the tolerance is no gain
    assert not plateaued([0.5, 0.4, 0.3, 0.8], 0.005)
    assert not plateaued([None, None, None, None], 0.005)
