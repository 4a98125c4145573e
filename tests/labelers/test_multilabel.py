"""Multi-label label models and the one-vs-rest student on synthetic votes."""

import numpy as np
import pytest
from scipy import sparse

from labelloop.labelers.base import LabelingContext
from labelloop.labelers.irr import IRRLabeler
from labelloop.labelers.labels import Taxonomy
from labelloop.labelers.multilabel import MultiLabelModel, gold_matrix, label_prevalence, multilabel_scores, multilabel_summary
from labelloop.labelers.student import SoftOneVsRest, fit_multilabel_student
from labelloop.programs.lm import LMSpec


def _synthetic(n=400, seed=0):
    """Label 0 has three noisy labelers (Snorkel), label 1 one precise labeler (majority vote)."""
    rng = np.random.default_rng(seed)
    Y = rng.random((n, 2)) < [0.4, 0.3]
    votes = []
    for acc, cover in ((0.9, 0.8), (0.8, 0.7), (0.65, 0.9)):
        V = np.zeros((n, 2), dtype=np.int8)
        on = rng.random(n) < cover
        right = rng.random(n) < acc
        V[on, 0] = np.where(right[on] == Y[on, 0], 1, -1)
        votes.append(V)
    votes[0][Y[:, 1], 1] = 1  # a precise, one-sided labeler for label 1
    return Y, [sparse.csr_matrix(V) for V in votes]


def test_snorkel_where_three_labelers_vote_majority_elsewhere():
    Y, votes = _synthetic()
    model = MultiLabelModel("snorkel", seed=0).fit(votes, label_prevalence(Y))
    assert model.labels_with_snorkel == 1 and 0 in model.models_
    P = model.predict_proba(votes)
    assert P.shape == (400, 2) and ((P >= 0) & (P <= 1)).all()
    snorkel_acc = ((P[:, 0] >= 0.5) == Y[:, 0]).mean()
    assert (P[Y[:, 1], 1] == 1).all() and (P[~Y[:, 1], 1] == 0).all()  # one-sided labeler: vote share
    majority = MultiLabelModel("majority").fit(votes).predict_proba(votes)
    majority_acc = ((majority[:, 0] >= 0.5) == Y[:, 0]).mean()
    assert snorkel_acc > majority_acc > 0.7  # weighting labelers by estimated accuracy beats counting them
    with pytest.raises(ValueError, match="snorkel or majority"):
        MultiLabelModel("dawid-skene")


def test_records_without_votes_get_zero():
    V = sparse.csr_matrix(np.array([[1, 0], [0, 0]], dtype=np.int8))
    P = MultiLabelModel().fit([V]).predict_proba([V])
    assert P.tolist() == [[1.0, 0.0], [0.0, 0.0]]


def test_scores_and_summary_on_known_votes():
    Y = gold_matrix([[0], [0, 1], []], 2)
    P = np.array([[0.9, 0.2], [0.6, 0.7], [0.1, 0.0]])
    s = multilabel_scores(Y, P, ["a", "b"])
    assert (s["micro_f1"], s["macro_f1"], s["rp5"], s["n"]) == (1.0, 1.0, 1.0, 3)
    irr = IRRLabeler("irr").vote_sets([{"chosen": ["a"], "candidates": ["a", "b"]}, {"chosen": ["a", "b"]}, None],
                                        Taxonomy(("a", "b"), ("", "")))
    kw = sparse.csr_matrix(np.array([[0, 1], [0, 0], [0, 0]], dtype=np.int8))
    summary = multilabel_summary([irr, kw], ["irr", "kw"], votes_dev=[irr, kw], Y_dev=Y, invalid={"irr": 2})
    assert summary.loc["irr", "coverage"] == pytest.approx(2 / 3) and summary.loc["irr", "labels_per_record"] == 1.5
    assert summary.loc["irr", "dev_precision"] == 1.0 and summary.loc["irr", "dev_recall"] == 1.0
    assert summary.loc["kw", "conflicts"] == pytest.approx(1 / 3)  # kw says b where irr said not-b
    assert summary.loc["kw", "dev_precision"] == 0.0 and summary.loc["irr", "invalid_answers"] == 2


