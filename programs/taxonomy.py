"""Taxonomy bootstrapping programs (TnT-LLM style): summarise, name / generate / update / review, assign.

Each step's answer is typed (a JSON schema, so the embedded model's grammar constrains it), then
checked by ``validate_taxonomy``; a malformed or over-limit answer is asked again with the
problems stated, a bounded number of times (``retry_config``), before ``TaxonomyError`` names the
step and the problems. Nothing here reads or writes files: the flow caches and stores the answers.
Signatures live in ``programs.signatures``, the rules in ``programs.taxonomy_rules``, the
clustering in ``programs.clustering``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace

import dspy
import pydantic
from dspy.utils.exceptions import AdapterParseError

from labelloop.programs.choice import ClosedChoice, CompactJSONAdapter
from labelloop.programs.errors import TaxonomyError
from labelloop.programs.signatures import (
    GenerateTaxonomy,
    NameGroup,
    ReviewTaxonomy,
    SummariseText,
    UpdateTaxonomy,
    classify_signature,
)
from labelloop.programs.taxonomy_rules import (
    EDIT_ACTIONS,
    GENERIC_WORDS,
    JOINING_WORDS,
    MAX_EDITS,
    MIN_DESCRIPTION_CHARS,
    NONE_OF_THESE,
    RETRY_TEMPERATURE,
    Constraints,
    apply_edits,
    copied_summary,
    edits_type,
    format_taxonomy,
    label_fields,
    labels_type,
    normalise,
    validate_taxonomy,
)

# Bump when a prompt changes in a way the signature text does not show; part of every cache key.
PROMPT_VERSION = "taxonomy-1"


def retry_config(attempt: int, max_tokens: int) -> dict:
    """The LM settings of an attempt: greedy first, then sampled (seeded by the attempt number).

    At temperature 0 a small model tends to repeat its rejected answer word for word.

    >>> retry_config(1, 64), retry_config(2, 64)
    ({'max_tokens': 64}, {'max_tokens': 64, 'temperature': 0.7, 'seed': 2})
    """
    config = {"max_tokens": max_tokens}
    if attempt > 1:
        config |= {"temperature": RETRY_TEMPERATURE, "seed": attempt}
    return config


STEPS = {"name": NameGroup, "generate": GenerateTaxonomy, "update": UpdateTaxonomy, "review": ReviewTaxonomy}


def prompt_version(step: str, constraints: Constraints | None = None) -> str:
    """A hash of what shapes a step's answers besides its inputs: signature text, answer schema, PROMPT_VERSION."""
    sig = SummariseText if step == "summarise" else STEPS.get(step)
    blob = [PROMPT_VERSION, step]
    if sig is not None:
        blob += [sig.instructions, {k: str(v.json_schema_extra) for k, v in sig.fields.items()}]
    if constraints is not None:
        blob += [constraints.text(single=step == "name"), labels_type(constraints).model_json_schema(),
                 MIN_DESCRIPTION_CHARS, sorted(GENERIC_WORDS), sorted(JOINING_WORDS), MAX_EDITS, list(EDIT_ACTIONS),
                 RETRY_TEMPERATURE, "copied-summary check" if step == "name" else None]
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class StepResult:
    """A validated answer: the labels (and for update and review the edits made, for update its rating), and its cost."""

    labels: list[dict]
    calls: int
    rating: int | None = None
    edits: list[str] | None = None
    retried_for: list[str] | None = None  # problems of earlier attempts

    def to_dict(self) -> dict:
        return asdict(self)


