"""Closed-choice LLM labelers (zero-shot, prompted questions): map program answers (computed earlier, by a flow) to votes.

A program answer is ``{"answer": option or None, "probs": {option: p} or None}``. Small models are
strongly biased toward some answers (a 1.5B model calls most support messages "technical_issue",
and answers "yes" far too often), so a labeler first calibrates the probabilities, then takes the
most probable option, abstains under the threshold, and maps the option through the verbalizer.

Calibration divides by a reference distribution and multiplies by the expected option prior:
- ``batch`` (default): the reference is the mean answer distribution over the unlabeled records
  themselves (batch calibration); the prior comes from the gold dev labels' class balance.
- ``content_free``: the reference is the answer to content-free inputs such as "N/A" (contextual
  calibration, as in "Language Models in the Loop"), with a uniform prior.
- ``none``: the model's own probabilities.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import numpy as np
from pydantic import Field, field_validator

from labelloop.labelers.base import LabelerSpec, LabelingContext, LLMLabeler, register_labeler
from labelloop.labelers.labels import ABSTAIN, Taxonomy
from labelloop.programs.errors import ConfigError

CONTENT_FREE_TEXTS = ("N/A", "", "[MASK]")
CALIBRATIONS = ("batch", "content_free", "none")


def _probabilities(probs, options: list[str]) -> np.ndarray | None:
    """An answer's probabilities of ``options``, or None unless they are a mapping of finite, non-negative numbers
    with a positive sum (a stored answer may be malformed: text, NaN, a list).

    >>> _probabilities({"yes": 0.75}, ["yes", "no"]).tolist(), _probabilities({"yes": float("nan")}, ["yes", "no"])
    ([0.75, 0.0], None)
    """
    if not isinstance(probs, dict):
        return None
    values = [probs.get(o, 0.0) for o in options]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0 for v in values):
        return None
    p = np.array(values, dtype=float)
    return p if p.sum() > 0 else None


def _mean_probs(answers, options: list[str]) -> np.ndarray | None:
    rows = [p for a in answers if isinstance(a, dict) and (p := _probabilities(a.get("probs"), options)) is not None]
    return np.mean(rows, axis=0) if rows else None


@dataclass
class ClosedChoiceLabeler(LLMLabeler):
    """An LLM labeling function whose program picks one of a closed set of options.

    Args:
        name: stable column name in the label matrix.
        options: the answers the program may give, in order.
        verbalizer: option -> label id or ABSTAIN.
        prompt: what the program is asked (the question, or the taxonomy for zero-shot).
        threshold: minimum calibrated probability to vote; below it the labeler abstains.
        calibration: ``batch``, ``content_free`` or ``none`` (see the module docstring).
    """

    kind: ClassVar[str]  # part of the version: which program answers

    name: str
    options: list[str]
    verbalizer: dict[str, int]
    prompt: str
    threshold: float = 0.0
    calibration: str = "batch"
    scale_: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self):
        if self.calibration not in CALIBRATIONS:
            raise ValueError(f"labeler {self.name!r}: calibration must be one of {CALIBRATIONS}, got {self.calibration!r}")

    def version(self, ctx: LabelingContext) -> str:
        """Hash of what determines the program's answers: prompt, options, model and its answer settings.

        The verbalizer, threshold and calibration are left out: changing them re-derives votes
        from stored answers without a single new LLM call.
        """
        from labelloop.programs.choice import PROMPT_FORMAT

        model, params = ctx.lm.key()
        blob = json.dumps([PROMPT_FORMAT, self.kind, self.prompt, self.options, model, params], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def option_prior(self, class_balance=None) -> np.ndarray:
        """Expected share of each option: its label's class balance; abstain options share the rest.

        >>> lf = PromptLabeler("q", ["yes", "no"], {"yes": 1, "no": -1}, "Q?")
        >>> lf.option_prior([0.75, 0.25]).tolist()
        [0.25, 0.75]
        """
        k = 1 + max(self.verbalizer.values())
        balance = np.full(k, 1 / k) if class_balance is None else np.asarray(class_balance, dtype=float)
        targets = [self.verbalizer[o] for o in self.options]
        prior = np.array([balance[t] if t != ABSTAIN else 0.0 for t in targets])
        n_abstain = sum(t == ABSTAIN for t in targets)
        if n_abstain:
            rest = max(1.0 - prior.sum(), 0.05)
            prior = np.where(np.array(targets) == ABSTAIN, rest / n_abstain, prior)
        return prior / prior.sum()

    def extra_items(self) -> list[tuple[str, str]]:
        """The content-free inputs, for content-free calibration."""
        if self.calibration != "content_free":
            return []
        return [(f"__content_free_{i}", text or " ") for i, text in enumerate(CONTENT_FREE_TEXTS)]

    def fit(self, pool=(), extra=(), class_balance=None) -> ClosedChoiceLabeler:
        """Learn the per-option scale from the unlabeled pool's answers or the content-free answers."""
        self.scale_ = None
        if self.calibration == "batch":
            reference, prior = _mean_probs(pool, self.options), self.option_prior(class_balance)
        elif self.calibration == "content_free":
            reference, prior = _mean_probs(extra, self.options), np.ones(len(self.options))
        else:
            return self
        if reference is not None:
            self.scale_ = prior / np.clip(reference, 1e-3, None)
        return self

    def calibrated(self, probs: dict[str, float]) -> np.ndarray:
        """The calibrated distribution over the options; all zeros when ``probs`` is not a valid distribution."""
        p = _probabilities(probs, self.options)
        if p is None:
            return np.zeros(len(self.options))
        if self.scale_ is not None:
            p = p * self.scale_
        total = p.sum()
        return p / total if total > 0 else p

    def _parse(self, answer) -> tuple[str, dict | None] | None:
        """(option, probabilities or None) of a well-formed answer; None for one that cannot vote: no answer,
        an answer outside the options, or malformed (not a mapping, probabilities that are not numbers >= 0)."""
        if not isinstance(answer, dict):
            return None
        option, probs = answer.get("answer"), answer.get("probs")
        if not isinstance(option, str) or option not in self.options:
            return None
        if not probs:
            return option, None
        return (option, probs) if _probabilities(probs, self.options) is not None else None

    def vote(self, answer: dict | None) -> int:
        """The label id this answer votes for, or ABSTAIN (also for answers outside the options, and malformed ones)."""
        parsed = self._parse(answer)
        if parsed is None:
            return ABSTAIN
        option, probs = parsed
        if probs is None:
            return self.verbalizer[option]
        p = self.calibrated(probs)
        best = int(p.argmax())
        if not p[best] > 0 or p[best] < self.threshold:
            return ABSTAIN
        return self.verbalizer[self.options[best]]

    def votes(self, answers: list[dict | None], taxonomy: Taxonomy | None = None) -> np.ndarray:
        return np.array([self.vote(a) for a in answers], dtype=int)

    def invalid(self, answers: list[dict | None]) -> int:
        """Stored answers that cannot vote: outside the options, or malformed (they count as abstains)."""
        return sum(1 for a in answers if a is not None and self._parse(a) is None)


