"""The Infer-Retrieve-Rank labeler: a ranked label list per record becomes votes on sets of labels.

An answer (computed earlier, by a flow) is the program's prediction as a dict: ``ranking`` (the
ranker's choices first, then the other candidates in retrieval order), ``chosen``, ``candidates``,
``guesses`` and the counts ``invalid`` (answers outside the candidates, dropped) and ``failed``.
Votes: the chosen labels are positive; candidates the ranker saw and left out are negative; every
other label is an abstain.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import numpy as np
from scipy import sparse

from labelers.labels import ABSTAIN, Taxonomy


@dataclass
class IRRLabeler:
    """Settings of one Infer-Retrieve-Rank labeler (see ``programs.irr.InferRetrieveRank``).

    ``program_state`` is the hash of an optimized program's saved demos and instructions, empty for
    the zero-shot program; it is part of the version, so optimizing never reuses zero-shot answers.
    """

    name: str
    infer_k: int = 8
    rank_n: int = 30
    rank_k: int = 5
    chunk_words: int = 200
    hint: str = ""
    retriever: str = "embeddings"
    program_state: str = ""
    kind: str = "irr"

    def version(self, model_identity: str, params: dict, taxonomy_fingerprint: str) -> str:
        """Hash of everything that decides the answers: settings, program state, labels, model."""
        from programs.choice import PROMPT_FORMAT

        settings = {k: v for k, v in asdict(self).items() if k != "name"}
        blob = json.dumps([PROMPT_FORMAT, settings, taxonomy_fingerprint, model_identity, params], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def vote_matrix(self, answers: list[dict | None], taxonomy: Taxonomy) -> sparse.csr_matrix:
        """(n, k) int8 votes: +1 chosen, -1 shown to the ranker but not chosen, 0 abstain.

        Labels not in the taxonomy (a stale answer) are ignored; a record whose ranker chose
        nothing abstains on every label.

        >>> tax = Taxonomy(("a", "b", "c"), ("", "", ""))
        >>> IRRLabeler("irr").vote_matrix([{"chosen": ["b"], "candidates": ["b", "c"]}, None], tax).toarray().tolist()
        [[0, 1, -1], [0, 0, 0]]
        """
        index = {name: i for i, name in enumerate(taxonomy.names)}
        rows, cols, vals = [], [], []
        for r, answer in enumerate(answers):
            chosen = [index[x] for x in (answer or {}).get("chosen") or [] if x in index]
            if not chosen:
                continue
            shown = [index[x] for x in answer.get("candidates") or [] if x in index and index[x] not in chosen]
            rows += [r] * (len(chosen) + len(shown))
            cols += chosen + shown
            vals += [1] * len(chosen) + [-1] * len(shown)
        return sparse.csr_matrix((np.array(vals, dtype=np.int8), (rows, cols)), shape=(len(answers), len(taxonomy)))

    def votes(self, answers: list[dict | None], taxonomy: Taxonomy) -> np.ndarray:
        """Multi-class votes: the top-ranked label's id, or ABSTAIN."""
        return np.array([taxonomy.names.index(a["chosen"][0]) if a and a.get("chosen") and a["chosen"][0] in taxonomy.names
                         else ABSTAIN for a in answers], dtype=int)

    def scores(self, answers: list[dict | None], taxonomy: Taxonomy) -> np.ndarray:
        """The program's own answers as (n, k) scores: chosen labels >= 0.5, in ranking order; the other
        candidates below 0.5; labels never retrieved 0. What asking the LLM program directly gives.

        >>> tax = Taxonomy(("a", "b", "c"), ("", "", ""))
        >>> IRRLabeler("irr").scores([{"chosen": ["b"], "ranking": ["b", "a"]}], tax).round(2).tolist()
        [[0.44, 1.0, 0.0]]
        """
        index = {name: j for j, name in enumerate(taxonomy.names)}
        P = np.zeros((len(answers), len(taxonomy)))
        for i, answer in enumerate(answers):
            chosen = set((answer or {}).get("chosen") or [])
            ranking = [x for x in (answer or {}).get("ranking") or [] if x in index]
            for r, label in enumerate(ranking):
                P[i, index[label]] = (1.0 if label in chosen else 0.49) - r / (10 * len(ranking))
        return P

    def build_program(self, index, state: dict | None = None):
        """The DSPy program for these settings over a label index, with an optimized state loaded when given."""
        from programs.irr import InferRetrieveRank

        program = InferRetrieveRank(index, infer_k=self.infer_k, rank_n=self.rank_n, rank_k=self.rank_k,
                                    chunk_words=self.chunk_words, hint=self.hint)
        if state:
            program.load_state(state)
        return program


def state_hash(state: dict | None) -> str:
    """A short stable hash of a saved program state (empty for none)."""
    if not state:
        return ""
    return hashlib.sha256(json.dumps(state, sort_keys=True, default=str).encode()).hexdigest()[:16]

