"""A recorded-answer LM for `propose-lfs`, at the DSPy seam: rule proposals per label, given in turn."""

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


class ProposalEngine(RuleEngine):
    """Answers each proposal with the next scripted answer for its label (a dict, or a raw string for a malformed
    answer); when a label's script runs out, with ``default`` for it, else no rule. ``asked`` records (label, round
    inputs) per call; ``fail_after`` raises KeyboardInterrupt on the call after that many (a killed run)."""

    def __init__(self, script: dict[str, list] | None = None, default: dict | None = None, fail_after: int | None = None):
        super().__init__()
        self.script = {k: list(v) for k, v in (script or {}).items()}
        self.default = EXAMPLE_ANSWERS if default is None else default
        self.fail_after = fail_after
        self.asked: list[tuple[str, str]] = []

    def complete(self, request) -> Response:
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt
        self.calls += 1
        self.requests.append(request)
        content = request.messages[-1].text or ""
        label = re.search(r"\[\[ ## label ## \]\]\s*(\S+)", content).group(1)
        self.asked.append((label, content))
        queue = self.script.get(label) or []
        answer = queue.pop(0) if queue else self.default.get(label, rules())
        text = answer if isinstance(answer, str) else json.dumps(answer)
        return Response(id=None, model="proposals", message=Message.assistant([TextPart(text)]), finish_reason="stop",
                        usage=Usage(input_tokens=10, output_tokens=20))
