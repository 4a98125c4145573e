"""A recorded-answer LM for tests: a DSPy custom engine that answers by keyword rules, with log-probs."""

from __future__ import annotations

import json
import math

import dspy
from dspy._vendor.lm15.types import TokenLogprob, TopLogprob
from dspy.lm15 import Message, Response, TextPart, Usage

# keyword in the record text -> label of the example taxonomy
RULES = {"refund": "billing", "charged": "billing", "invoice": "billing", "parcel": "shipping",
         "tracking": "shipping", "delivery": "shipping", "password": "account_access", "login": "account_access",
         "crash": "technical_issue", "error": "technical_issue", "compatible": "product_question"}


def _record_text(request) -> str:
    content = request.messages[-1].text or ""
    marker = "[[ ## text ## ]]"
    return content.split(marker, 1)[1].lower() if marker in content else content.lower()


class RuleEngine:
    """Answers every JSON-schema request with the first matching rule, and reports log-probs.

    ``answer_for(field, options, text)`` decides; the chosen option gets probability ``confidence``.
    """

    supports_response_schema = True
    supported_params = frozenset({"response_format", "temperature", "max_tokens", "logprobs", "top_logprobs"})

    def __init__(self, answer_for=None, confidence: float = 0.8):
        self.answer_for = answer_for or default_answer
        self.confidence = confidence
        self.calls = 0
        self.requests = []

    def __deepcopy__(self, memo):  # shared like the real engine, so calls are counted in one place
        return self

    def complete(self, request) -> Response:
        self.calls += 1
        self.requests.append(request)
        schema = (request.config.response_format or {}).get("schema") or {}
        (field, spec), = schema["properties"].items()
        if spec.get("type") == "array":  # a list answer (Infer-Retrieve-Rank): no log-probs
            items = spec.get("items") or {}
            answer = self.answer_for(field, items.get("enum"), _record_text(request))
            return Response(id=None, model="rule", message=Message.assistant([TextPart(json.dumps({field: answer}))]),
                            finish_reason="stop", usage=Usage(input_tokens=10, output_tokens=5))
        options = spec["enum"]
        answer = self.answer_for(field, options, _record_text(request))
        prefix = f'{{"{field}": "'
        others = [o for o in options if o != answer] or options
        rest = (1 - self.confidence) / len(others)
        top = [TopLogprob(token=answer, logprob=math.log(self.confidence))]
        top += [TopLogprob(token=o, logprob=math.log(rest)) for o in others if o != answer]
        logprobs = (TokenLogprob(token=prefix, logprob=0.0), TokenLogprob(token=answer, logprob=top[0].logprob, top=tuple(top)),
                    TokenLogprob(token='"}', logprob=0.0)) if request.config.logprobs is not None else None
        text = json.dumps({field: answer})
        return Response(id=None, model="rule", message=Message.assistant([TextPart(text)]), finish_reason="stop",
                        usage=Usage(input_tokens=10, output_tokens=5), logprobs=logprobs)

    def stream(self, request):
        from dspy.lm15 import response_to_events

        return response_to_events(self.complete(request))

    def close(self):
        pass


def default_answer(field: str, options: list[str] | None, text: str):
    if field == "guesses":  # Infer: a phrase per matching rule
        return sorted({RULES[word].replace("_", " ") for word in RULES if word in text})
    if field == "choices":  # Rank: the candidates whose rule matches
        wanted = {label for word, label in RULES.items() if word in text}
        return [o for o in options if o in wanted]
    if field == "label":
        return next((label for word, label in RULES.items() if word in text and label in options), options[-1])
    # a question: "yes" when the text mentions money, like the example's prompted labeler
    money = any(w in text for w in ("refund", "charged", "invoice", "paid", "price"))
    return "yes" if money and "yes" in options else options[-1]


def rule_lm(**kwargs) -> dspy.LM:
    return dspy.LM("fake/rule", engine=RuleEngine(**kwargs), cache=False)
