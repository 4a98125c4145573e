"""Closed-choice programs: a zero-shot classifier and a prompted question, both with answer probabilities.

A small model's argmax answer is a poor labeler (it says "yes" far too often). When the LM returns
token log-probabilities, these programs turn them into a distribution over the allowed options,
which the labelers calibrate and threshold.
"""

from __future__ import annotations

import math
import re

import dspy
from dspy.utils.exceptions import AdapterParseError

from labelloop.programs.guard import guard_inputs
from labelloop.programs.signatures import AnswerQuestion, classify_signature, closed

TOP_LOGPROBS = 10
# Bump when the prompt format changes: it is part of every labeler version, so stored answers
# from an older format are not reused.
PROMPT_FORMAT = "compact-json-2"


class GuardedInputs:
    """Adapter mixin: record text enters the prompt through ``guard_text``, so it cannot forge the prompt's structure.

    Every user message (the record's and each demo's) is formatted here, so this is the one place
    a record's text becomes prompt text for every labelloop program (``labelloop.programs.guard``).
    """

    def format_user_message_content(self, signature, inputs, *args, **kwargs) -> str:
        return super().format_user_message_content(signature, guard_inputs(inputs), *args, **kwargs)


class CompactJSONAdapter(GuardedInputs, dspy.JSONAdapter):
    """DSPy's JSON adapter with a one-line reminder after the record text (programs with free-form answers)."""

    def user_message_output_requirements(self, signature) -> str:
        return "Respond with a JSON object with the field(s) " + ", ".join(f"`{f}`" for f in signature.output_fields) + "."


class ChoiceAdapter(GuardedInputs, dspy.JSONAdapter):
    """The prompt of a closed choice: the instructions, one line on the answer, the inputs; nothing after the text.

    DSPy's default system message describes every field's type and layout before the instructions
    and repeats the output format after the record text; on the embedded 1.5B model that scaffolding
    biased zero-shot answers. The options are left to the schema (a llama.cpp grammar, or structured
    outputs): naming them in the prompt as well cost the embedded model zero-shot accuracy and a
    question's AUC on the YouTube dev records (``benchmarks/choice_prompt.py``). An LM that takes no
    schema (a served model DSPy does not know) has nothing else to go by: it gets DSPy's full prompt,
    which names the options and the answer's format (``CompactJSONAdapter``).
    """

    def __call__(self, lm, lm_kwargs, signature, demos, inputs):
        adapter = super() if takes_schema(lm) else CompactJSONAdapter()
        return adapter.__call__(lm, lm_kwargs, signature, demos, inputs)

    def format_field_description(self, signature) -> str:
        return ""

    def format_field_structure(self, signature) -> str:
        return "Answer with a JSON object with the field(s) " + ", ".join(f"`{f}`" for f in signature.output_fields) + "."

    def format_task_description(self, signature) -> str:
        return signature.instructions

    def user_message_output_requirements(self, signature) -> None:
        return None  # DSPy skips the reminder after the record text


def takes_schema(lm) -> bool:
    """Whether DSPy sends this LM the answer's JSON schema (which then constrains its answer)."""
    return "response_format" in lm.supported_params and bool(lm.supports_response_schema)


class ClosedChoice(dspy.Module):
    """Predict one of ``options`` for a text and report a probability for each option.

    Args:
        signature: a signature whose output ``field`` is restricted to ``options``.
        field: the output field holding the choice.
        options: the allowed answers, in a stable order.
        fixed_inputs: inputs that are the same for every record (kept before the text in the prompt).
    """

    def __init__(self, signature, field: str, options: list[str], **fixed_inputs):
        super().__init__()
        self.predict = dspy.Predict(signature)
        self.field = field
        self.options = list(options)
        self.fixed_inputs = fixed_inputs
        self.adapter = ChoiceAdapter()

    def forward(self, text: str) -> dspy.Prediction:
        try:
            with dspy.context(adapter=self.adapter):
                pred = self.predict(**self.fixed_inputs, text=text, config={"logprobs": True, "top_logprobs": TOP_LOGPROBS})
        except AdapterParseError as exc:  # an answer outside the options is data: the labeler abstains
            return dspy.Prediction(answer=None, probs=None, raw=str(exc.lm_response)[:200])
        answer = getattr(pred, self.field, None)
        if answer not in self.options:
            return dspy.Prediction(answer=None, probs=None, raw=str(answer))
        probs = option_probabilities(getattr(pred, "logprobs", None), self.field, self.options)
        return dspy.Prediction(answer=answer, probs=probs or {o: float(o == answer) for o in self.options}, raw=answer)


