"""Infer-Retrieve-Rank with a recorded-answer LM: retrieval, ranking, bad answers, optimizer-safe LMs."""

from __future__ import annotations

import dspy
import numpy as np
import pytest

from labelloop.programs.irr import InferRetrieveRank, chunk_text
from labelloop.programs.metrics import mean_rp_at_k, rp_at_k
from labelloop.programs.retrieval import LabelIndex, label_fingerprint
from tests.fakes import RuleEngine

LABELS = ["billing", "shipping", "technical issue", "account access", "product question", "returns policy"]


def _lm(answer_for):
    return dspy.LM("fake/rule", engine=RuleEngine(answer_for), cache=False)


@pytest.fixture(scope="module")
def index():
    return LabelIndex(LABELS, retriever="bm25")


def test_retrieval_scores_a_label_by_its_best_guess(index):
    hits = index.search(["a billing problem", "shipping was slow"], 3)
    assert {name for name, _ in hits[:2]} == {"billing", "shipping"}
    assert hits[0][1] >= hits[1][1] >= hits[2][1]
    assert index.search(["", "  "], 3) == []


def test_embedding_retrieval_matches_paraphrases():
    index = LabelIndex(LABELS)
    assert index.search(["my parcel never arrived"], 1)[0][0] == "shipping"
    assert index.vectors.shape == (len(LABELS), 384)
    hybrid = LabelIndex(LABELS, index.vectors, retriever="hybrid")
    assert hybrid.search(["cannot log in to my account"], 1)[0][0] == "account access"


def test_index_rejects_mismatched_vectors_and_unknown_retriever():
    with pytest.raises(ValueError, match="expected 6 label vectors"):
        LabelIndex(LABELS, np.zeros((2, 384), dtype=np.float32))
    with pytest.raises(ValueError, match="retriever must be one of"):
        LabelIndex(LABELS, retriever="tfidf")


def test_fingerprint_changes_with_labels_and_embedder():
    assert label_fingerprint(LABELS) == label_fingerprint(list(LABELS))
    assert label_fingerprint(LABELS) != label_fingerprint(LABELS[:-1])
    assert label_fingerprint(LABELS) != label_fingerprint(LABELS, "other_embedder")


def test_irr_ranks_chosen_labels_first_with_two_calls(index):
    engine = RuleEngine()
    program = InferRetrieveRank(index, rank_n=4, rank_k=3, infer_lm=dspy.LM("fake/rule", engine=engine, cache=False))
    program.rank_lm = program.infer_lm
    pred = program(text="I was charged twice and my parcel is late")
    assert pred.guesses == ["billing", "shipping"]
    assert set(pred.chosen) == {"billing", "shipping"}
    assert pred.ranking[:2] == pred.chosen and len(pred.ranking) == 4
    assert (pred.calls, engine.calls, pred.invalid, pred.failed) == (2, 2, 0, 0)
    # the ranker's answer schema only allows this record's candidates, at most rank_k of them
    schema = engine.requests[-1].config.response_format["schema"]["properties"]["choices"]
    assert set(schema["items"]["enum"]) == set(pred.candidates) and schema["maxItems"] == 3


def test_labels_outside_the_candidates_are_dropped_and_counted(index):
    def answer(field, options, text):
        return ["billing", "fax machines", "Billing"] if field == "guesses" else ["shipping", "made up", "billing", "shipping"]

    with dspy.context(lm=_lm(answer)):
        pred = InferRetrieveRank(index, rank_n=len(LABELS))(text="anything")
    assert pred.guesses == ["billing", "fax machines"]  # de-duplicated, case-insensitively
    assert pred.chosen == ["shipping", "billing"] and pred.invalid == 1
    assert "made up" not in pred.ranking and sorted(pred.ranking) == sorted(LABELS)


def test_unparseable_answers_are_counted_not_raised(index):
    class Garbage(RuleEngine):
        def complete(self, request):
            from dspy.lm15 import Message, Response, TextPart, Usage

            self.calls += 1
            return Response(id=None, model="x", message=Message.assistant([TextPart("no json at all")]),
                            finish_reason="stop", usage=Usage(input_tokens=1, output_tokens=1))

    with dspy.context(lm=dspy.LM("fake/garbage", engine=Garbage(), cache=False)):
        pred = InferRetrieveRank(index)(text="my invoice is wrong")
    assert pred.failed == 1 and pred.ranking == [] and pred.calls == 1  # no guesses: nothing to rank


def test_long_texts_are_chunked_for_infer(index):
    engine = RuleEngine()
    with dspy.context(lm=dspy.LM("fake/rule", engine=engine, cache=False)):
        pred = InferRetrieveRank(index, chunk_words=5)(text="My refund is missing. " * 3 + "Where is my parcel tracking?")
    assert pred.calls == 5 and engine.calls == 5  # four Infer chunks (one per sentence) and one Rank
    assert pred.guesses == ["billing", "shipping"]
    assert chunk_text("a " * 12, 5) == ["a a a a a", "a a a a a", "a a"]


def test_module_lms_survive_an_optimizer_reset(index):
    """Bootstrap optimizers reset predictor LMs; the module's own LMs still answer."""
    lm = dspy.LM("fake/rule", engine=RuleEngine(), cache=False)
    program = InferRetrieveRank(index, infer_lm=lm, rank_lm=lm)
    copy = program.reset_copy()
    assert copy.index is index  # the label index is shared, not copied
    assert copy(text="refund please").chosen == ["billing"]  # no dspy.configure needed
    assert copy.infer.lm is None and copy.rank.lm is None


def test_rank_precision():
    assert rp_at_k(["a", "x", "b"], ["a", "b"], 1) == 1.0
    assert rp_at_k(["x", "y"], ["a"], 10) == 0.0
    assert mean_rp_at_k([["a"], ["x"], ["q"]], [["a"], ["b"], []], 5) == 0.5
