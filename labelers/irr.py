"""The Infer-Retrieve-Rank labeler: a ranked label list per record becomes votes on sets of labels.

An answer (computed earlier, by a flow) is the program's prediction as a dict: ``ranking`` (the
ranker's choices first, then the other candidates in retrieval order; in ``rank: scores`` mode the
candidates by the ranker's probability), ``chosen``, ``candidates``, ``guesses`` and the counts
``invalid`` (answers outside the candidates, dropped; always 0 in ``scores`` mode) and ``failed``.
Votes: the chosen labels are positive; candidates the ranker saw and left out are negative; every
other label is an abstain.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import Field, field_validator
from pydantic_core import PydanticCustomError
from scipy import sparse

from labelloop.labelers.base import LabelerSpec, LabelingContext, LLMLabeler, register_labeler
from labelloop.labelers.labels import ABSTAIN, Taxonomy
from labelloop.programs.errors import ConfigError
from labelloop.programs.irr import CHOSEN_SHARE, RANK_MODES, check_rank
from labelloop.programs.retrieval import RETRIEVERS


@dataclass
class IRRLabeler(LLMLabeler):
    """Settings of one Infer-Retrieve-Rank labeler (see ``labelloop.programs.irr.InferRetrieveRank``).

    An optimized program state saved by ``labelloop optimize`` (``ctx.states[name]``) is part of the
    version through its hash, so optimizing never reuses zero-shot answers.
    """

    optimizable = True

    name: str
    infer_k: int = 8
    rank_n: int = 30
    rank_k: int = 5
    chunk_words: int = 200
    hint: str = ""
    retriever: str = "embeddings"
    rank: str = "list"  # "list" or "scores" (see ``labelloop.programs.irr``)

    def __post_init__(self):
        check_rank(self.rank, self.rank_n)

    def version(self, ctx: LabelingContext) -> str:
        """Hash of everything that decides the answers: settings, program state, labels, model."""
        from labelloop.programs.choice import PROMPT_FORMAT
        from labelloop.programs.retrieval import label_fingerprint

        settings = {"infer_k": self.infer_k, "rank_n": self.rank_n, "rank_k": self.rank_k, "chunk_words": self.chunk_words,
                    "hint": self.hint, "retriever": self.retriever, "program_state": state_hash(ctx.states.get(self.name)),
                    "kind": "irr"}
        if self.rank != "list":  # only then: answers stored before the setting existed keep their version
            settings |= {"rank": self.rank, "chosen_share": CHOSEN_SHARE}
        model, params = ctx.lm.key()
        blob = json.dumps([PROMPT_FORMAT, settings, label_fingerprint(ctx.taxonomy.texts()), model, params], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def invalid(self, answers: list[dict | None]) -> int:
        """Labels the ranker chose outside its candidates (dropped by the program); a malformed answer counts one."""
        return sum(_invalid(a) for a in answers)

    def vote_sets(self, answers: list[dict | None], taxonomy: Taxonomy) -> sparse.csr_matrix:
        """(n, k) int8 votes: +1 chosen, -1 shown to the ranker but not chosen, 0 abstain.

        Labels not in the taxonomy (a stale answer) are ignored; a record whose ranker chose
        nothing abstains on every label.

        >>> tax = Taxonomy(("a", "b", "c"), ("", "", ""))
        >>> IRRLabeler("irr").vote_sets([{"chosen": ["b"], "candidates": ["b", "c"]}, None], tax).toarray().tolist()
        [[0, 1, -1], [0, 0, 0]]
        """
        index = {name: i for i, name in enumerate(taxonomy.names)}
        rows, cols, vals = [], [], []
        for r, answer in enumerate(answers):
            chosen = list(dict.fromkeys(index[x] for x in _names(answer, "chosen") if x in index))
            if not chosen:
                continue
            shown = list(dict.fromkeys(index[x] for x in _names(answer, "candidates") if x in index and index[x] not in chosen))
            rows += [r] * (len(chosen) + len(shown))
            cols += chosen + shown
            vals += [1] * len(chosen) + [-1] * len(shown)
        return sparse.csr_matrix((np.array(vals, dtype=np.int8), (rows, cols)), shape=(len(answers), len(taxonomy)))

    def votes(self, answers: list[dict | None], taxonomy: Taxonomy) -> np.ndarray:
        """Multi-class votes: the top-ranked label's id, or ABSTAIN."""
        tops = [(_names(a, "chosen") or [None])[0] for a in answers]
        return np.array([taxonomy.names.index(top) if top in taxonomy.names else ABSTAIN for top in tops], dtype=int)

    def direct_scores(self, answers: list[dict | None], taxonomy: Taxonomy) -> np.ndarray:
        """The program's own answers as (n, k) scores: chosen labels >= 0.5, in ranking order; the other
        candidates below 0.5; labels never retrieved 0. What asking the LLM program directly gives.

        >>> tax = Taxonomy(("a", "b", "c"), ("", "", ""))
        >>> IRRLabeler("irr").direct_scores([{"chosen": ["b"], "ranking": ["b", "a"]}], tax).round(2).tolist()
        [[0.44, 1.0, 0.0]]
        """
        index = {name: j for j, name in enumerate(taxonomy.names)}
        P = np.zeros((len(answers), len(taxonomy)))
        for i, answer in enumerate(answers):
            chosen = set(_names(answer, "chosen"))
            ranking = [x for x in _names(answer, "ranking") if x in index]
            for r, label in enumerate(ranking):
                P[i, index[label]] = (1.0 if label in chosen else 0.49) - r / (10 * len(ranking))
        return P

    def program(self, ctx: LabelingContext, *, optimized: bool = True, lm=None):
        """The DSPy program over the taxonomy's label index, with the optimized state unless ``optimized`` is False.

        ``lm`` is kept on the module for both steps: DSPy's optimizers reset per-predictor LMs.
        """
        from labelloop.programs.irr import InferRetrieveRank

        program = InferRetrieveRank(ctx.label_index(self.retriever), infer_k=self.infer_k, rank_n=self.rank_n,
                                    rank_k=self.rank_k, chunk_words=self.chunk_words, hint=self.hint, rank=self.rank,
                                    infer_lm=lm, rank_lm=lm)
        state = ctx.states.get(self.name) if optimized else None
        if state:
            expected = {name for name, _ in program.named_predictors()}
            if set(state) != expected:
                raise ConfigError(f"the optimized program saved for labeler {self.name!r} has the steps {sorted(state)}, "
                                  f"not {sorted(expected)} (rank: {self.rank}): it was compiled with other settings; "
                                  "run `labelloop optimize` again or delete it")
            program.load_state(state)
        return program

    def prompt_cost(self, texts: list[str], ctx: LabelingContext) -> tuple[int, int]:
        """(LLM calls, prompt characters) over ``texts``: Infer per chunk, one Rank per text (its candidates
        approximated by the first ``rank_n`` labels)."""
        from labelloop.programs.choice import ChoiceAdapter, CompactJSONAdapter
        from labelloop.programs.irr import InferLabels, PickLabel, RankLabels, chunk_text, lettered

        adapter, options = CompactJSONAdapter(), list(ctx.taxonomy.names[: self.rank_n])
        if self.rank == "list":
            rank_signature, shown, rank_adapter = RankLabels, options, adapter
        else:
            rank_signature, shown, rank_adapter = PickLabel, lettered(options), ChoiceAdapter()
        calls = chars = 0
        for text in texts:
            chunks = chunk_text(text, self.chunk_words)
            messages = [m for c in chunks for m in adapter.format(InferLabels, demos=[], inputs={"text": c})]
            messages += rank_adapter.format(rank_signature, demos=[], inputs={"text": chunks[0], "options": shown})
            calls, chars = calls + len(chunks) + 1, chars + sum(len(m["content"]) for m in messages)
        return calls, chars