def zero_shot_program(labels: list[str], descriptions: list[str]) -> ClosedChoice:
    """Zero-shot classification over a taxonomy."""
    return ClosedChoice(classify_signature(labels, descriptions), "label", labels)


def question_program(question: str, options: list[str]) -> ClosedChoice:
    """A prompted labeling-function question with a closed set of answers (e.g. yes / no)."""
    return ClosedChoice(closed(AnswerQuestion, "answer", options), "answer", options, question=question)


def prompt_chars(program: ClosedChoice, text: str) -> int:
    """Characters of the exact messages the JSON adapter would send for this text."""
    inputs = {**program.fixed_inputs, "text": text}
    messages = program.adapter.format(program.predict.signature, demos=[], inputs=inputs)
    return sum(len(m["content"]) for m in messages)


def _field(item, name: str):
    return item.get(name) if isinstance(item, dict) else getattr(item, name, None)


def _tokens(logprobs) -> list[dict]:
    """The answer's tokens as dicts with a text ``token``; empty when the log-probs are not a list of such tokens."""
    content = _field(logprobs, "content") if logprobs is not None else None
    if not isinstance(content, (list, tuple)):
        return []
    tokens = []
    for t in content:
        try:
            t = t if isinstance(t, dict) else dict(t)
        except (TypeError, ValueError):
            return []
        if not isinstance(t.get("token"), str):
            return []
        tokens.append(t)
    return tokens


def _probability(logprob) -> float | None:
    """exp(logprob) for a real log-probability; None for anything else (text, NaN). Above 0 counts as 0 (p = 1)."""
    if isinstance(logprob, bool) or not isinstance(logprob, (int, float)) or math.isnan(logprob):
        return None
    return math.exp(min(float(logprob), 0.0))


def option_probabilities(logprobs, field: str, options: list[str]) -> dict[str, float] | None:
    """Distribution over ``options`` read from the tokens where the JSON value of ``field`` starts.

    Each alternative token at that position is credited to the option it spells exactly, else to
    the options it is a prefix of (split evenly when several share it); the result is renormalised.
    Returns None when the log-probs do not cover the value (no log-probs, or no alternative matched any option).
    Malformed log-probs (a token without text, an alternative whose log-prob is not a real number) never
    raise: such alternatives are passed over, and the result is finite and sums to 1.

    >>> toks = [{"token": '{"answer": "', "logprob": 0.0, "top_logprobs": []},
    ...         {"token": "yes", "logprob": -0.2, "top_logprobs": [{"token": "yes", "logprob": -0.2},
    ...                                                            {"token": "no", "logprob": -1.7}]}]
    >>> p = option_probabilities({"content": toks}, "answer", ["yes", "no"])
    >>> round(p["yes"], 3), round(p["no"], 3)
    (0.818, 0.182)
    """
    tokens = _tokens(logprobs)
    text = "".join(t["token"] for t in tokens)
    match = re.search(rf'"{re.escape(field)}"\s*:\s*"', text)
    if match is None:
        return None
    start, offset = match.end(), 0
    for token in tokens:
        if offset + len(token["token"]) > start:
            break
        offset += len(token["token"])
    else:
        return None
    head = token["token"][: start - offset]  # the part of this token before the value begins
    mass = dict.fromkeys(options, 0.0)
    alts = token.get("top_logprobs")
    for alt in alts if isinstance(alts, (list, tuple)) else []:
        piece, p = _field(alt, "token"), _probability(_field(alt, "logprob"))
        if not isinstance(piece, str) or p is None or not piece.startswith(head):
            continue
        piece = piece[len(head):].rstrip('"').lower()
        exact = [o for o in options if o.lower() == piece]  # "spam" is spam's, not also "spammy"'s
        hits = exact or [o for o in options if piece and o.lower().startswith(piece)]
        for option in hits:
            mass[option] += p / len(hits)
    total = sum(mass.values())
    if total <= 0:
        return None
    return {o: m / total for o, m in mass.items()}
