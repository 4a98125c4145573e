"""A recorded-answer LM for taxonomy bootstrapping, at the DSPy seam (a custom engine like tests.fakes.RuleEngine)."""

from __future__ import annotations

import json

import dspy
from dspy.lm15 import Message, Response, TextPart, Usage

from tests.fakes import RuleEngine

GOLD = [{"name": "billing", "description": "Charges, refunds, invoices and payments."},
        {"name": "shipping", "description": "Delivery, tracking and lost or late parcels."},
        {"name": "technical_issue", "description": "A product, the website or the app malfunctions."},
        {"name": "account_access", "description": "Login, passwords and account settings."},
        {"name": "product_question", "description": "Questions about specs, stock or compatibility before buying."}]

STEP_MARKERS = {"Name one category": "name", "Propose a label set": "generate", "Check the current taxonomy": "update",
                "Review the taxonomy": "review", "say what the writer wants or reports": "summarise"}


def _step(request) -> str:
    system = request.system if isinstance(request.system, str) else "".join(p.text for p in request.system or [])
    return next((step for marker, step in STEP_MARKERS.items() if marker in system), "assign")


class TaxonomyEngine(RuleEngine):
    """Summaries are the text's first words; name / generate / update / review answers come from ``script``.

    ``script`` maps a step name to a list of answers given in turn (a list of labels for generate,
    of edits for update and review, a dict of output fields, or a raw string for a malformed
    answer); when a list runs out, or a step has none, generate answers with ``labels`` (default:
    the example project's five labels), name with the next one of them in turn, update and review
    with no edits.
    Assignment questions go to RuleEngine's keyword rules. ``steps`` records each call's step.
    """

    def __init__(self, script: dict | None = None, labels: list[dict] | None = None, **kwargs):
        super().__init__(**kwargs)
        self.script = {k: list(v) for k, v in (script or {}).items()}
        self.labels = labels or GOLD
        self.steps: list[str] = []

    def complete(self, request) -> Response:
        step = _step(request)
        if step == "assign":
            self.steps.append(step)
            return super().complete(request)
        self.calls += 1
        self.steps.append(step)
        self.requests.append(request)
        if step == "summarise":
            text = " ".join(request.messages[-1].text.split("[[ ## text ## ]]", 1)[1].split()[:8])
            content = json.dumps({"summary": text})
        else:
            queue = self.script.get(step) or []
            edit_step = step in ("update", "review")
            if queue:
                answer = queue.pop(0)
            elif step == "name":
                answer = self.labels[(self.steps.count("name") - 1) % len(self.labels)]
            else:
                answer = [] if edit_step else self.labels
            if isinstance(answer, str):
                content = answer
            else:
                fields = answer if isinstance(answer, dict) else {"edits" if edit_step else "labels": answer}
                if step == "update":
                    fields = {"rating": 4, **fields}
                content = json.dumps(fields)
        return Response(id=None, model="taxonomy", message=Message.assistant([TextPart(content)]), finish_reason="stop",
                        usage=Usage(input_tokens=10, output_tokens=5))


def taxonomy_lm(**kwargs) -> dspy.LM:
    return dspy.LM("fake/taxonomy", engine=TaxonomyEngine(**kwargs), cache=False)