def _names(answer, key: str) -> list[str]:
    """``answer[key]`` as label names: the strings of a stored list; empty when the answer or the value is malformed.

    >>> _names({"chosen": ["a", 3, ["b"]]}, "chosen"), _names({"chosen": "ab"}, "chosen"), _names("text", "chosen")
    (['a'], [], [])
    """
    value = answer.get(key) if isinstance(answer, dict) else None
    return [x for x in value if isinstance(x, str)] if isinstance(value, (list, tuple)) else []


def _invalid(answer) -> int:
    """An answer's count of choices outside the candidates; 1 for an answer that is not a mapping at all."""
    if answer is None:
        return 0
    if not isinstance(answer, dict):
        return 1
    n = answer.get("invalid")
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 0


def state_hash(state: dict | None) -> str:
    """A short stable hash of a saved program state (empty for none)."""
    if not state:
        return ""
    return hashlib.sha256(json.dumps(state, sort_keys=True, default=str).encode()).hexdigest()[:16]


@register_labeler
class IRRLF(LabelerSpec):
    """Infer-Retrieve-Rank over the taxonomy: for large label spaces and multi-label tasks."""

    type: Literal["irr"]
    name: str = "irr"
    infer_k: int = Field(8, ge=1, le=50)
    rank_n: int = Field(30, ge=1, le=200)
    rank_k: int = Field(5, ge=1, le=50)
    chunk_words: int = Field(200, ge=20)
    hint: str = ""
    retriever: Literal[RETRIEVERS] = "embeddings"
    rank: Literal[RANK_MODES] = "list"  # list: the LLM writes its choices; scores: one lettered closed choice

    @field_validator("rank")
    @classmethod
    def _letters_fit(cls, rank, info):
        try:
            check_rank(rank, info.data.get("rank_n", 1))
        except ConfigError as exc:
            raise PydanticCustomError("rank_n_over_letters", str(exc)) from None
        return rank

    def build(self, taxonomy: Taxonomy) -> list:
        return [IRRLabeler(self.name, infer_k=self.infer_k, rank_n=self.rank_n, rank_k=self.rank_k,
                           chunk_words=self.chunk_words, hint=self.hint, retriever=self.retriever, rank=self.rank)]
