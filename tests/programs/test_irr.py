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


# Rank by option scores: one lettered closed choice, candidates ordered by its log-probs.

CANDIDATES = ["a", "b", "c", "d", "e"]


class FixedIndex:
    """Retrieval that always returns ``CANDIDATES`` in this order (so retrieval order is known)."""

    def search(self, guesses, n):
        return [(name, 1.0 - i / 10) for i, name in enumerate(CANDIDATES[:n])]


class LetterEngine(RuleEngine):
    """Infer by the keyword rules; the letter answer is ``answer`` with log-probs from ``probs`` (none when None)."""

    def __init__(self, probs: dict[str, float] | None, answer: str | None = None, text: str | None = None):
        super().__init__()
        self.probs, self.answer, self.text = probs, answer, text

    def complete(self, request):
        import json
        import math

        from dspy._vendor.lm15.types import TokenLogprob, TopLogprob
        from dspy.lm15 import Message, Response, TextPart, Usage

        (field, spec), = request.config.response_format["schema"]["properties"].items()
        if spec.get("type") == "array":
            return super().complete(request)
        self.calls += 1
        self.requests.append(request)
        answer = self.answer or max(self.probs, key=self.probs.get)
        text = self.text or json.dumps({field: answer})
        logprobs = None
        if self.probs is not None:
            top = tuple(TopLogprob(token=letter, logprob=math.log(p)) for letter, p in self.probs.items())
            logprobs = (TokenLogprob(token=f'{{"{field}": "', logprob=0.0),
                        TokenLogprob(token=answer, logprob=math.log(self.probs[answer]), top=top),
                        TokenLogprob(token='"}', logprob=0.0))
        return Response(id=None, model="letters", message=Message.assistant([TextPart(text)]), finish_reason="stop",
                        usage=Usage(input_tokens=10, output_tokens=3), logprobs=logprobs)


def _scores(engine, **kwargs):
    lm = dspy.LM("fake/letters", engine=engine, cache=False)
    return InferRetrieveRank(FixedIndex(), rank="scores", infer_lm=lm, rank_lm=lm, **kwargs)(text="a refund please")


def test_scores_mode_orders_candidates_by_letter_probabilities():
    engine = LetterEngine({"C": 0.5, "E": 0.25, "A": 0.2})
    pred = _scores(engine, rank_n=5, rank_k=3)
    assert pred.candidates == CANDIDATES
    assert pred.ranking == ["c", "e", "a", "b", "d"]  # by probability; the unscored keep retrieval order after
    assert pred.chosen == ["c", "e", "a"]  # renormalised: 0.53 + 0.26 < 0.8 <= 1
    assert (pred.invalid, pred.failed, pred.calls, engine.calls) == (0, 0, 2, 2)
    assert set(pred) == {"ranking", "chosen", "guesses", "candidates", "invalid", "failed", "calls"}
    request = engine.requests[-1]
    assert request.config.response_format["schema"]["properties"]["letter"]["enum"] == list("ABCDE")
    assert request.config.logprobs == 10  # top_logprobs asked for, as ClosedChoice asks
    assert "A. a\nB. b\nC. c\nD. d\nE. e" in request.messages[-1].text


def test_scores_mode_letters_follow_the_candidates_found():
    engine = LetterEngine({"B": 0.6, "A": 0.4})
    pred = _scores(engine, rank_n=3)
    assert pred.ranking == ["b", "a", "c"] and pred.chosen == ["b", "a"]
    assert engine.requests[-1].config.response_format["schema"]["properties"]["letter"]["enum"] == ["A", "B", "C"]


@pytest.mark.parametrize("probs, rank_k, chosen", [
    ({"B": 0.85, "A": 0.1, "C": 0.05}, 5, ["b"]),  # one candidate already holds the share
    ({"D": 0.3, "A": 0.3, "B": 0.2, "C": 0.2}, 2, ["a", "d"]),  # rank_k caps it; ties keep retrieval order
    ({"A": 0.4, "B": 0.4, "C": 0.2}, 5, ["a", "b"]),  # exactly the share
])
def test_scores_mode_chooses_up_to_the_share_and_rank_k(probs, rank_k, chosen):
    assert _scores(LetterEngine(probs), rank_n=5, rank_k=rank_k).chosen == chosen


def test_scores_mode_without_logprobs_keeps_retrieval_order_after_the_answer():
    pred = _scores(LetterEngine(None, answer="D"), rank_n=5)
    assert pred.ranking == ["d", "a", "b", "c", "e"] and pred.chosen == ["d"] and pred.failed == 0


def test_scores_mode_unparseable_answer_keeps_retrieval_order_and_chooses_nothing():
    pred = _scores(LetterEngine(None, answer="Z", text='{"letter": "Z"}'), rank_n=5)  # outside the letters
    assert pred.ranking == CANDIDATES and pred.chosen == [] and (pred.failed, pred.invalid, pred.calls) == (1, 0, 2)


def test_scores_mode_needs_one_letter_per_candidate(index):
    from labelloop.programs.errors import ConfigError

    with pytest.raises(ConfigError, match="rank_n must be at most 26; got rank_n 27"):
        InferRetrieveRank(index, rank="scores", rank_n=27)
    with pytest.raises(ConfigError, match="rank must be one of"):
        InferRetrieveRank(index, rank="stars")
    assert InferRetrieveRank(index, rank="list", rank_n=27).rank_n == 27
    assert [name for name, _ in InferRetrieveRank(index, rank="scores", rank_n=26).named_predictors()] == ["infer", "pick"]
