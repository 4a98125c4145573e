"""The LLM writes labeling functions for one label: keyword and regex rules, and example texts; checked before use.

An answer is typed (a JSON schema, so the embedded model's grammar constrains it) and then
validated rule by rule: words are trimmed, lower-cased and bounded in number and length; a regular
expression must compile and pass ``regex_safety.regex_problem`` (no catastrophic backtracking). A
rule that fails is dropped with its reason; an answer with no usable rule is asked again with the
problems stated, a bounded number of times. Nothing here reads or writes files, and no generated
code is ever executed: a rule is data that ``labelers.heuristics.make_rule`` turns into a matcher.

``ExampleWriter`` asks for a few new texts typical of a label: a ``similar`` rule votes the label on
the records whose sentence embedding is close to one of them (``labelers.heuristics.max_similarity``),
which finds the paraphrases that no keyword list covers. The texts are trimmed, bounded and
de-duplicated, and copies of the texts shown are dropped (the rule's threshold is chosen on them).
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
from labelloop.programs.signatures import ExampleTexts, ProposeRules, WriteExamples
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
EXAMPLES_VERSION = "lf-examples-1"
MIN_TEXTS = 3  # an answer with fewer usable example texts is asked again
MAX_TEXTS = 10
MIN_TEXT_CHARS, MAX_TEXT_CHARS = 8, 300
EXAMPLES_MAX_TOKENS = 500


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
    if "similar_to" in rule:
        return "sim:" + "|".join(sorted(rule["similar_to"])) + f"@{rule['threshold']}"
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


def examples_version() -> str:
    """A hash of what shapes the example texts besides the inputs (as ``prompt_version`` for the rules)."""
    blob = [EXAMPLES_VERSION, WriteExamples.instructions,
            {k: str(v.json_schema_extra) for k, v in WriteExamples.fields.items()}, ExampleTexts.model_json_schema(),
            MIN_TEXTS, MAX_TEXTS, MIN_TEXT_CHARS, MAX_TEXT_CHARS, EXAMPLES_MAX_TOKENS]
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _flat(text: str) -> str:
    return " ".join(text.split()).casefold()


def clean_texts(value, shown: str = "") -> tuple[list[str], list[str]]:
    """Usable example texts: trimmed, bounded, distinct and not copies of a text ``shown`` (its numbered lines);
    and the problems of what was left out.

    >>> clean_texts(["  My parcel  never came. ", "my parcel never came.", "hi", 7], "1. where is my order")
    (['My parcel never came.'], ["'hi' is shorter than 8 characters", "'7' is not text"])
    >>> clean_texts(["Where is my order"], "1. where is my order")[1]
    ["'Where is my order' copies a text shown; write new ones"]
    """
    if not isinstance(value, (list, tuple)):
        return [], [f"expected a list of texts, got {_short(value)!r}"]
    copies = {_flat(re.sub(r"^\d+\.\s*", "", line)) for line in shown.splitlines()}
    texts, seen, problems = [], set(), []
    for item in value:
        if not isinstance(item, str):
            problems.append(f"{_short(item)!r} is not text")
            continue
        text = " ".join(item.split())
        if len(text) < MIN_TEXT_CHARS:
            problems.append(f"{_short(text)!r} is shorter than {MIN_TEXT_CHARS} characters")
        elif len(text) > MAX_TEXT_CHARS or "\x00" in text:
            problems.append(f"{_short(text)!r} is longer than {MAX_TEXT_CHARS} characters")
        elif _flat(text) in copies:
            problems.append(f"{_short(text)!r} copies a text shown; write new ones")
        elif _flat(text) not in seen:
            seen.add(_flat(text))
            texts.append(text)
    if len(texts) > MAX_TEXTS:
        problems.append(f"{len(texts)} texts; the first {MAX_TEXTS} are kept")
        texts = texts[:MAX_TEXTS]
    return texts, problems


class _Checked(dspy.Module):
    """One typed question, asked until ``check`` accepts the answer, ``max_attempts`` LM calls at most; each retry is
    told the problems of the answer before it (a reply that is not the requested JSON included)."""

    signature: type[dspy.Signature]
    json_fields: str  # what a reply that is not the requested JSON is told to hold

    def __init__(self, max_attempts: int, max_tokens: int):
        super().__init__()
        self.predict = dspy.Predict(self.signature)
        self.max_attempts = max(1, max_attempts)
        self.max_tokens = max_tokens

    def check(self, pred, inputs: dict) -> tuple[bool, object, list[str]]:
        """(accepted, the usable part of the answer, its problems)."""
        raise NotImplementedError

    def ask(self, inputs: dict) -> tuple[bool, object, int, list[str]]:
        """(accepted, the last answer's usable part or None, LM calls made, the problems each retry was told)."""
        problems, history, value = ["none"], [], None
        for attempt in range(1, self.max_attempts + 1):
            try:
                with dspy.context(adapter=CompactJSONAdapter()):
                    pred = self.predict(**inputs, problems=_problem_text(problems),
                                        config=retry_config(attempt, self.max_tokens))
            except AdapterParseError as exc:
                problems = [f"the answer was not the requested JSON ({_short(exc.lm_response)}); answer with a JSON "
                            f"object with {self.json_fields}"]
                history += problems
                continue
            ok, value, problems = self.check(pred, inputs)
            if ok:
                return True, value, attempt, history
            history += problems
        return False, value, self.max_attempts, history


class RuleProposer(_Checked):
    """Propose keyword and regex rules for one label; validated, with bounded retries (``max_attempts`` LM calls)."""

    signature = ProposeRules
    json_fields = "the fields keywords, combinations and regex_rules"

    def __init__(self, max_attempts: int = 2, max_tokens: int = MAX_TOKENS):
        super().__init__(max_attempts, max_tokens)

    def check(self, pred, inputs: dict) -> tuple[bool, object, list[str]]:
        rules, dropped = validate_answer(pred["keywords"], pred["combinations"], pred["regex_rules"])
        problems = [d["problem"] for d in dropped][:6] or ["the answer held no rule: give at least five keywords"]
        return bool(rules), (rules, dropped), problems

    def forward(self, **inputs) -> Proposal:
        ok, value, calls, history = self.ask(inputs)
        rules, dropped = value or ([], [])
        return Proposal(rules if ok else [], calls, dropped, history)


class ExampleWriter(_Checked):
    """New example texts of one label (for a ``similar`` rule); validated, with bounded retries (``max_attempts``).

    Returns a dict: ``texts`` (empty when no attempt gave ``MIN_TEXTS`` usable ones), ``calls``, ``dropped``
    (the problems of the last answer) and ``retried_for``."""

    signature = WriteExamples
    json_fields = "the field texts, a list of texts"

    def __init__(self, max_attempts: int = 2, max_tokens: int = EXAMPLES_MAX_TOKENS):
        super().__init__(max_attempts, max_tokens)

    def check(self, pred, inputs: dict) -> tuple[bool, object, list[str]]:
        texts, problems = clean_texts(getattr(pred["texts"], "root", pred["texts"]), inputs.get("examples", ""))
        if len(texts) >= MIN_TEXTS:
            return True, (texts, problems), problems
        return False, (texts, problems), problems[:6] + [f"{len(texts)} usable texts; write at least {MIN_TEXTS + 2}"]

    def forward(self, **inputs) -> dict:
        ok, value, calls, history = self.ask(inputs)
        texts, problems = value or ([], history[-1:])
        return {"texts": texts if ok else [], "calls": calls, "dropped": problems, "retried_for": history}



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
