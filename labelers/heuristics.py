"""Keyword and regex labeling functions built from config, as Snorkel LFs.

Both are one declarative ``Rule``: it matches a text when its pattern occurs (any of the keywords,
or the regular expression), each of ``all_of`` occurs too and none of ``none_of`` does. Rules run
on every record with no LLM call; ``labelloop propose-lfs`` writes them from the LLM's proposals.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from pydantic import Field
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
