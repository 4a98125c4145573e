"""The one protocol every LLM labeler implements, and the context it answers in.

A flow asks a labeler for its version (the key its stored answers are found by), its DSPy
program, the extra inputs it needs asked, and then turns the answers into votes through it; it
never asks which type a labeler is. A new LLM labeler type is one subclass of ``LLMLabeler`` and
one config spec (a ``LabelerSpec`` subclass, registered with ``register_labeler``) that builds it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import pydantic
from scipy import sparse

from labelloop.labelers.labels import ABSTAIN, Taxonomy
from labelloop.programs.errors import ConfigError
from labelloop.programs.lm import LMSpec

Answer = dict | None  # a program's prediction as a dict, or None where no answer is stored


@dataclass
class LabelingContext:
    """What a labeler's version and program depend on besides its own settings.

    Args:
        taxonomy: the label set.
        lm: the spec of the LM that answers (its key is part of every version).
        label_index: ``retriever -> LabelIndex`` over the taxonomy (the flows keep label embeddings on disk).
        states: optimized program states saved by ``labelloop optimize``, by labeler name.
    """

    taxonomy: Taxonomy
    lm: LMSpec
    label_index: Callable[[str], object] | None = None
    states: dict[str, dict] = field(default_factory=dict)


def single_label_votes(votes: np.ndarray, k: int) -> sparse.csr_matrix:
    """A single-label labeler's votes (label id or ABSTAIN per record) as +1 on that label.

    >>> single_label_votes(np.array([1, -1, 0]), 2).toarray().tolist()
    [[0, 1], [0, 0], [1, 0]]
    """
    votes = np.asarray(votes)
    rows = np.flatnonzero(votes != ABSTAIN)
    return sparse.csr_matrix((np.ones(len(rows), dtype=np.int8), (rows, votes[rows])), shape=(len(votes), k))


class LLMLabeler(ABC):
    """An LLM-backed labeling function: a program answers each record once, the labeler maps answers to votes.

    Subclasses set ``name`` and implement ``version``, ``program`` and ``votes``; the rest has defaults.
    ``optimizable`` says whether ``labelloop optimize`` may compile the program on gold dev records.
    """

    name: str
    optimizable: ClassVar[bool] = False

    @abstractmethod
    def version(self, ctx: LabelingContext) -> str:
        """Hash of everything that decides the answers; stored answers are found by it."""

    @abstractmethod
    def program(self, ctx: LabelingContext, *, optimized: bool = True, lm=None):
        """The DSPy program that answers one text (``optimized``: with the saved state; ``lm``: bound to it)."""

    @abstractmethod
    def votes(self, answers: list[Answer], taxonomy: Taxonomy) -> np.ndarray:
        """One label id or ABSTAIN per answer."""

    def vote_sets(self, answers: list[Answer], taxonomy: Taxonomy) -> sparse.csr_matrix:
        """Multi-label votes, (n, k) int8: +1 the label applies, -1 it does not, 0 abstain."""
        return single_label_votes(self.votes(answers, taxonomy), len(taxonomy))

    def extra_items(self) -> list[tuple[str, str]]:
        """(id, text) inputs asked besides the records (content-free calibration inputs, for instance)."""
        return []

    def fit(self, pool: list[Answer], extra: list[Answer], class_balance=None) -> LLMLabeler:
        """Learn from the unlabeled pool's answers (and the extra items' answers) before voting."""
        return self

    def invalid(self, answers: list[Answer]) -> int:
        """Answers outside what the labeler accepts (they count as abstains)."""
        return sum(1 for a in answers if a is not None and (not isinstance(a, dict) or a.get("answer") is None))

    def prompt_cost(self, texts: list[str], ctx: LabelingContext) -> tuple[int, int]:
        """(LLM calls, prompt characters) of answering ``texts``: one call each, with this labeler's prompt."""
        from labelloop.programs.choice import prompt_chars

        program = self.program(ctx)
        return len(texts), sum(prompt_chars(program, text) for text in texts)

    def direct_scores(self, answers: list[Answer], taxonomy: Taxonomy) -> np.ndarray | None:
        """(n, k) scores of what asking the LLM directly gives (no calibration, no label model), or None
        when the labeler does not answer over the whole taxonomy."""
        return None


LABELER_TYPES: dict[str, type[LabelerSpec]] = {}


def register_labeler(spec: type[LabelerSpec]) -> type[LabelerSpec]:
    """Make a labeler spec class usable as ``{type: <its type>}`` in configs (a class decorator).

    The class needs a ``type: Literal["<name>"]`` field and a ``build(taxonomy)`` method returning
    the labelers it stands for: an ``LLMLabeler`` or Snorkel labeling functions.
    """
    (name,) = spec.model_fields["type"].annotation.__args__
    LABELER_TYPES[name] = spec
    return spec


class LabelerSpec(pydantic.BaseModel):
    """One entry of the config's ``labelers:`` list: its settings, and how to build the labelers it stands for."""

    model_config = pydantic.ConfigDict(extra="forbid")

    type: str

    def build(self, taxonomy: Taxonomy) -> list:
        raise NotImplementedError

    def label_id(self, taxonomy: Taxonomy, label: str) -> int:
        if label not in taxonomy.names:
            raise ConfigError(f"labeler {getattr(self, 'name', self.type)!r}: label {label!r} is not in the taxonomy "
                              f"{list(taxonomy.names)}")
        return taxonomy.id(label)
