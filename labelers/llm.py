"""LLM labelers: map program answers (computed earlier, by a flow) to votes.

A program answer is ``{"answer": option or None, "probs": {option: p} or None}``. The labeler
calibrates the probabilities with the answers to content-free inputs (contextual calibration,
as in "Language Models in the Loop"), takes the most probable option, abstains when its calibrated
probability is under the threshold, and maps the option through the verbalizer.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import numpy as np

from labelers.labels import ABSTAIN, Taxonomy

CONTENT_FREE_TEXTS = ("N/A", "", "[MASK]")


@dataclass
class LLMLabeler:
    """One LLM-backed labeling function.

    Args:
        name: stable column name in the label matrix.
        kind: ``zero_shot`` or ``prompt``.
        options: the answers the program may give, in order.
        verbalizer: option -> label id or ABSTAIN.
        prompt: what the program is asked (the question, or the taxonomy for zero-shot).
        threshold: minimum calibrated probability to vote; below it the labeler abstains.
        calibrate: divide by the content-free answer distribution before voting.
    """

    name: str
    kind: str
    options: list[str]
    verbalizer: dict[str, int]
    prompt: str
    threshold: float = 0.0
    calibrate: bool = True
    content_free_: dict[str, float] | None = field(default=None, repr=False)

    def version(self, model_identity: str, params: dict) -> str:
        """Hash of what determines the program's answers: prompt, options, model and parameters.

        The verbalizer and threshold are left out: changing them re-derives votes from stored
        answers without a single new LLM call.
        """
        from programs.choice import PROMPT_FORMAT

        blob = json.dumps([PROMPT_FORMAT, self.kind, self.prompt, self.options, model_identity, params], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def fit_calibration(self, content_free_answers: list[dict | None]) -> "LLMLabeler":
        """Average the content-free distributions; they measure the model's bias toward each option."""
        probs = [a["probs"] for a in content_free_answers if a and a.get("probs")]
        if self.calibrate and probs:
            self.content_free_ = {o: float(np.mean([p.get(o, 0.0) for p in probs])) for o in self.options}
        return self

    def calibrated(self, probs: dict[str, float]) -> np.ndarray:
        p = np.array([probs.get(o, 0.0) for o in self.options], dtype=float)
        if self.content_free_ is not None:
            prior = np.array([self.content_free_.get(o, 0.0) for o in self.options])
            p = p / np.clip(prior, 1e-3, None)
        total = p.sum()
        return p / total if total > 0 else p

    def vote(self, answer: dict | None) -> int:
        """The label id this answer votes for, or ABSTAIN (also for answers outside the options)."""
        if not answer or answer.get("answer") not in self.options:
            return ABSTAIN
        if not answer.get("probs"):
            return self.verbalizer[answer["answer"]]
        p = self.calibrated(answer["probs"])
        best = int(p.argmax())
        if p[best] < self.threshold:
            return ABSTAIN
        return self.verbalizer[self.options[best]]

    def votes(self, answers: list[dict | None]) -> np.ndarray:
        return np.array([self.vote(a) for a in answers], dtype=int)


def zero_shot_labeler(taxonomy: Taxonomy, name: str = "zero_shot", **kwargs) -> LLMLabeler:
    prompt = json.dumps(list(zip(taxonomy.names, taxonomy.descriptions)))
    verbalizer = {n: i for i, n in enumerate(taxonomy.names)}
    return LLMLabeler(name, "zero_shot", list(taxonomy.names), verbalizer, prompt, **kwargs)


def prompt_labeler(name: str, question: str, answers: dict[str, str], taxonomy: Taxonomy, **kwargs) -> LLMLabeler:
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
    return LLMLabeler(name, "prompt", list(answers), verbalizer, question, **kwargs)


def build_program(labeler: LLMLabeler):
    """The DSPy program that answers for this labeler."""
    from programs.choice import question_program, zero_shot_program

    if labeler.kind == "zero_shot":
        names, descriptions = zip(*json.loads(labeler.prompt))
        return zero_shot_program(list(names), list(descriptions))
    return question_program(labeler.prompt, labeler.options)
