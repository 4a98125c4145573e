"""The LLM writes labeling functions: keyword and regex rules for one label, checked before anything runs them.

An answer is typed (a JSON schema, so the embedded model's grammar constrains it) and then
validated rule by rule: words are trimmed, lower-cased and bounded in number and length; a regular
expression must compile and pass ``regex_safety.regex_problem`` (no catastrophic backtracking). A
rule that fails is dropped with its reason; an answer with no usable rule is asked again with the
problems stated, a bounded number of times. Nothing here reads or writes files, and no generated
code is ever executed: a rule is data that ``labelers.heuristics.make_rule`` turns into a matcher.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field

import dspy
import pydantic
from dspy.utils.exceptions import AdapterParseError

from labelloop.programs.choice import CompactJSONAdapter
from labelloop.programs.regex_safety import MAX_PATTERN_CHARS, regex_problem
from labelloop.programs.signatures import ProposeRules
from labelloop.programs.taxonomy import retry_config

# Bump when the prompt or the validation changes in a way the signature text does not show; part of every cache key.
PROMPT_VERSION = "lf-proposal-2"
MAX_KEYWORDS = 15  # each its own rule
MAX_KEYWORD_RULES = 3  # combinations
MAX_REGEX_RULES = 3
MAX_WORDS = 8  # per list of a keyword rule
MAX_WORD_CHARS = 40
MAX_PHRASE_WORDS = 4
MAX_TOKENS = 300


def prompt_version() -> str:
    """A hash of what shapes the answers besides the inputs: signature text, answer schema, limits, PROMPT_VERSION."""
    blob = [PROMPT_VERSION, ProposeRules.instructions, {k: str(v.json_schema_extra) for k, v in ProposeRules.fields.items()},
            {k: ProposeRules.fields[k].annotation.model_json_schema() for k in ProposeRules.output_fields},
            MAX_KEYWORDS, MAX_KEYWORD_RULES, MAX_REGEX_RULES, MAX_WORDS, MAX_WORD_CHARS, MAX_PHRASE_WORDS,
            MAX_PATTERN_CHARS, MAX_TOKENS]
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class Proposal:
    """The usable rules of one answer (dicts: ``words`` or ``pattern``, with ``all_of`` and ``none_of``), what was
    dropped and why, and the LM calls it took."""

    rules: list[dict]
    calls: int
    dropped: list[dict] = field(default_factory=list)  # {"rule": what arrived, "problem": why it was dropped}
    retried_for: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def clean_words(value, what: str) -> tuple[list[str], list[str]]:
    """A list of words or short phrases, trimmed, lower-cased, de-duplicated; and the problems of what was left out.

    >>> clean_words(["  Refund ", "refund", "", "money back"], "any_of")
    (['refund', 'money back'], [])
    >>> clean_words("refund", "any_of")
    ([], ["any_of: expected a list of words, got 'refund'"])
    """
    if not isinstance(value, (list, tuple)):
        return [], [f"{what}: expected a list of words, got {_short(value)!r}"]
    words, problems = [], []
    for item in value:
        if not isinstance(item, str):
            problems.append(f"{what}: {_short(item)!r} is not text")
            continue
        word = " ".join(item.lower().split()).strip("\"'`")
        if not word or word in words:
            continue
        if "\x00" in word or len(word) > MAX_WORD_CHARS or len(word.split()) > MAX_PHRASE_WORDS:
            problems.append(f"{what}: {_short(word)!r} is not a word or a phrase of at most {MAX_PHRASE_WORDS} words "
                            f"and {MAX_WORD_CHARS} characters")
            continue
        if not re.search(r"\w", word):
            problems.append(f"{what}: {word!r} holds no letter or digit")
            continue
        words.append(word)
    if len(words) > MAX_WORDS:
        problems.append(f"{what}: {len(words)} words; the first {MAX_WORDS} are kept")
        words = words[:MAX_WORDS]
    return words, problems


def keyword_rule(raw) -> tuple[dict | None, list[str]]:
    """A proposed keyword rule as ``{"words", "all_of", "none_of"}``, or None with the problems that rule it out."""
    if isinstance(raw, pydantic.BaseModel):
        raw = raw.model_dump()
    if not isinstance(raw, dict):
        return None, [f"a keyword rule must be an object with any_of, all_of and none_of; got {_short(raw)!r}"]
    words, problems = clean_words(raw.get("any_of"), "any_of")
    all_of, more = clean_words(raw.get("all_of") or [], "all_of")
    none_of, most = clean_words(raw.get("none_of") or [], "none_of")
    problems += more + most
    if not words:
        return None, problems + ["any_of: no usable word"]
    clash = sorted(set(none_of) & (set(words) | set(all_of)))
    if clash:
        return None, problems + [f"none_of repeats words the rule needs: {clash}"]
    return {"words": words, "all_of": [w for w in all_of if w not in words], "none_of": none_of}, problems


def regex_rule(raw) -> tuple[dict | None, list[str]]:
    """A proposed regular expression as ``{"pattern", "all_of": [], "none_of": []}``, or None with its problem."""
    if not isinstance(raw, str):
        return None, [f"a regex rule must be text, got {_short(raw)!r}"]
    pattern = raw.strip()
    problem = regex_problem(pattern)
    if problem:
        return None, [f"regex {_short(pattern)!r}: {problem}"]
    return {"pattern": pattern, "all_of": [], "none_of": []}, []


def rule_key(rule: dict) -> str:
    """One text per distinct rule (word order does not matter), for de-duplication.

    >>> rule_key({"words": ["b", "a"], "all_of": [], "none_of": []}) == rule_key({"words": ["a", "b"]})
    True
    """
    if "pattern" in rule:
        return "re:" + rule["pattern"]
    return "kw:" + "|".join(sorted(rule["words"])) + "&" + "|".join(sorted(rule.get("all_of", []))) + "!" + \
        "|".join(sorted(rule.get("none_of", [])))


def keyword(raw) -> tuple[dict | None, list[str]]:
    """One proposed word or phrase as a rule of its own, or None with the problem."""
    words, problems = clean_words([raw], "keywords")
    return ({"words": words, "all_of": [], "none_of": []} if words else None), problems or ["keywords: blank"]


def validate_answer(keywords, combinations=(), regex_rules=()) -> tuple[list[dict], list[dict]]:
    """The usable, distinct rules of an answer (keywords, then combinations, then regexes) and the dropped ones
    with their problems."""
    rules, dropped, seen = [], [], set()
    groups = ((keywords, keyword, MAX_KEYWORDS), (combinations, keyword_rule, MAX_KEYWORD_RULES),
              (regex_rules, regex_rule, MAX_REGEX_RULES))
    for items, parse, limit in groups:
        items = getattr(items, "root", items)
        items = [] if items is None else items if isinstance(items, (list, tuple)) else [items]
        kept = 0
        for raw in items:
            if raw is None or raw == "":
                continue
            rule, problems = parse(raw)
            if rule is None:
                dropped.append({"rule": _jsonable(raw), "problem": "; ".join(problems)})
            elif rule_key(rule) in seen:
                dropped.append({"rule": _jsonable(raw), "problem": "a repeat of a rule in the same answer"})
            elif kept >= limit:
                dropped.append({"rule": _jsonable(raw), "problem": f"over the limit of {limit} rules of its kind"})
            else:
                seen.add(rule_key(rule))
                rules.append(rule)
                kept += 1
    return rules, dropped


class RuleProposer(dspy.Module):
    """Propose keyword and regex rules for one label; validated, with bounded retries (``max_attempts`` LM calls)."""

    def __init__(self, max_attempts: int = 2, max_tokens: int = MAX_TOKENS):
        super().__init__()
        self.predict = dspy.Predict(ProposeRules)
        self.max_attempts = max(1, max_attempts)
        self.max_tokens = max_tokens

    def forward(self, **inputs) -> Proposal:
        problems, history, dropped = ["none"], [], []
        for attempt in range(1, self.max_attempts + 1):
            try:
                with dspy.context(adapter=CompactJSONAdapter()):
                    pred = self.predict(**inputs, problems=_problem_text(problems),
                                        config=retry_config(attempt, self.max_tokens))
            except AdapterParseError as exc:
                problems = [f"the answer was not the requested JSON ({_short(exc.lm_response)}); answer with a JSON "
                            "object with the fields keywords, combinations and regex_rules"]
                history += problems
                continue
            rules, dropped = validate_answer(pred["keywords"], pred["combinations"], pred["regex_rules"])
            if rules:
                return Proposal(rules, attempt, dropped, history)
            problems = [d["problem"] for d in dropped][:6] or ["the answer held no rule: give at least five keywords"]
            history += problems
        return Proposal([], self.max_attempts, dropped, history)


def _jsonable(value):
    if isinstance(value, pydantic.BaseModel):
        return value.model_dump()
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return repr(value)[:200]


def _problem_text(problems: list[str]) -> str:
    return "none" if problems == ["none"] else "\n".join(f"- {p}" for p in problems)


def _short(text, n: int = 80) -> str:
    text = " ".join(str(text if text is not None else "").split())
    return text if len(text) <= n else text[:n] + "..."
