"""Infer-Retrieve-Rank (D'Oosterlinck et al. 2024) for label spaces of thousands of labels.

Infer asks the LM for free-text label guesses (a typed list, never comma parsing); Retrieve maps
the guesses to the nearest taxonomy labels (``programs.retrieval.LabelIndex``); Rank asks the LM
to choose from the top candidates. The final ranking is the ranker's choices, then the remaining
candidates in retrieval order. Answers outside the candidates are dropped and counted.

The LMs live on the module (``infer_lm``, ``rank_lm``) and are applied with ``dspy.context`` in
``forward``: DSPy's bootstrap optimizers reset per-predictor LMs, not module attributes.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

import dspy
import pydantic
from dspy.utils.exceptions import AdapterParseError
from pydantic import Field

from labelloop.programs.choice import CompactJSONAdapter
from labelloop.programs.retrieval import LabelIndex

MAX_GUESS_CHARS = 80


class InferLabels(dspy.Signature):
    """Read the text and write every label that applies to it, as short phrases in the wording a taxonomy would use."""

    text: str = dspy.InputField()
    guesses: list[str] = dspy.OutputField(desc="short label phrases")


class RankLabels(dspy.Signature):
    """Choose the candidate labels that apply to the text, most relevant first. Copy them exactly."""

    text: str = dspy.InputField()
    options: list[str] = dspy.InputField(desc="candidate labels")
    choices: list[str] = dspy.OutputField(desc="chosen candidates, most relevant first")


class SchemaAdapter(CompactJSONAdapter):
    """The compact JSON adapter with a tighter answer schema than the prompt shows.

    The prompt describes the answer as a plain list of strings; the schema sent to the LM (a
    llama.cpp grammar for the embedded model, structured outputs for hosted ones) also limits its
    length and, for the ranker, its values to this record's candidates. Parsing still uses the
    plain signature, so an LM that ignores the schema gives data to validate, not a crash.
    """

    def __init__(self, field: str, type_):
        super().__init__()
        self.field, self.type_ = field, type_

    def _prepare_response_format(self, lm, lm_kwargs, signature):
        super()._prepare_response_format(lm, lm_kwargs, signature)
        if isinstance(lm_kwargs.get("response_format"), type):  # a structured-output schema was chosen
            lm_kwargs["response_format"] = pydantic.create_model(
                "DSPyProgramOutputs", __config__=pydantic.ConfigDict(extra="forbid"), **{self.field: (self.type_, ...)})


def chunk_text(text: str, max_words: int) -> list[str]:
    """Split on sentence ends into chunks of at most ``max_words`` words (a longer sentence is cut).

    >>> chunk_text("One two three. Four five. Six.", 3)
    ['One two three.', 'Four five. Six.']
    """
    chunks, current = [], []
    for sentence in re.split(r"(?<=[.!?])\s+", text.strip()):
        words = sentence.split()
        while len(words) > max_words:
            if current:
                chunks.append(" ".join(current))
                current = []
            chunks.append(" ".join(words[:max_words]))
            words = words[max_words:]
        if current and len(current) + len(words) > max_words:
            chunks.append(" ".join(current))
            current = []
        current += words
    if current:
        chunks.append(" ".join(current))
    return chunks or [text]


def _clean(values) -> list[str]:
    seen, out = set(), []
    for value in values or []:
        if isinstance(value, str) and value.strip() and value.strip().lower() not in seen:
            seen.add(value.strip().lower())
            out.append(value.strip()[:MAX_GUESS_CHARS])
    return out


class InferRetrieveRank(dspy.Module):
    """Rank a large label set for one text with two LLM calls (one Infer per chunk, one Rank).

    Args:
        index: the label index to retrieve from.
        infer_k: the most label guesses asked of Infer per chunk.
        rank_n: candidates shown to Rank.
        rank_k: the most labels Rank may choose.
        chunk_words: texts longer than this are split for Infer; Rank sees the first chunk.
        hint: one sentence about the texts and labels (e.g. "Texts are job ads; labels are skills."),
            added to both instructions.
        infer_lm, rank_lm: LMs for each step; the LM in the current DSPy context when None.
    """

    def __init__(self, index: LabelIndex, *, infer_k: int = 8, rank_n: int = 30, rank_k: int = 5,
                 chunk_words: int = 200, hint: str = "", infer_lm=None, rank_lm=None):
        super().__init__()
        self.index, self.infer_k, self.rank_n, self.rank_k = index, infer_k, rank_n, rank_k
        self.chunk_words = chunk_words
        self.infer_lm, self.rank_lm = infer_lm, rank_lm
        suffix = f"\n\n{hint.strip()}" if hint.strip() else ""
        self.infer = dspy.Predict(InferLabels.with_instructions(InferLabels.instructions + suffix))
        self.rank = dspy.Predict(RankLabels.with_instructions(RankLabels.instructions + suffix))

    def _ask(self, predictor, field, lm, adapter, **inputs):
        """One LLM call; an unparseable answer is an empty list, reported in ``failed``."""
        context = {"adapter": adapter} | ({"lm": lm} if lm is not None else {})
        try:
            with dspy.context(**context):
                return getattr(predictor(**inputs), field), False
        except AdapterParseError:
            return [], True

    def forward(self, text: str) -> dspy.Prediction:
        chunks = chunk_text(text, self.chunk_words)
        infer_adapter = SchemaAdapter("guesses", Annotated[list[Annotated[str, Field(max_length=MAX_GUESS_CHARS)]],
                                                          Field(max_length=self.infer_k)])
        guesses, failed = [], 0
        for chunk in chunks:
            got, bad = self._ask(self.infer, "guesses", self.infer_lm, infer_adapter, text=chunk)
            guesses += _clean(got)[: self.infer_k]
            failed += bad
        guesses = _clean(guesses)
        candidates = self.index.search(guesses, self.rank_n)
        names = [name for name, _ in candidates]
        calls = len(chunks)
        chosen, invalid = [], 0
        if names:
            rank_adapter = SchemaAdapter("choices", Annotated[list[Literal[tuple(names)]], Field(max_length=self.rank_k)])
            got, bad = self._ask(self.rank, "choices", self.rank_lm, rank_adapter, text=chunks[0], options=names)
            calls, failed = calls + 1, failed + bad
            allowed = set(names)
            answered = _clean(got)
            chosen = [label for label in answered if label in allowed][: self.rank_k]
            invalid = sum(1 for label in answered if label not in allowed)
        ranking = chosen + [name for name in names if name not in set(chosen)]
        return dspy.Prediction(ranking=ranking, chosen=chosen, guesses=guesses, candidates=names,
                               invalid=invalid, failed=failed, calls=calls)
