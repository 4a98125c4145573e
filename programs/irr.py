"""Infer-Retrieve-Rank (D'Oosterlinck et al. 2024) for label spaces of thousands of labels.

Infer asks the LM for free-text label guesses (a typed list, never comma parsing); Retrieve maps
the guesses to the nearest taxonomy labels (``programs.retrieval.LabelIndex``); Rank orders the top
candidates, in one of two modes:

- ``list``: the LM writes the list of candidates it chooses (a JSON list; many output tokens). The
  ranking is its choices, then the other candidates in retrieval order. Answers outside the
  candidates are dropped and counted (``invalid``).
- ``scores``: the candidates are shown lettered (A., B., ...) and the LM answers one letter, a
  closed choice whose token log-probabilities give each candidate a probability (one output token
  that matters). The ranking is the candidates by probability, those without one (outside the
  LM's top log-probs) after them in retrieval order; ``chosen`` is the most probable candidates
  until their probabilities add up to ``CHOSEN_SHARE`` (at least one, at most ``rank_k``).

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

from labelloop.programs.choice import TOP_LOGPROBS, ChoiceAdapter, CompactJSONAdapter, option_probabilities
from labelloop.programs.errors import ConfigError
from labelloop.programs.retrieval import LabelIndex
from labelloop.programs.signatures import closed

MAX_GUESS_CHARS = 80
RANK_MODES = ("list", "scores")
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"  # one single-token letter per candidate in ``scores`` mode
# ``scores`` mode: the chosen labels are the most probable candidates until their probabilities add up
# to this share of the whole (at least one, at most rank_k)
CHOSEN_SHARE = 0.8


class InferLabels(dspy.Signature):
    """Read the text and write every label that applies to it, as short phrases in the wording a taxonomy would use."""

    text: str = dspy.InputField()
    guesses: list[str] = dspy.OutputField(desc="short label phrases")


class RankLabels(dspy.Signature):
    """Choose the candidate labels that apply to the text, most relevant first. Copy them exactly."""

    text: str = dspy.InputField()
    options: list[str] = dspy.InputField(desc="candidate labels")
    choices: list[str] = dspy.OutputField(desc="chosen candidates, most relevant first")


class PickLabel(dspy.Signature):
    """Choose the candidate label that applies best to the text. Answer with its letter."""

    text: str = dspy.InputField()
    options: str = dspy.InputField(desc="candidate labels, one per line after its letter")
    letter: str = dspy.OutputField(desc="the letter of the best candidate")


def lettered(names: list[str]) -> str:
    """Candidates one per line after their letter, as ``scores`` mode shows them.

    >>> print(lettered(["billing", "shipping"]))
    A. billing
    B. shipping
    """
    return "\n".join(f"{letter}. {name}" for letter, name in zip(LETTERS, names))


def check_rank(rank: str, rank_n: int) -> None:
    """Raise ConfigError unless ``rank`` is a known mode whose candidate count fits it."""
    if rank not in RANK_MODES:
        raise ConfigError(f"rank must be one of {RANK_MODES}, got {rank!r}")
    if rank == "scores" and rank_n > len(LETTERS):
        raise ConfigError(f"rank: scores shows each candidate under one letter, so rank_n must be at most "
                          f"{len(LETTERS)}; got rank_n {rank_n}")


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
    if isinstance(max_words, bool) or not isinstance(max_words, int) or max_words < 1:  # 0 would never end
        raise ConfigError(f"chunk_words must be a whole number of at least 1, got {max_words!r}")
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
    """The distinct non-blank strings of an answer's list (at most MAX_GUESS_CHARS each); [] for anything but a list."""
    seen, out = set(), []
    for value in values if isinstance(values, (list, tuple)) else []:
        if isinstance(value, str) and value.strip() and value.strip().lower() not in seen:
            seen.add(value.strip().lower())
            out.append(value.strip()[:MAX_GUESS_CHARS])
    return out


