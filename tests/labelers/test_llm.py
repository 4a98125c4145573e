import numpy as np
import pytest

from labelloop.labelers.base import LabelingContext
from labelloop.labelers.labels import ABSTAIN, Taxonomy
from labelloop.labelers.llm import prompt_labeler, zero_shot_labeler
from labelloop.programs.lm import LMSpec

TAX = Taxonomy(("ham", "spam"), ("a real comment", "self-promotion"))


def _ans(yes: float):
    return {"answer": "yes" if yes >= 0.5 else "no", "probs": {"yes": yes, "no": 1 - yes}}


def test_verbalizer_maps_answers_and_abstains():
    lf = prompt_labeler("asks_sub", "Asks to subscribe?", {"yes": "spam", "no": "abstain"}, TAX, calibration="none")
    assert lf.votes([_ans(0.9), _ans(0.2), None, {"answer": None, "probs": None}]).tolist() == [1, ABSTAIN, ABSTAIN, ABSTAIN]


def test_contextual_calibration_removes_a_yes_bias():
    lf = prompt_labeler("q", "Q?", {"yes": "spam", "no": "ham"}, TAX, calibration="content_free")
    # the model says yes with 0.8 even on content-free input: 0.8 on a real record is no evidence
    lf.fit(extra=[_ans(0.8), _ans(0.8)])
    assert lf.vote(_ans(0.7)) == 0  # below the bias -> "no" -> ham
    assert lf.vote(_ans(0.95)) == 1
    uncalibrated = prompt_labeler("q", "Q?", {"yes": "spam", "no": "ham"}, TAX, calibration="none")
    assert uncalibrated.fit(extra=[_ans(0.8)]).vote(_ans(0.7)) == 1


def test_batch_calibration_matches_the_class_balance():
    lf = zero_shot_labeler(TAX)
    # the model leans "spam" on every record; half of them are ham
    pool = [{"answer": "spam", "probs": {"ham": h, "spam": 1 - h}} for h in (0.1, 0.2, 0.3, 0.4)]
    lf.fit(pool, class_balance=[0.5, 0.5])
    assert lf.votes(pool).tolist() == [1, 1, 0, 0]
    # with a dev class balance of 60% spam only the most ham-like record flips
    lf.fit(pool, class_balance=[0.4, 0.6])
    assert lf.votes(pool).tolist() == [1, 1, 1, 0]


def test_unknown_calibration_is_refused():
    with pytest.raises(ValueError, match="calibration must be one of"):
        zero_shot_labeler(TAX, calibration="platt")


def test_threshold_turns_unsure_answers_into_abstains():
    lf = prompt_labeler("q", "Q?", {"yes": "spam", "no": "ham"}, TAX, threshold=0.8, calibration="none")
    assert [lf.vote(_ans(p)) for p in (0.9, 0.6, 0.1)] == [1, ABSTAIN, 0]


def test_version_changes_with_prompt_and_model_but_not_verbalizer():
    a = prompt_labeler("q", "Q?", {"yes": "spam", "no": "abstain"}, TAX)
    b = prompt_labeler("q", "Q?", {"yes": "spam", "no": "ham"}, TAX)
    c = prompt_labeler("q", "Other?", {"yes": "spam", "no": "abstain"}, TAX)
    at = lambda **lm: LabelingContext(TAX, LMSpec(**{"model": "m1", **lm}))  # noqa: E731
    assert a.version(at()) == b.version(at())
    assert a.version(at()) != c.version(at())
    assert a.version(at()) != a.version(at(model="m2"))
    assert a.version(at(temperature=0)) != a.version(at(temperature=1))
    assert a.version(at(max_concurrency=1)) == a.version(at(max_concurrency=8))  # speed is not identity


def test_verbalizer_with_unknown_label_is_a_clear_error():
    with pytest.raises(ValueError, match=r"maps to 'spamm'.*\['ham', 'spam'\]"):
        prompt_labeler("q", "Q?", {"yes": "spamm", "no": "abstain"}, TAX)
    with pytest.raises(ValueError, match="can never vote"):
        prompt_labeler("q", "Q?", {"yes": "abstain", "no": "abstain"}, TAX)


def test_zero_shot_votes_label_ids():
    lf = zero_shot_labeler(TAX, calibration="none")
    votes = lf.votes([{"answer": "spam", "probs": {"ham": 0.1, "spam": 0.9}}, {"answer": "ham", "probs": None}])
    assert votes.tolist() == [1, 0]
    assert isinstance(votes, np.ndarray)
