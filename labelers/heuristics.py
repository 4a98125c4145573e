"""Declarative heuristic labeling functions built from config: keywords, regex and similar.

Keyword and regex labelers are Snorkel LFs over one declarative ``Rule``: it matches a text when its
pattern occurs (any of the keywords, or the regular expression), each of ``all_of`` occurs too and
none of ``none_of`` does. A ``similar`` labeler (``SimilarityLF``) votes its label where a record's
MiniLM sentence embedding has a cosine similarity of at least ``threshold`` to any of a few example
texts; ``labelloop.flows.label_dataset.apply_heuristics`` embeds every record once for all of them.
All three are data, not code: they run on every record with no LLM call, and ``labelloop
propose-lfs`` writes them from the LLM's proposals.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np
from pydantic import Field, field_validator
from snorkel.labeling import LabelingFunction

from labelloop.labelers.base import LabelerSpec, register_labeler
from labelloop.labelers.labels import ABSTAIN, Taxonomy
from labelloop.programs.errors import ConfigError

_SUFFIX = re.compile(r"(?:ing|ed|es|s|e)$")
FORMS = "(?:e|es|s|ed|d|ing)?"


def word_form(word: str) -> str:
    """A regex for ``word`` and the common inflections of its last word (``charges``: charge, charged, charging...).

    >>> [bool(re.fullmatch(word_form("charges"), w)) for w in ("charge", "charged", "charging", "charger", "chart")]
    [True, True, True, False, False]
    """
    head, _, last = word.rpartition(" ")
    stem = _SUFFIX.sub("", last) if len(last) > 4 else last  # short words (bus, use, is) are left whole
    return re.escape(f"{head} " if head else "") + re.escape(stem) + FORMS


def words_pattern(words: list[str] | tuple[str, ...], forms: bool = False) -> re.Pattern:
    """Any of ``words`` (or phrases) as a whole word, case-insensitive; with ``forms``, in any common inflection.

    >>> bool(words_pattern(["money back"]).search("I want my Money back!")), bool(words_pattern(["refund"]).search("refunded"))
    (True, False)
    >>> bool(words_pattern(["refund"], forms=True).search("refunded"))
    True
    """
    alternatives = [word_form(w) if forms else re.escape(w) for w in words]
    return re.compile(r"\b(?:{})\b".format("|".join(alternatives)), re.IGNORECASE)


@dataclass(frozen=True)
class Rule:
    """Matches a text when ``pattern`` occurs, every pattern of ``all_of`` occurs and ``none_of`` does not."""

    pattern: re.Pattern
    all_of: tuple[re.Pattern, ...] = ()
    none_of: re.Pattern | None = None

    def matches(self, text: str) -> bool:
        return (self.pattern.search(text) is not None and all(p.search(text) for p in self.all_of)
                and (self.none_of is None or self.none_of.search(text) is None))


def make_rule(*, words: list[str] | None = None, pattern: str | None = None, all_of: list[str] = (),
              none_of: list[str] = (), forms: bool = False, ignore_case: bool = True) -> Rule:
    """A rule from keywords (any of them) or a regular expression, with optional ``all_of`` / ``none_of`` words
    (``forms``: every word matches in its common inflections too).

    >>> rule = make_rule(words=["free"], all_of=["iphone"], none_of=["not"])
    >>> rule.matches("Win a FREE iPhone"), rule.matches("free stuff"), rule.matches("not a free iphone")
    (True, False, False)
    """
    if (words is None) == (pattern is None):
        raise ValueError("a rule needs either words or a pattern")
    for what, given in (("words", words), ("all_of", all_of), ("none_of", none_of)):
        if given is not None and not all(isinstance(w, str) and w.strip() for w in given):
            raise ValueError(f"{what}: expected words or phrases that are not blank, got {list(given)!r}")
    if words is not None:
        if not words:
            raise ValueError("words: expected at least one word")
        compiled = words_pattern(words, forms)
    else:
        try:
            compiled = re.compile(pattern, re.IGNORECASE if ignore_case else 0)
        except re.error as exc:
            raise ValueError(f"invalid pattern {pattern!r}: {exc}") from None
    return Rule(compiled, tuple(words_pattern([w], forms) for w in all_of), words_pattern(none_of, forms) if none_of else None)


def _rule_vote(x, rule: Rule, label: int) -> int:
    return label if rule.matches(x.text) else ABSTAIN


def make_rule_lf(name: str, rule: Rule, label: int) -> LabelingFunction:
    """Vote ``label`` where ``rule`` matches, else abstain."""
    return LabelingFunction(name, _rule_vote, resources={"rule": rule, "label": label})


def make_keyword_lf(name: str, words: list[str], label: int) -> LabelingFunction:
    """Vote ``label`` when any of ``words`` occurs as a whole word (case-insensitive), else abstain.

    >>> from types import SimpleNamespace
    >>> lf = make_keyword_lf("kw_refund", ["refund", "money back"], 0)
    >>> lf(SimpleNamespace(text="I want my Money back")), lf(SimpleNamespace(text="refunded?"))
    (0, -1)
    """
    if not words:
        raise ValueError(f"keyword labeler {name!r} needs at least one word")
    return make_rule_lf(name, make_rule(words=words), label)


def make_regex_lf(name: str, pattern: str, label: int, *, ignore_case: bool = True) -> LabelingFunction:
    """Vote ``label`` when the regular expression matches anywhere in the text, else abstain.

    >>> from types import SimpleNamespace
    >>> make_regex_lf("re_link", r"https?://", 1)(SimpleNamespace(text="see http://x.y"))
    1
    """
    try:
        return make_rule_lf(name, make_rule(pattern=pattern, ignore_case=ignore_case), label)
    except ValueError as exc:
        raise ValueError(f"regex labeler {name!r}: {exc}") from None


class _RuleSpec(LabelerSpec):
    """What keyword and regex labelers share: a name, the label they vote, and optional combinations."""

    name: str
    label: str
    all_of: list[str] = []  # words that must each occur too
    none_of: list[str] = []  # words that stop the rule from voting
    forms: bool = False  # words also match in their common inflections (refund: refunds, refunded, refunding)
    origin: str | None = None  # where the rule came from (propose-lfs writes it), shown in the report

    def rule(self) -> Rule:
        raise NotImplementedError

    def build(self, taxonomy: Taxonomy) -> list:
        label = self.label_id(taxonomy, self.label)
        try:
            return [make_rule_lf(self.name, self.rule(), label)]
        except ValueError as exc:
            raise ConfigError(f"{self.type} labeler {self.name!r}: {exc}") from None


@register_labeler
class KeywordLF(_RuleSpec):
    type: Literal["keywords"]
    words: list[str] = Field(min_length=1)

    def rule(self) -> Rule:
        return make_rule(words=self.words, all_of=self.all_of, none_of=self.none_of, forms=self.forms)


@register_labeler
class RegexLF(_RuleSpec):
    type: Literal["regex"]
    pattern: str

    def rule(self) -> Rule:
        return make_rule(pattern=self.pattern, all_of=self.all_of, none_of=self.none_of, forms=self.forms)


MAX_EXAMPLES = 50  # example texts of one `similar` labeler
MAX_EXAMPLE_CHARS = 1_000
_SIMILARITY_SLACK = 1e-6  # float32 rounding: a record equal to an example reaches threshold 1.0


@lru_cache(maxsize=256)
def _example_embeddings(examples: tuple[str, ...]) -> np.ndarray:
    """(len(examples), d) L2-normalised embeddings of the example texts, computed once per process (read-only)."""
    from labelloop.programs.embeddings import embed

    vectors = np.asarray(embed(list(examples)), dtype=np.float32)
    vectors.flags.writeable = False
    return vectors


def max_similarity(embedded: np.ndarray, examples: list[str]) -> np.ndarray:
    """(n,) the highest cosine similarity of each row of ``embedded`` to any of ``examples``.

    ``embedded``: rows of ``labelloop.programs.embeddings.embed(texts)`` (L2-normalised), so a dot
    product is the cosine similarity. The examples are embedded once per process (cached by their tuple).
    """
    examples = tuple(examples)
    if not examples:
        raise ValueError("max_similarity needs at least one example text")
    embedded = np.asarray(embedded, dtype=np.float32)
    if embedded.size == 0:  # embed([]) is shape (0,)
        return np.zeros(len(embedded), dtype=np.float32)
    if embedded.ndim != 2:
        raise ValueError(f"expected an (n, d) array of embeddings, got shape {embedded.shape}")
    return (embedded @ _example_embeddings(examples).T).max(axis=1)


def reaches(similarity: np.ndarray, threshold: float) -> np.ndarray:
    """Where ``similarity`` is at least ``threshold``, float32 rounding allowed (a copy of an example reaches 1.0)."""
    return np.asarray(similarity) >= threshold - _SIMILARITY_SLACK


@dataclass(frozen=True)
class SimilarityLF:
    """Votes ``label`` where a text's sentence embedding is within ``threshold`` cosine similarity of any example.

    ``vote_embedded`` votes on many records embedded once (``apply_heuristics`` does that); calling
    the object votes on one record with a ``.text``, as a Snorkel labeling function does.
    """

    name: str
    label: int
    examples: tuple[str, ...]
    threshold: float

    def vote_embedded(self, embedded: np.ndarray) -> np.ndarray:
        """One vote per row of ``embedded`` (rows of ``embed(texts)``): ``label`` or ABSTAIN."""
        hits = reaches(max_similarity(embedded, list(self.examples)), self.threshold)
        return np.where(hits, self.label, ABSTAIN).astype(int)

    def __call__(self, x) -> int:
        from labelloop.programs.embeddings import embed

        return int(self.vote_embedded(embed([x.text]))[0])


@register_labeler
class SimilarLF(LabelerSpec):
    """Votes ``label`` on records whose MiniLM sentence embedding is close (cosine >= ``threshold``) to an example."""

    type: Literal["similar"]
    name: str
    label: str
    examples: list[str] = Field(min_length=1, max_length=MAX_EXAMPLES)
    threshold: float = Field(gt=0, le=1)
    origin: str | None = None  # where the rule came from (propose-lfs writes it), shown in the report

    @field_validator("examples")
    @classmethod
    def _plain_examples(cls, v: list[str]) -> list[str]:
        for i, text in enumerate(v):
            if not text.strip():
                raise ValueError(f"example {i} is blank; expected texts that are not blank")
            if len(text) > MAX_EXAMPLE_CHARS:
                raise ValueError(f"example {i} has {len(text):,} characters; at most {MAX_EXAMPLE_CHARS:,} each")
        return v

    def build(self, taxonomy: Taxonomy) -> list:
        return [SimilarityLF(self.name, self.label_id(taxonomy, self.label), tuple(self.examples), self.threshold)]
