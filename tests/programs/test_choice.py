import dspy
import pytest
from dspy.utils import DummyLM

from labelloop.programs.choice import option_probabilities, question_program, zero_shot_program
from tests.fakes import rule_lm

LABELS = ["billing", "shipping", "technical_issue"]
DESCS = ["money", "parcels", "bugs"]


def test_zero_shot_with_dummy_lm_returns_answer_and_one_hot_probs():
    with dspy.context(lm=DummyLM([{"label": "shipping"}], adapter=dspy.JSONAdapter())):
        pred = zero_shot_program(LABELS, DESCS)(text="where is my parcel")
    assert pred.answer == "shipping"
    assert pred.probs == {"billing": 0.0, "shipping": 1.0, "technical_issue": 0.0}


def test_answer_outside_options_is_no_answer_not_a_crash():
    with dspy.context(lm=DummyLM([{"answer": "maybe"}], adapter=dspy.JSONAdapter())):
        pred = question_program("Is it about money?", ["yes", "no"])(text="hello")
    assert pred.answer is None and pred.probs is None and "maybe" in pred.raw


def test_probabilities_come_from_engine_logprobs():
    lm = rule_lm(confidence=0.7)
    with dspy.context(lm=lm):
        pred = zero_shot_program(LABELS, DESCS)(text="my tracking number shows nothing")
    assert pred.answer == "shipping"
    assert pred.probs["shipping"] == pytest.approx(0.7)
    assert pred.probs["billing"] == pytest.approx(0.15)


def test_prompt_keeps_shared_part_before_the_record_text():
    lm = rule_lm()
    with dspy.context(lm=lm):
        question_program("Is it about money?", ["yes", "no"])(text="RECORD-TEXT")
    request = lm.engine.requests[-1]
    user = request.messages[-1].text
    assert user.index("Is it about money?") < user.index("RECORD-TEXT")
    assert request.config.response_format["schema"]["properties"]["answer"]["enum"] == ["yes", "no"]


@pytest.mark.parametrize("alts, expected", [
    # capitalised and partial tokens count for the option they start
    ([("No", -0.2), ("yes", -1.8)], {"yes": 0.168, "no": 0.832}),
    # a token that matches no option is ignored
    ([("maybe", -0.1), ("yes", -1.0)], {"yes": 1.0, "no": 0.0}),
    # a token spelling one option exactly is that option's, even when it starts another
    ([("no", -0.5), ("not sure", -1.5), ("yes", -1.5)], {"yes": 0.212, "no": 0.576, "not sure": 0.212}),
])
def test_option_probabilities(alts, expected):
    toks = [{"token": '{"answer": "', "logprob": 0.0, "top_logprobs": []},
            {"token": alts[0][0], "logprob": alts[0][1], "top_logprobs": [{"token": t, "logprob": lp} for t, lp in alts]}]
    probs = option_probabilities({"content": toks}, "answer", list(expected))
    assert {k: round(v, 3) for k, v in probs.items()} == expected


def test_option_probabilities_token_spanning_value_start():
    toks = [{"token": '{"label":', "logprob": 0.0, "top_logprobs": []},
            {"token": ' "ship', "logprob": -0.1, "top_logprobs": [{"token": ' "ship', "logprob": -0.1},
                                                                 {"token": ' "bill', "logprob": -2.4},
                                                                 {"token": ' null', "logprob": -3.0}]}]
    probs = option_probabilities({"content": toks}, "label", ["billing", "shipping"])
    assert probs["shipping"] > 0.9 and probs["billing"] > 0


def test_option_probabilities_without_logprobs_is_none():
    assert option_probabilities(None, "answer", ["yes", "no"]) is None
    assert option_probabilities({"content": []}, "answer", ["yes", "no"]) is None


def test_prompt_is_the_instructions_and_the_inputs_without_dspy_scaffolding():
    from labelloop.programs.choice import ChoiceAdapter

    program = zero_shot_program(LABELS, DESCS)
    system, user = ChoiceAdapter().format(program.predict.signature, [], {"text": "RECORD-TEXT"})
    assert "Your input fields" not in system["content"] and "- shipping: parcels" in system["content"]
    assert "`label`." in system["content"]  # the options are left to the schema
    assert user["content"] == "[[ ## text ## ]]\nRECORD-TEXT"  # nothing after the record text


def test_an_lm_without_a_schema_gets_dspys_whole_prompt():
    """An LM DSPy sends no schema (DummyLM here; a served model it does not know) has no grammar either: it is told the
    options and the answer's format, before and after the text."""
    from labelloop.programs.choice import takes_schema

    lm = DummyLM([{"answer": "yes"}], adapter=dspy.JSONAdapter())
    assert not takes_schema(lm)
    with dspy.context(lm=lm):
        assert question_program("Is it about money?", ["yes", "no"])(text="a refund").answer == "yes"
    system, user = lm.history[-1]["messages"]
    assert "`answer` (Literal['yes', 'no'])" in system["content"] and user["content"].endswith("`answer`.")