class TaxonomyStep(dspy.Module):
    """One of name / generate / update / review, with validation and bounded retries.

    ``name`` answers one label for one group of records, ``generate`` a whole taxonomy, ``update``
    (with a rating) and ``review`` a few edits to ``current``, applied by ``apply_edits``: a label
    no edit names cannot be garbled on the way, and the answer is short.

    Args:
        step: ``name``, ``generate``, ``update`` or ``review``.
        constraints: what every answer must satisfy.
        max_attempts: LM calls at most, the first included.
        max_tokens: the answer budget per call.
        current: the taxonomy an update or review edits.
    """

    def __init__(self, step: str, constraints: Constraints, max_attempts: int = 3, max_tokens: int | None = None,
                 current: list[dict] | None = None):
        super().__init__()
        self.step = step
        self.single = step == "name"
        self.current = current
        if step in ("update", "review") and not current:
            raise ValueError(f"the {step} step needs the current taxonomy")
        self.constraints = replace(constraints, min_labels=1, max_labels=1) if self.single else constraints
        self.max_attempts = max(1, max_attempts)
        signature = STEPS[step]
        self.strict = None  # the name step's last attempt after too-long names: a word-count pattern in the schema
        if self.single:
            strict = signature
            for field, type_ in label_fields(constraints, top_level=True).items():
                signature = signature.with_updated_fields(field, type_=type_)
            for field, type_ in label_fields(constraints, top_level=True, strict=True).items():
                strict = strict.with_updated_fields(field, type_=type_)
            self.strict = dspy.Predict(strict)
            budget = 200
        elif current is not None:
            signature = signature.with_updated_fields("edits", type_=edits_type([x["name"] for x in current], constraints))
            budget = 120 + 90 * MAX_EDITS
        else:
            signature = signature.with_updated_fields("labels", type_=labels_type(constraints))
            budget = 120 + 80 * constraints.max_labels
        self.max_tokens = max_tokens or budget
        self.predict = dspy.Predict(signature)

    def forward(self, **inputs) -> StepResult:
        if self.current is not None:
            inputs["taxonomy"] = format_taxonomy(self.current)
        problems, history, labels, fallback = ["none"], [], [], None
        for attempt in range(1, self.max_attempts + 1):
            config = retry_config(attempt, self.max_tokens)
            last = attempt == self.max_attempts > 1
            predict = self.strict if self.strict and last and any(" words; at most " in p for p in history) else self.predict
            try:
                with dspy.context(adapter=CompactJSONAdapter()):
                    pred = predict(**inputs, rules=self.constraints.text(single=self.single),
                                   problems=_problem_text(problems), config=config)
            except AdapterParseError as exc:
                problems = [f"the answer was not the requested JSON ({_short(exc.lm_response)}); "
                            f"answer with a JSON object with the field(s) {list(STEPS[self.step].output_fields)}"]
                history += problems
                continue
            done, soft = None, []  # soft problems are sent back, but an answer with only those is kept as a fallback
            if self.single:
                labels = normalise([{k: getattr(pred[k], "root", pred[k]) for k in ("name", "description")}])
                soft = copied_summary(labels[0], inputs.get("summaries", ""))
                problems = validate_taxonomy(labels, self.constraints)
            elif self.current is not None:
                edits = [e.model_dump() if isinstance(e, pydantic.BaseModel) else dict(e)
                         for e in getattr(pred["edits"], "root", pred["edits"]) or []]
                labels, problems, done = apply_edits(self.current, edits)
                problems += validate_taxonomy(labels, self.constraints) if not problems else []
            else:
                labels = pred["labels"]  # not pred.labels: that is a Prediction method
                labels = normalise(getattr(labels, "root", labels) or [])
                problems = validate_taxonomy(labels, self.constraints)
            if not problems and not soft:
                result = StepResult(labels, attempt, edits=done, retried_for=history or None)
                if self.step == "update":
                    result.rating = min(5, max(1, int(pred["rating"] or 1)))
                return result
            if not problems:
                fallback = labels
            problems = problems + soft
            history += problems
        if fallback is not None:
            return StepResult(fallback, self.max_attempts, retried_for=history)
        repaired = _drop_repeats(labels) if problems and all(p.startswith("duplicate label name") for p in problems) else None
        if repaired is not None and self.current is None and not validate_taxonomy(repaired, self.constraints):
            # a small model that loops repeats whole labels; after the last attempt keep each first one
            return StepResult(repaired, self.max_attempts, retried_for=history + ["repeated labels dropped"])
        raise TaxonomyError(self.step, problems, self.max_attempts)


def _drop_repeats(labels: list[dict]) -> list[dict]:
    seen, out = set(), []
    for label in labels:
        if label["name"] not in seen:
            seen.add(label["name"])
            out.append(label)
    return out


def _problem_text(problems: list[str]) -> str:
    return "none" if problems == ["none"] else "\n".join(f"- {p}" for p in problems)



def _short(text, n: int = 120) -> str:
    text = " ".join(str(text or "").split())
    return text if len(text) <= n else text[:n] + "..."


class Summariser(dspy.Module):
    """One short summary per text; an unparseable answer falls back to the text's first words."""

    def __init__(self, use_case: str, max_words: int = 25, max_attempts: int = 2):
        super().__init__()
        self.use_case = use_case
        self.max_words = max_words
        self.max_attempts = max(1, max_attempts)
        signature = SummariseText.with_instructions(f"{SummariseText.instructions}\n\nUse case: {use_case}")
        self.predict = dspy.Predict(signature.with_updated_fields("summary", desc=f"one sentence, at most {max_words} words"))

    def forward(self, text: str) -> dspy.Prediction:
        for attempt in range(1, self.max_attempts + 1):
            try:
                with dspy.context(adapter=CompactJSONAdapter()):
                    pred = self.predict(text=text, config={"max_tokens": 3 * self.max_words + 24})
            except AdapterParseError:
                continue
            words = str(pred.summary or "").split()
            if words:
                return dspy.Prediction(summary=" ".join(words[: self.max_words]), calls=attempt, ok=True)
        return dspy.Prediction(summary=" ".join(text.split()[: self.max_words]), calls=self.max_attempts, ok=False)


def assignment_program(labels: list[dict]) -> ClosedChoice:
    """Closed choice over the labels plus an explicit ``none_of_these`` (the coverage check)."""
    names = [x["name"] for x in labels] + [NONE_OF_THESE]
    descriptions = [x["description"] for x in labels] + ["None of the labels above fits the text."]
    return ClosedChoice(classify_signature(names, descriptions), "label", names)
