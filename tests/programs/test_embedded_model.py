"""Integration: the embedded llama.cpp model, for real, on a handful of records (run with --llm_call)."""

import dspy
import pytest

from labelloop.programs.choice import question_program, zero_shot_program
from labelloop.programs.lm import ModelNotAvailable, embedded_model_path, make_lm

pytestmark = pytest.mark.llm_call

RECORDS = [
    ("I was charged twice for the same order, please refund one payment.", "billing"),
    ("My parcel has been stuck at the courier depot for a week.", "shipping"),
    ("The headphones won't pair with my phone since the firmware update.", "technical_issue"),
    ("I can't log in, the reset password email never arrives.", "account_access"),
    ("Is this charger compatible with a 2019 MacBook Pro before I buy it?", "product_question"),
    ("Where is my package? The tracking page hasn't changed in days.", "shipping"),
]
LABELS = ["billing", "shipping", "technical_issue", "account_access", "product_question"]
DESCS = ["charges, refunds, invoices", "delivery and parcels", "a product or the app malfunctions",
         "login, passwords, account settings", "questions before buying"]


@pytest.fixture(scope="module")
def local_lm():
    try:
        embedded_model_path()
    except ModelNotAvailable as exc:
        pytest.skip(str(exc))
    return make_lm("local")


def test_zero_shot_on_the_embedded_model(local_lm):
    program = zero_shot_program(LABELS, DESCS)
    with dspy.context(lm=local_lm):
        preds = [program(text=text) for text, _ in RECORDS]
    assert all(p.answer in LABELS for p in preds)
    assert all(abs(sum(p.probs.values()) - 1) < 1e-6 for p in preds)
    correct = sum(p.answer == gold for p, (_, gold) in zip(preds, RECORDS))
    assert correct >= 5, [p.answer for p in preds]
    # the probability of the chosen answer comes from the model, not a one-hot fallback
    assert any(0 < p.probs[p.answer] < 1 for p in preds)


def test_yes_no_question_probabilities_separate_records(local_lm):
    program = question_program("Is the customer writing about a payment, a charge or a refund?", ["yes", "no"])
    with dspy.context(lm=local_lm):
        money = program(text=RECORDS[0][0]).probs["yes"]
        login = program(text=RECORDS[3][0]).probs["yes"]
    assert money > login


def test_closed_choice_scored_from_logits_agrees_with_grammar_generation(local_lm):
    """The fast path (options scored at the answer's first position) against generating the JSON under its grammar."""
    program = zero_shot_program(LABELS, DESCS)
    engine = local_lm.engine
    texts = [text for text, _ in RECORDS[:4]]
    with dspy.context(lm=local_lm):
        fast = [program(text=text) for text in texts]
        engine._formatter = False  # no chat template read: every call generates under the grammar
        try:
            slow = [program(text=text) for text in texts]
        finally:
            engine._formatter = None
    for f, s in zip(fast, slow):
        assert f.answer == s.answer
        for label in LABELS:  # the grammar path sees only its top log-probs: compare where both have mass
            if s.probs[label] > 0.02:
                assert abs(f.probs[label] - s.probs[label]) < 0.05, (f.probs, s.probs)


def test_closed_choice_prompt_tokens_are_the_chat_completions(local_lm):
    from labelloop.programs.choice import CompactJSONAdapter

    engine = local_lm.engine
    program = question_program("Is it about money?", ["yes", "no"])
    messages = CompactJSONAdapter().format(program.predict.signature, [], {"question": "Is it about money?",
                                                                           "text": RECORDS[0][0]})
    llama = engine._context_for(messages)
    llama.create_chat_completion(messages=messages, max_tokens=1)
    tokens = engine.prompt_tokens(llama, messages)
    assert list(llama.input_ids[: len(tokens)]) == tokens


def test_closed_choice_options_sharing_first_tokens_are_told_apart(local_lm):
    """Options that start alike ("no" / "not sure"; "spam" / "spammy") need steps past the first token."""
    program = question_program("Does the text mention a refund?", ["yes", "no", "not sure", "nope"])
    with dspy.context(lm=local_lm):
        pred = program(text=RECORDS[0][0])
    assert pred.answer in {"yes", "no", "not sure", "nope"}
    assert abs(sum(pred.probs.values()) - 1) < 1e-6
    assert pred.probs["yes"] > pred.probs["not sure"]
    assert all(p > 0 for p in pred.probs.values())  # each option gets its own score, not a share of a prefix