@dataclass
class ZeroShotLabeler(ClosedChoiceLabeler):
    """Zero-shot classification: the program picks one label of the taxonomy."""

    kind: ClassVar[str] = "zero_shot"

    def program(self, ctx: LabelingContext | None = None, *, optimized: bool = True, lm=None):
        from labelloop.programs.choice import zero_shot_program

        names, descriptions = zip(*json.loads(self.prompt))
        return zero_shot_program(list(names), list(descriptions))

    def direct_scores(self, answers, taxonomy: Taxonomy) -> np.ndarray:
        """One-hot of each raw answer (no calibration); a zero row where the answer is off the list."""
        ids = answer_ids(answers, taxonomy.names)
        P = np.zeros((len(answers), len(taxonomy)))
        P[np.flatnonzero(ids != ABSTAIN), ids[ids != ABSTAIN]] = 1.0
        return P


@dataclass
class PromptLabeler(ClosedChoiceLabeler):
    """A prompted question whose answers map through the verbalizer to a label or an abstain."""

    kind: ClassVar[str] = "prompt"

    def program(self, ctx: LabelingContext | None = None, *, optimized: bool = True, lm=None):
        from labelloop.programs.choice import question_program

        return question_program(self.prompt, self.options)


def answer_ids(answers: list[dict | None], names) -> np.ndarray:
    """What asking the LLM directly gives: each raw answer's label id, no calibration; ABSTAIN when off the list.

    >>> answer_ids([{"answer": "spam"}, {"answer": "eggs"}, None], ("ham", "spam")).tolist()
    [1, -1, -1]
    """
    names = list(names)
    return np.array([names.index(a["answer"]) if isinstance(a, dict) and isinstance(a.get("answer"), str)
                     and a["answer"] in names else ABSTAIN for a in answers], dtype=int)


