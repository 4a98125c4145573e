"""Keyword and regex labeling functions built from config, as Snorkel LFs."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field
from snorkel.labeling import LabelingFunction

from labelloop.labelers.base import LabelerSpec, register_labeler
from labelloop.labelers.labels import ABSTAIN, Taxonomy
from labelloop.programs.errors import ConfigError


def _keyword_vote(x, words: tuple[str, ...], pattern: re.Pattern, label: int) -> int:
    return label if pattern.search(x.text) else ABSTAIN


def make_keyword_lf(name: str, words: list[str], label: int) -> LabelingFunction:
    """Vote ``label`` when any of ``words`` occurs as a whole word (case-insensitive), else abstain.

    >>> from types import SimpleNamespace
    >>> lf = make_keyword_lf("kw_refund", ["refund", "money back"], 0)
    >>> lf(SimpleNamespace(text="I want my Money back")), lf(SimpleNamespace(text="refunded?"))
    (0, -1)
    """
    if not words:
        raise ValueError(f"keyword labeler {name!r} needs at least one word")
    pattern = re.compile(r"\b(?:{})\b".format("|".join(re.escape(w) for w in words)), re.IGNORECASE)
    return LabelingFunction(name, _keyword_vote, resources={"words": tuple(words), "pattern": pattern, "label": label})


def make_regex_lf(name: str, pattern: str, label: int, *, ignore_case: bool = True) -> LabelingFunction:
    """Vote ``label`` when the regular expression matches anywhere in the text, else abstain.

    >>> from types import SimpleNamespace
    >>> make_regex_lf("re_link", r"https?://", 1)(SimpleNamespace(text="see http://x.y"))
    1
    """
    try:
        compiled = re.compile(pattern, re.IGNORECASE if ignore_case else 0)
    except re.error as exc:
        raise ValueError(f"regex labeler {name!r}: invalid pattern {pattern!r}: {exc}") from None
    return LabelingFunction(name, _keyword_vote, resources={"words": (), "pattern": compiled, "label": label})


@register_labeler
class KeywordLF(LabelerSpec):
    type: Literal["keywords"]
    name: str
    label: str
    words: list[str] = Field(min_length=1)

    def build(self, taxonomy: Taxonomy) -> list:
        return [make_keyword_lf(self.name, self.words, self.label_id(taxonomy, self.label))]


@register_labeler
class RegexLF(LabelerSpec):
    type: Literal["regex"]
    name: str
    label: str
    pattern: str

    def build(self, taxonomy: Taxonomy) -> list:
        try:
            return [make_regex_lf(self.name, self.pattern, self.label_id(taxonomy, self.label))]
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
