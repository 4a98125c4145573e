"""Hand-written heuristic labeling functions for the example project."""
import re

from snorkel.labeling import labeling_function

from labelloop.labelers.labels import ABSTAIN

# label ids follow the order in taxonomy.yaml
BILLING, SHIPPING, TECHNICAL_ISSUE, ACCOUNT_ACCESS, PRODUCT_QUESTION = range(5)

_COURIER = re.compile(r"\b(dhl|ups|fedex|dpd|gls|hermes|courier|tracking)\b", re.I)
_LOGIN = re.compile(r"\b(password|log ?in|sign ?in)\b", re.I)
_COMPAT = re.compile(r"\b(does it|does the|is it compatible|compatible with)\b", re.I)


@labeling_function()
def lf_tracking_number(x):
    """A tracking number or courier name points to a shipping question."""
    return SHIPPING if _COURIER.search(x.text) else ABSTAIN


@labeling_function()
def lf_password_login(x):
    """Mentions of a password or logging in point to an account-access problem."""
    return ACCOUNT_ACCESS if _LOGIN.search(x.text) else ABSTAIN


@labeling_function()
def lf_compatibility_question(x):
    """A question about what a product does or works with points to a pre-sales question."""
    if "?" in x.text and _COMPAT.search(x.text):
        return PRODUCT_QUESTION
    return ABSTAIN