def zero_shot_labeler(taxonomy: Taxonomy, name: str = "zero_shot", **kwargs) -> ZeroShotLabeler:
    prompt = json.dumps(list(zip(taxonomy.names, taxonomy.descriptions)))
    verbalizer = {n: i for i, n in enumerate(taxonomy.names)}
    return ZeroShotLabeler(name, list(taxonomy.names), verbalizer, prompt, **kwargs)


def prompt_labeler(name: str, question: str, answers: dict[str, str], taxonomy: Taxonomy, **kwargs) -> PromptLabeler:
    """A prompted question whose answers map to a label name or ``abstain``."""
    if not answers:
        raise ValueError(f"prompt labeler {name!r} needs an answers mapping, e.g. {{yes: <label>, no: abstain}}")
    verbalizer = {}
    for option, target in answers.items():
        if target == "abstain":
            verbalizer[option] = ABSTAIN
        elif target in taxonomy.names:
            verbalizer[option] = taxonomy.id(target)
        else:
            raise ValueError(
                f"prompt labeler {name!r}: answer {option!r} maps to {target!r}, which is neither 'abstain' "
                f"nor a taxonomy label {list(taxonomy.names)}"
            )
    if all(v == ABSTAIN for v in verbalizer.values()):
        raise ValueError(f"prompt labeler {name!r}: every answer maps to abstain, so it can never vote")
    return PromptLabeler(name, list(answers), verbalizer, question, **kwargs)


class LLMLabelerSpec(LabelerSpec):
    threshold: float = Field(0.0, ge=0, le=1)
    calibration: Literal[CALIBRATIONS] = "batch"


@register_labeler
class ZeroShotLF(LLMLabelerSpec):
    type: Literal["zero_shot"]
    name: str = "zero_shot"

    def build(self, taxonomy: Taxonomy) -> list:
        return [zero_shot_labeler(taxonomy, self.name, threshold=self.threshold, calibration=self.calibration)]


@register_labeler
class PromptLF(LLMLabelerSpec):
    type: Literal["prompt"]
    name: str
    question: str
    answers: dict[str, str]

    @field_validator("answers")
    @classmethod
    def _two_answers(cls, v):
        if len(v) < 2:
            raise ValueError(f"needs at least two answers (e.g. yes/no), got {list(v)}")
        return v

    def build(self, taxonomy: Taxonomy) -> list:
        try:
            return [prompt_labeler(self.name, self.question, self.answers, taxonomy, threshold=self.threshold,
                                   calibration=self.calibration)]
        except ValueError as exc:
            raise ConfigError(str(exc)) from None


def starter_labelers(label: str) -> list[dict]:
    """The labelers a scaffolded config (``labelloop init``) starts with: zero-shot, and keywords to fill in."""
    return [{"type": "zero_shot"}, {"type": "keywords", "name": f"kw_{label}", "label": label, "words": ["TODO"]}]
