"""Optimizing Infer-Retrieve-Rank with a recorded-answer LM: demos are bootstrapped, LMs stay on the module."""

from __future__ import annotations

import dspy
import pytest

from labelloop.programs.irr import InferRetrieveRank
from labelloop.programs.optimize import compile_program, examples, ranking_metric
from labelloop.programs.retrieval import LabelIndex
from tests.fakes import RuleEngine, default_answer

LABELS = ["billing", "shipping", "technical issue", "account access", "product question"]
GOLD = [("I was charged twice", ["billing"]), ("my parcel is late", ["shipping"]),
        ("the app shows an error", ["technical issue"]), ("refund for the late parcel", ["billing", "shipping"])]


class DemoAwareEngine(RuleEngine):
    """Ranks well only when the prompt carries demonstrations (extra user/assistant turns)."""

    def __init__(self):
        super().__init__(self._answer)

    def _answer(self, field, options, text):
        with_demos = len(self.requests[-1].messages) > 2
        if field == "choices" and not with_demos and ("error" in text or "refund" in text):
            return options[::-1][:1]  # zero-shot gets these wrong: the least likely candidate
        return default_answer(field, options, text)


def test_bootstrap_search_adds_demos_and_keeps_module_lms(tmp_path):
    engine = DemoAwareEngine()
    lm = dspy.LM("fake/rule", engine=engine, cache=False)
    program = InferRetrieveRank(LabelIndex(LABELS, retriever="bm25"), rank_n=3, infer_lm=lm, rank_lm=lm)
    compiled = compile_program(program, examples(GOLD), ranking_metric(1), max_demos=2, candidates=1)
    assert compiled is not program and not program.infer.demos  # the input program is untouched
    scores = {c["seed"]: c["score"] for c in compiled.candidate_programs}
    assert scores[-1] > scores[-3]  # demonstrations beat zero-shot, so they were kept
    assert 1 <= len(compiled.infer.demos) <= 2 and compiled.rank.demos
    demo = compiled.rank.demos[0]
    assert set(demo) >= {"text", "options", "choices"}  # a real trace: inputs and the ranker's answer
    before = engine.calls
    assert compiled(text="my login password fails").ranking[0] == "account access"
    assert engine.calls == before + 2  # answered by the module's LM, no global LM configured
    path = tmp_path / "irr.json"
    compiled.save(str(path))
    fresh = InferRetrieveRank(LabelIndex(LABELS, retriever="bm25"), rank_n=3, infer_lm=lm, rank_lm=lm)
    fresh.load(str(path))
    assert [d["text"] for d in fresh.rank.demos] == [d["text"] for d in compiled.rank.demos]
    assert "fake/rule" not in path.read_text()  # no LM (or key) is saved with the program


def test_optimizer_choice_and_empty_trainset_are_checked():
    program = InferRetrieveRank(LabelIndex(LABELS, retriever="bm25"))
    with pytest.raises(ValueError, match="optimizer must be one of"):
        compile_program(program, examples(GOLD), ranking_metric(), optimizer="gepa-xl")
    with pytest.raises(ValueError, match="at least one gold example"):
        compile_program(program, [], ranking_metric())


class LetterRuleEngine(RuleEngine):
    """Rank by letter: answers the letter of the candidate the keyword rules name, only right on hard texts with demos."""

    def __init__(self):
        super().__init__(self._answer)

    def _answer(self, field, options, text):
        if field != "letter":
            return default_answer(field, options, text)
        record, _, shown = text.partition("[[ ## options ## ]]")
        names = dict(line.split(". ", 1) for line in shown.strip().splitlines() if ". " in line)
        wanted = set(default_answer("guesses", None, record))
        hits = [letter.upper() for letter, name in names.items() if name in wanted]
        with_demos = len(self.requests[-1].messages) > 2
        if not hits or (not with_demos and ("error" in record or "refund" in record)):
            return options[-1]
        return hits[0]


def test_bootstrap_search_compiles_the_scores_ranker():
    engine = LetterRuleEngine()
    lm = dspy.LM("fake/rule", engine=engine, cache=False)
    program = InferRetrieveRank(LabelIndex(LABELS, retriever="bm25"), rank="scores", rank_n=3, infer_lm=lm, rank_lm=lm)
    compiled = compile_program(program, examples(GOLD), ranking_metric(1), max_demos=2, candidates=1)
    scores = {c["seed"]: c["score"] for c in compiled.candidate_programs}
    assert scores[-1] > scores[-3]  # demonstrations beat zero-shot
    assert compiled.pick.demos and set(compiled.pick.demos[0]) >= {"text", "options", "letter"}
    pred = compiled(text="the app shows an error")
    assert pred.ranking[0] == "technical issue" and pred.chosen == ["technical issue"] and pred.invalid == 0
    assert len(engine.requests[-1].messages) > 2  # the demos were sent
