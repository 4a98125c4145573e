import numpy as np
import pytest

from labelloop.labelers.label_model import LabelModelWrapper, MajorityVote, estimate_class_balance
from labelloop.labelers.labels import ABSTAIN


def _synthetic(n=2000, seed=0):
    """One accurate labeler among four weak, independent ones: weighting beats counting."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    L = np.stack([np.where(rng.random(n) < acc, y, 1 - y) for acc in (0.95, 0.65, 0.6, 0.6, 0.55)], axis=1)
    L[rng.random(L.shape) < 0.2] = ABSTAIN
    return L, y


def test_label_model_follows_sklearn_contract():
    L, _ = _synthetic()
    model = LabelModelWrapper(cardinality=2, seed=1)
    assert model.fit(L) is model
    P = model.predict_proba(L)
    assert P.shape == (len(L), 2) and np.allclose(P.sum(axis=1), 1)


def test_label_model_beats_majority_vote_when_accuracies_differ():
    L, y = _synthetic()
    lm_acc = (LabelModelWrapper(cardinality=2, seed=0).fit(L).predict(L, tie_break="random") == y).mean()
    mv_acc = (MajorityVote(cardinality=2).fit(L).predict(L, tie_break="random") == y).mean()
    assert lm_acc > mv_acc


def test_label_model_is_repeatable_with_a_seed():
    L, _ = _synthetic()
    a = LabelModelWrapper(seed=3).fit(L).predict_proba(L)
    b = LabelModelWrapper(seed=3).fit(L).predict_proba(L)
    assert np.allclose(a, b)


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="at least 3 labelers"):
        LabelModelWrapper().fit(np.zeros((5, 2), dtype=int))
    with pytest.raises(ValueError, match=r"outside \[-1, 1\]"):
        MajorityVote(cardinality=2).fit(np.array([[0, 2, 1]]))
    model = MajorityVote(cardinality=2).fit(np.zeros((3, 3), dtype=int))
    with pytest.raises(ValueError, match="L has 2 columns but the model was fitted on 3"):
        model.predict(np.zeros((3, 2), dtype=int))


def test_majority_vote_uncovered_rows_get_the_prior_and_abstain():
    mv = MajorityVote(cardinality=2).fit(np.array([[-1, -1]]), class_balance=[0.7, 0.3])
    assert mv.predict_proba(np.array([[-1, -1]])).tolist() == [[0.7, 0.3]]
    assert mv.predict(np.array([[-1, -1]])).tolist() == [ABSTAIN]


def test_class_balance_is_smoothed():
    assert estimate_class_balance([1, 1, 1], 2).tolist() == [0.2, 0.8]


def test_rebalancing_matches_the_class_balance_and_keeps_the_ranking():
    rng = np.random.default_rng(0)
    y = (rng.random(3000) < 0.5).astype(int)
    # four labelers that only ever vote class 1 (precise but one-sided) and one weak two-sided one
    cols = [np.where((y == 1) & (rng.random(3000) < 0.4), 1, ABSTAIN) for _ in range(4)]
    cols.append(np.where(rng.random(3000) < 0.6, y, 1 - y))
    L = np.stack(cols, axis=1)
    plain = LabelModelWrapper(seed=0, rebalance=False).fit(L, class_balance=[0.5, 0.5])
    rebalanced = LabelModelWrapper(seed=0).fit(L, class_balance=[0.5, 0.5])
    P = rebalanced.predict_proba(L)
    assert P.mean(axis=0) == pytest.approx([0.5, 0.5], abs=1e-3)
    assert np.array_equal(np.argsort(P[:, 1], kind="stable"), np.argsort(plain.predict_proba(L)[:, 1], kind="stable"))
    assert (rebalanced.predict(L, tie_break="random") == y).mean() >= (plain.predict(L, tie_break="random") == y).mean()


def _sparse_votes(seed: int, n: int):
    """Single-polarity heuristics plus two accurate labelers that vote on a tenth of the records (as under an
    LLM budget), seeded."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    L = np.full((n, 6), -1)
    for j, (label, coverage, accuracy) in enumerate([(1, .15, .95), (1, .15, .95), (0, .3, .65), (1, .1, .97)]):
        on, right = rng.random(n) < coverage, rng.random(n) < accuracy
        L[on & (y == label) & right, j] = label
        L[on & (y != label) & ~right, j] = label
    few = rng.random(n) < 0.1
    for j in (4, 5):
        right = rng.random(n) < 0.85
        L[few, j] = np.where(right[few], y[few], 1 - y[few])
    return L, y


def test_auto_keeps_majority_vote_where_it_beats_snorkel_on_dev_and_snorkel_elsewhere():
    from labelloop.labelers.tasks import TASKS, fit_label_model

    task, names = TASKS["multiclass"], ["a", "b"]
    picked = {}
    for seed in (3, 7):  # data on which majority vote wins on dev (3) and on which Snorkel does (7)
        rng_data = _sparse_votes(seed, 460)
        L, Ld, yd = rng_data[0][:400], rng_data[0][400:], rng_data[1][400:].tolist()
        model, majority, kind, dev = fit_label_model(task, "auto", L, names, yd, Ld, 0)
        assert set(dev) == {"snorkel", "majority"}
        assert kind == ("majority" if dev["majority"] > dev["snorkel"] else "snorkel")
        assert isinstance(model, MajorityVote if kind == "majority" else LabelModelWrapper)
        # the dev score it reports is the chosen model's own
        assert np.mean(model.predict(Ld) == np.array(yd)) == pytest.approx(dev[kind], abs=1e-3)
        picked[seed] = kind
    assert picked == {3: "majority", 7: "snorkel"}

    L = _sparse_votes(3, 400)[0]
    assert fit_label_model(task, "auto", L, names, None, None, 0)[2:] == ("snorkel", None)  # no dev: Snorkel
    assert fit_label_model(task, "auto", L[:, :2], names, [0, 1], L[:2, :2], 0)[2:] == ("majority", None)  # < 3 labelers
    assert fit_label_model(task, "snorkel", L, names, yd, Ld, 0)[2:] == ("snorkel", None)  # no comparison asked


def test_under_a_budget_the_label_model_learns_from_the_records_drawn_at_random_and_the_dev_votes():
    from labelloop.labelers.tasks import TASKS, budget_fit_votes

    task = TASKS["multiclass"]
    V = np.array([[0, -1], [1, 1], [-1, 0], [0, 0]])
    V_dev = np.array([[1, 0], [0, 0]])
    fit = budget_fit_votes(task, V, ["a", "b", "c", "d"], ["d", "b"], [V_dev])
    assert fit.tolist() == [[1, 1], [0, 0], [1, 0], [0, 0]]  # b and d in train order, then dev
    assert budget_fit_votes(task, V, ["a", "b", "c", "d"], [], [V_dev]) is None  # nothing drawn: learn from V
    assert budget_fit_votes(TASKS["multilabel"], V, ["a", "b", "c", "d"], ["b"], [V_dev]) is None