def test_one_vs_rest_student_learns_each_label_from_soft_labels():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 4))
    P = np.stack([1 / (1 + np.exp(-4 * X[:, 0])), 1 / (1 + np.exp(-4 * X[:, 1])), np.zeros(300)], axis=1)
    clf = SoftOneVsRest(C=1.0).fit(X, P)
    assert clf.labels_.tolist() == [0, 1]  # no evidence for label 2: no model, a constant
    out = clf.predict_proba(X)
    assert out.shape == (300, 3) and (out[:, 2] == 0).all()
    assert ((out[:, 0] >= 0.5) == (X[:, 0] > 0)).mean() > 0.9 and ((out[:, 1] >= 0.5) == (X[:, 1] > 0)).mean() > 0.9


def test_student_refuses_labels_without_evidence():
    with pytest.raises(ValueError, match="no label has enough weak-label evidence"):
        fit_multilabel_student(["refund please", "parcel late", "app crashes"], np.zeros((3, 2)))


def test_irr_labeler_versions_and_multiclass_votes():
    tax = Taxonomy(("a", "b"), ("", ""))
    irr = IRRLabeler("irr")
    assert irr.votes([{"chosen": ["b", "a"]}, {"chosen": []}, {"chosen": ["zzz"]}, None], tax).tolist() == [1, -1, -1, -1]
    ctx = LabelingContext(tax, LMSpec(model="model@1"))
    base = irr.version(ctx)
    assert base == IRRLabeler("other_name").version(ctx)  # the name is not part of it
    other_labels = LabelingContext(Taxonomy(("a", "c"), ("", "")), ctx.lm)
    changed = [IRRLabeler("irr", rank_n=10).version(ctx), irr.version(LabelingContext(tax, LMSpec(model="model@2"))),
               irr.version(other_labels), irr.version(LabelingContext(tax, ctx.lm, states={"irr": {"demos": [1]}}))]
    assert base not in changed and len(set(changed)) == 4


def test_irr_rank_mode_is_part_of_the_version_and_checked():
    from labelloop.programs.errors import ConfigError

    tax = Taxonomy(("a", "b"), ("", ""))
    ctx = LabelingContext(tax, LMSpec(model="model@1"))
    listed = IRRLabeler("irr", rank_n=20)
    assert listed.version(ctx) == IRRLabeler("irr", rank_n=20, rank="list").version(ctx)  # the default adds nothing
    assert IRRLabeler("irr", rank_n=20, rank="scores").version(ctx) != listed.version(ctx)
    with pytest.raises(ConfigError, match="rank_n must be at most 26; got rank_n 30"):
        IRRLabeler("irr", rank="scores")  # the default rank_n 30 needs more letters than there are
    with pytest.raises(ConfigError, match="rank must be one of"):
        IRRLabeler("irr", rank="stars")


def test_irr_scores_program_state_and_prompt_cost():
    from labelloop.programs.errors import ConfigError
    from labelloop.programs.retrieval import LabelIndex

    tax = Taxonomy(("billing", "shipping", "returns"), ("", "", ""))
    index = LabelIndex(list(tax.names), retriever="bm25")
    scores = IRRLabeler("irr", rank_n=3, rank="scores")
    ctx = LabelingContext(tax, LMSpec(model="model@1"), lambda retriever: index)
    program = scores.program(ctx)
    assert program.rank_mode == "scores" and program.rank_n == 3
    list_state = IRRLabeler("irr", rank_n=3).program(ctx).dump_state()  # saved for the other mode
    with pytest.raises(ConfigError, match=r"compiled with other settings"):
        scores.program(LabelingContext(tax, ctx.lm, ctx.label_index, states={"irr": list_state}))
    own = LabelingContext(tax, ctx.lm, ctx.label_index, states={"irr": program.dump_state()})
    assert scores.program(own).rank_mode == "scores"
    calls, chars = scores.prompt_cost(["I was charged twice"], ctx)
    list_calls, list_chars = IRRLabeler("irr", rank_n=3).prompt_cost(["I was charged twice"], ctx)
    assert calls == list_calls == 2 and chars != list_chars and chars > 0


def test_irr_spec_validates_rank():
    from labelloop.labelers.irr import IRRLF

    assert IRRLF(type="irr", rank="scores", rank_n=26).build(None)[0].rank == "scores"
    with pytest.raises(ValueError, match="rank_n must be at most 26; got rank_n 30"):
        IRRLF(type="irr", rank="scores")
    with pytest.raises(ValueError, match="'list' or 'scores'"):
        IRRLF(type="irr", rank="stars")