class InferRetrieveRank(dspy.Module):
    """Rank a large label set for one text with two LLM calls (one Infer per chunk, one Rank).

    Args:
        index: the label index to retrieve from.
        infer_k: the most label guesses asked of Infer per chunk.
        rank_n: candidates shown to Rank (at most 26 with ``rank="scores"``).
        rank_k: the most labels Rank may choose.
        rank: ``"list"`` (the LM writes the chosen candidates) or ``"scores"`` (one lettered closed
            choice; candidates ordered by its option probabilities). See the module docstring.
        chunk_words: texts longer than this are split for Infer; Rank sees the first chunk.
        hint: one sentence about the texts and labels (e.g. "Texts are job ads; labels are skills."),
            added to both instructions.
        infer_lm, rank_lm: LMs for each step; the LM in the current DSPy context when None.
    """

    def __init__(self, index: LabelIndex, *, infer_k: int = 8, rank_n: int = 30, rank_k: int = 5,
                 chunk_words: int = 200, hint: str = "", rank: Literal[RANK_MODES] = "list", infer_lm=None,
                 rank_lm=None):
        super().__init__()
        check_rank(rank, rank_n)
        self.index, self.infer_k, self.rank_n, self.rank_k = index, infer_k, rank_n, rank_k
        self.chunk_words, self.rank_mode = chunk_words, rank
        self.infer_lm, self.rank_lm = infer_lm, rank_lm
        suffix = f"\n\n{hint.strip()}" if hint.strip() else ""
        self.infer = dspy.Predict(InferLabels.with_instructions(InferLabels.instructions + suffix))
        # each mode has its own predictor name, so a program state saved for one mode does not load into the other
        if rank == "list":
            self.rank = dspy.Predict(RankLabels.with_instructions(RankLabels.instructions + suffix))
        else:
            self.pick = dspy.Predict(closed(PickLabel.with_instructions(PickLabel.instructions + suffix), "letter",
                                            list(LETTERS[:rank_n])))

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
        if names and self.rank_mode == "scores":
            order, chosen, bad = self._rank_by_scores(chunks[0], names)
            return dspy.Prediction(ranking=[names[i] for i in order], chosen=chosen, guesses=guesses, candidates=names,
                                   invalid=0, failed=failed + bad, calls=calls + 1)
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

    def _rank_by_scores(self, text: str, names: list[str]) -> tuple[list[int], list[str], bool]:
        """(candidate positions in ranking order, chosen labels, failed) from one lettered closed choice.

        Probabilities come from the answer's log-probs; an LM without log-probs gives its answer
        probability 1. An unparseable answer leaves retrieval order and chooses nothing.
        """
        letters = list(LETTERS[: len(names)])
        # the saved signature (instructions, demos' fields), its letters cut to this record's candidates
        signature = closed(self.pick.signature, "letter", letters)
        context = {"adapter": ChoiceAdapter()} | ({"lm": self.rank_lm} if self.rank_lm is not None else {})
        try:
            with dspy.context(**context):
                pred = self.pick(text=text, options=lettered(names), signature=signature,
                                 config={"logprobs": True, "top_logprobs": TOP_LOGPROBS})
        except AdapterParseError:
            return list(range(len(names))), [], True
        probs = option_probabilities(getattr(pred, "logprobs", None), "letter", letters)
        if probs is None:
            answer = getattr(pred, "letter", None)
            probs = {answer: 1.0} if answer in letters else {}
        scored = sorted((i for i, letter in enumerate(letters) if probs.get(letter, 0) > 0),
                        key=lambda i: -probs[letters[i]])  # stable: ties keep retrieval order
        ranked = set(scored)
        order = scored + [i for i in range(len(names)) if i not in ranked]
        chosen, total = [], 0.0
        for i in scored[: self.rank_k]:
            chosen.append(names[i])
            total += probs[letters[i]]
            if total >= CHOSEN_SHARE - 1e-9:
                break
        return order, chosen, False
