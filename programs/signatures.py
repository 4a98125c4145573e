"""One signature per LLM step. The docstring is the instruction."""

from typing import Literal

import dspy


class ClassifyText(dspy.Signature):
    """Classify the text into exactly one of the labels below. Answer with the label name only."""

    text: str = dspy.InputField()
    label: str = dspy.OutputField()


class AnswerQuestion(dspy.Signature):
    """Read the text and answer the question about it with one of the allowed answers."""

    question: str = dspy.InputField()
    text: str = dspy.InputField()
    answer: str = dspy.OutputField()


def closed(signature: type[dspy.Signature], field: str, options: list[str]) -> type[dspy.Signature]:
    """Restrict an output field to a closed set of string options (a JSON-schema enum for the LM)."""
    if not options or len(set(options)) != len(options):
        raise ValueError(f"a closed answer needs distinct options, got {options!r}")
    return signature.with_updated_fields(field, type_=Literal[tuple(options)])


def classify_signature(labels: list[str], descriptions: list[str]) -> type[dspy.Signature]:
    """ClassifyText with the taxonomy in its instructions, so it is part of the shared prompt prefix."""
    lines = [f"- {name}: {desc}" if desc else f"- {name}" for name, desc in zip(labels, descriptions, strict=True)]
    signature = ClassifyText.with_instructions(ClassifyText.instructions + "\n\nLabels:\n" + "\n".join(lines))
    return closed(signature, "label", labels)
