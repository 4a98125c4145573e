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
