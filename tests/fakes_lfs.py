"""A recorded-answer LM for `propose-lfs`, at the DSPy seam: rule proposals and example texts per label, in turn."""

from __future__ import annotations

import json
import re

from dspy.lm15 import Message, Response, TextPart, Usage

from tests.fakes import RuleEngine


def rules(*keywords: str, combos=(), regex=()) -> dict:
    """An answer: keywords (one rule each), combinations as word lists (or full dicts) and regular expressions."""
    combos = [r if isinstance(r, dict) else {"any_of": list(r), "all_of": [], "none_of": []} for r in combos]
    return {"keywords": list(keywords), "combinations": combos, "regex_rules": list(regex)}


# what a model could propose for the example project's labels in a first round
EXAMPLE_ANSWERS = {
    "billing": rules("refund", "charged", "invoice", "payment", "payments", regex=[r"\bvoucher\b"]),
    "shipping": rules("parcel", "courier", "tracking", "delivery", "delivered", regex=[r"\bdeliver(ed|y)?\b"]),
    "technical_issue": rules("error", "crash", "crashes", "not working", "broken", regex=[r"(a+)+$"]),
    "account_access": rules("password", "login", "log in", "account", "locked",
                            combos=[{"any_of": ["account"], "all_of": ["delete"], "none_of": []}]),
    "product_question": rules("compatible", "in stock", "does it", "the", "available"),
}


# what a model could write as example texts of each label (the similar rules), in the example project's style
EXAMPLE_TEXTS = {
    "billing": ["I was charged twice for the same order, please refund one payment.",
                "The invoice shows a higher price than I paid at checkout.",
                "My discount code was not applied and I paid full price."],
    "shipping": ["My parcel has not arrived yet and the tracking has not moved in days.",
                 "The courier left the package at the wrong address.",
                 "Can I change the delivery address for my order?"],
    "technical_issue": ["The app crashes every time I open the settings page.",
                        "My headphones will not pair with my phone any more.",
                        "The laptop does not turn on after the latest update."],
    "account_access": ["I cannot log in to my account, it says my password is wrong.",
                       "The two-factor code never arrives so I am locked out.",
                       "How do I change the email address on my account?"],
    "product_question": ["Is this charger compatible with the older tablet model?",
                         "Does the speaker come in a larger size, and is it in stock?",
                         "What warranty comes with this monitor?"],
}


class ProposalEngine(RuleEngine):
    """Answers each proposal with the next scripted answer for its label (a dict, or a raw string for a malformed
    answer); when a label's script runs out, with ``default`` for it, else no rule. ``asked`` records (label, round
    inputs) per call; ``fail_after`` raises KeyboardInterrupt on the call after that many (a killed run). A request for
    example texts (no ``rules_so_far`` input) gets the next of ``texts[label]``, else ``EXAMPLE_TEXTS[label]``, and
    ``examples_asked`` records its label."""

    def __init__(self, script: dict[str, list] | None = None, default: dict | None = None, fail_after: int | None = None,
                 texts: dict[str, list] | None = None):
        super().__init__()
        self.script = {k: list(v) for k, v in (script or {}).items()}
        self.default = EXAMPLE_ANSWERS if default is None else default
        self.texts = {k: list(v) for k, v in (texts or {}).items()}  # scripted example-text answers per label
        self.examples_asked: list[str] = []  # labels whose example texts were asked
        self.fail_after = fail_after
        self.asked: list[tuple[str, str]] = []

    def complete(self, request) -> Response:
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt
        self.calls += 1
        self.requests.append(request)
        content = request.messages[-1].text or ""
        label = re.search(r"\[\[ ## label ## \]\]\s*(\S+)", content).group(1)
        if "## rules_so_far ##" not in content:  # example texts (the similar rule), not a rule proposal
            self.examples_asked.append(label)
            queue = self.texts.get(label) or []
            answer = queue.pop(0) if queue else {"texts": EXAMPLE_TEXTS.get(label, [])}
        else:
            self.asked.append((label, content))
            queue = self.script.get(label) or []
            answer = queue.pop(0) if queue else self.default.get(label, rules())
        text = answer if isinstance(answer, str) else json.dumps(answer)
        return Response(id=None, model="proposals", message=Message.assistant([TextPart(text)]), finish_reason="stop",
                        usage=Usage(input_tokens=10, output_tokens=20))
