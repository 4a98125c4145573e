"""Gold-label audit programs: several fixed phrasings judge one gold label each, with answer probabilities.

After "Are LLMs Better than Reported? Detecting Label Errors and Mitigating Their Effect on Model
Performance": a gold label is asked about in more than one way, and the share of phrasings that
disagree with it (each weighted by the probability of its disagreeing answer) says how likely it
is to be wrong. Asking the same thing in different words averages out some of one prompt's bias; the
last phrasing is negated, so a small model's habit of answering "yes" pulls it the other way.

Every phrasing is a closed choice (``labelloop.programs.choice``): a yes/no question about the gold
label, or the zero-shot classifier over the whole taxonomy. ``labelloop.flows.audit`` asks them
through the vote store and writes the audit.
"""

from __future__ import annotations

from dataclasses import dataclass

import dspy

from labelloop.programs.choice import ClosedChoice, zero_shot_program
from labelloop.programs.signatures import closed

# Bump when a phrasing's prompt changes: it is part of every audit answer's version.
AUDIT_FORMAT = "gold-audit-1"
YES_NO = ["yes", "no"]


class JudgeLabel(dspy.Signature):
    """An annotator gave the text below a label. Read the text and answer the question about that label with one of the
    allowed answers."""

    question: str = dspy.InputField()
    text: str = dspy.InputField()
    answer: str = dspy.OutputField()


@dataclass(frozen=True)
class Phrasing:
    """One way of asking whether a gold label is right.

    Args:
        name: stable name (a column of the audit and part of its answers' version).
        question: a yes/no question with ``{label}`` (the gold label and its description in
            parentheses); None: the zero-shot classifier picks the best label of the taxonomy.
        agree: the answer that agrees with the gold label ("yes", or "no" for a negated question).
    """

    name: str
    question: str | None = None
    agree: str = "yes"

    @property
    def per_label(self) -> bool:
        """Whether the prompt names the gold label (one version per label) or is the same for every record."""
        return self.question is not None

    def prompt(self, label: str, description: str = "") -> str:
        """The question about ``label``.

        >>> PHRASINGS[0].prompt("billing", "money")
        'Is "billing" (money) the right label for this text?'
        """
        named = f'"{label}" ({description})' if description else f'"{label}"'
        return self.question.format(label=named)

    def program(self, names: list[str], descriptions: list[str], label: str | None = None) -> ClosedChoice:
        """The DSPy program that answers this phrasing for records whose gold label is ``label``."""
        if not self.per_label:
            return zero_shot_program(list(names), list(descriptions))
        question = self.prompt(label, descriptions[list(names).index(label)])
        return ClosedChoice(closed(JudgeLabel, "answer", YES_NO), "answer", YES_NO, question=question)

    def disagreement(self, answer: dict | None, label: str) -> float | None:
        """Probability that this phrasing's answer disagrees with ``label``; None without a usable answer.

        >>> PHRASINGS[0].disagreement({"answer": "no", "probs": {"yes": 0.2, "no": 0.8}}, "billing")
        0.8
        >>> PHRASINGS[1].disagreement({"answer": "shipping", "probs": {"billing": 0.3, "shipping": 0.7}}, "billing")
        0.7
        >>> PHRASINGS[3].disagreement({"answer": "no", "probs": None}, "billing")  # negated: "no" agrees
        0.0
        """
        if not answer or answer.get("answer") is None:
            return None
        probs = answer.get("probs") or {answer["answer"]: 1.0}
        if not self.per_label:
            return round(1.0 - float(probs.get(label, 0.0)), 6)
        return round(1.0 - float(probs.get(self.agree, 0.0)), 6)


PHRASINGS = (
    Phrasing("label_fits", "Is {label} the right label for this text?"),
    Phrasing("best_label"),  # the zero-shot classifier over the taxonomy
    Phrasing("expert", "Would an expert annotator label this text {label}?"),
    Phrasing("label_wrong", "Is {label} a wrong label for this text?", agree="no"),
)
