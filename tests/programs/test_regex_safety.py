"""The regex safety check for LM-written labeling rules: every refused kind, the safe rules, compile_safe, fuzzing."""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labelloop.programs import regex_safety
from labelloop.programs.regex_safety import MAX_PATTERN_CHARS, compile_safe, regex_problem

SAFE = [
    r"https?://",
    r"\bcheck\s*(it\s*)?out\b",
    r"\bmy (channel|video|videos|page)\b",
    r"\b(deliver(y|ed)?|parcel|package|shipp(ed|ing))\b",
    r"^\W*(\S+\s+){0,4}\S*\W*$",
    r"\d{3}-\d{4}",
    r"free\s+(gift|money|iphone)",
    r"www\.|\.com\b",
    r"[A-Z]{5,}",
    r"(?i)refund",
    r"\$\d+",
    r"free.*money",
    r"\w+@\w+\.\w+",
    r"\d{1,3}(,\d{3})*",
    r"(?:ha|jo)+\b",
    r"(?<=\$)\d+",
    r"foo(?=\s?bar)",
    r"\b(?:lol|haha)\b",
    r"(?:\d\.?)+",
    r"(?x) free \s+ (gift | money)  # a comment",
]


def _refused(pattern, *words):
    problem = regex_problem(pattern)
    assert problem is not None, pattern
    for word in words:
        assert word in problem, (pattern, problem)
    assert "\n" not in problem
    return problem


@pytest.mark.parametrize("pattern", SAFE)
def test_safe_rules_pass(pattern):
    assert regex_problem(pattern) is None


def test_safe_rules_are_checked_quickly():
    start = time.perf_counter()
    for pattern in SAFE:
        regex_problem(pattern)
    assert time.perf_counter() - start < 2.0


@pytest.mark.parametrize(("pattern", "words"), [
    (None, ("must be a str", "NoneType")),
    (b"abc", ("must be a str", "bytes")),
    (42, ("must be a str", "int")),
    ("", ("empty",)),
    ("   \t", ("blank",)),
    ("a" * (MAX_PATTERN_CHARS + 1), (f"{MAX_PATTERN_CHARS + 1} characters", f"at most {MAX_PATTERN_CHARS}")),
    ("ab\0c", ("NUL", "position 2")),
    ("a\udc80", ("lone surrogate", "position 1")),
])
def test_refuses_what_is_not_a_usable_pattern_text(pattern, words):
    _refused(pattern, *words)


def test_max_chars_is_configurable():
    assert regex_problem("abcdef", max_chars=5) is not None
    assert regex_problem("abcde", max_chars=5) is None


@pytest.mark.parametrize(("pattern", "words"), [
    ("(", ("does not compile", "missing )", "position 0")),
    ("a{2,1}", ("does not compile", "min repeat greater than max repeat", "position 2")),
    ("[a-", ("does not compile", "unterminated character set")),
    ("*a", ("does not compile", "nothing to repeat")),
    ("(?<=a+)b", ("does not compile", "look-behind requires fixed-width pattern")),
])
def test_refuses_what_does_not_compile(pattern, words):
    _refused(pattern, *words)


@pytest.mark.parametrize("pattern", [r"(a)\1", r"(\w+)\s+\1", r"(?P<word>\w)x(?P=word)", r"(['\"]).{0,10}\1"])
def test_refuses_backreferences(pattern):
    _refused(pattern, "backreference", "linear time")


@pytest.mark.parametrize("pattern", [r"(a)?(?(1)b|c)", r"(?P<q>\")?x(?(q)\")", r"(<)?\w{1,5}(?(1)>)"])
def test_refuses_conditional_groups(pattern):
    _refused(pattern, "conditional group", "linear time")


@pytest.mark.parametrize(("pattern", "shown"), [
    (r"(a+)+", "`(a+)+`"),
    (r"(a*)*", "`(a*)*`"),
    (r"(\w+\s?)+", r"`(\w+\s?)+`"),
    (r"(?:x+y?)*", "`(?:x+y?)*`"),
    (r"((ab)*c)+", "`((ab)*c)+`"),
    (r"(a{1,1000})+", "`a{1,1000}`"),
    (r"(a+){1,1000}", "`(a+){1,1000}`"),
    (r"(a+){2,}", "`(a+){2,}`"),
    (r"(a{1,5})+b", "`(a{1,5})+`"),
    (r"(?:\d+,)*\d", r"`(?:\d+,)*`"),
    (r"^(\s*\w)+$", r"`(\s*\w)+`"),
])
def test_refuses_nested_repetition(pattern, shown):
    problem = _refused(pattern, "nested repetition", shown, "rewrite without the outer repetition")
    assert problem.startswith("nested repetition: ")


def test_nested_repetition_message_names_the_inner_repeat():
    assert regex_problem(r"(a+)+").startswith("nested repetition: `(a+)+` repeats a group that itself repeats (`a+`)")


@pytest.mark.parametrize(("pattern", "words"), [
    (r"(a|a)+", ("`(a|a)+`", "`a` and `a`", "'a'")),
    (r"(a|ab)*", ("`(a|ab)*`", "`a` and `ab`")),
    (r"(\w|\d)+", (r"`\w` and `\d`",)),
    (r"(.|\s)*", (r"`.` and `\s`",)),
    (r"(?:cat|cow)+", ("`cat` and `cow`", "'c'")),
    (r"(?:A|a)+", ("`A` and `a`",)),
    (r"(?:x(a|ab))+", ("`(?:x(a|ab))+`", "`a` and `ab`")),
    (r"(?:x|y|[a-z])+", ("`x` and `[a-z]`",)),
    (r"(?x) ( a | a ) +", ("alternatives",)),
])
def test_refuses_repeated_alternation_whose_branches_overlap(pattern, words):
    _refused(pattern, "ambiguous alternation", "can both start with", *words)


@pytest.mark.parametrize("pattern", [r"(a|)+", r"(?:a?b|c)+", r"(?:\s?x|y)+", r"(?:(?=a)|b){2,}"])
def test_refuses_repeated_alternation_with_a_branch_that_has_no_fixed_start(pattern):
    _refused(pattern, "ambiguous alternation", "does not start with a fixed character")


def test_alternation_outside_a_repeat_may_overlap():
    assert regex_problem(r"\b(cat|cow|a|ab)\b") is None
    assert regex_problem(r"(?:x|y)?(a|ab)") is None


@pytest.mark.parametrize(("pattern", "words"), [
    (r"\s*\s*", (r"`\s*` and `\s*`",)),
    (r"\d+\d*", (r"`\d+` and `\d*`",)),
    (r".*.*", ("`.*` and `.*`",)),
    (r"\w+\s*\w+", (r"`\w+` and `\w+`",)),
    (r"[a-z]+\w*x", (r"`[a-z]+` and `\w*`",)),
    (r"x\w+\s?\d+", (r"`\w+` and `\d+`",)),
])
def test_refuses_adjacent_overlapping_repeats(pattern, words):
    _refused(pattern, "overlapping repeats", "nothing fixed between them", *words)


@pytest.mark.parametrize("pattern", [r"(a+){0,4}", r"(\w+\s?){0,4}", r"(a{1,5}){1,10}"])
def test_refuses_a_repeat_that_follows_itself_in_a_bounded_group(pattern):
    _refused(pattern, "overlapping repeats", "can follow itself")


@pytest.mark.parametrize("pattern", [r"a.*b.*c.*d", r"x\S+a\S+b\S+c", r"(x.*a){3}", r"x[^,]*a[^;]*b.+c"])
def test_refuses_more_than_two_wide_repeats(pattern):
    _refused(pattern, "too many wide repeats", "at most 2", "re.search")


@pytest.mark.parametrize("pattern", [r".*free", r".+?\d", r"[^x]{2,}x", r"\b.*spam\b", r"foo|.*bar"])
def test_refuses_a_leading_repeat_that_runs_across_words(pattern):
    _refused(pattern, "leading wide repeat", "quadratic")


def test_a_leading_repeat_is_fine_when_anchored_or_last():
    assert regex_problem(r"^.*free") is None
    assert regex_problem(r"\Afree.*") is None
    assert regex_problem(r".*") is None


@pytest.mark.parametrize("pattern", [r"(?:a?a?)+b", r"(?:ab?|ba?)+", r"(?:\d?\d?)+x"])
def test_refuses_overlapping_optional_parts_in_a_repeat(pattern):
    _refused(pattern, "ambiguous optional part", "exponentially")


@pytest.mark.parametrize(("pattern", "shown"), [
    (r"(?=\w+x)", r"`(?=\w+x)`"),
    (r"(?!.*spam)ham", "`(?!.*spam)`"),
    (r"foo(?=.{0,20}bar)", "`.{0,20}`"),
    (r"(?<!a)x(?!\d+x)", r"`\d+`"),
])
def test_refuses_unbounded_repeats_in_lookarounds(pattern, shown):
    _refused(pattern, "lookaround", shown)


def test_the_probe_refuses_a_pattern_that_runs_too_long(monkeypatch):
    # Statically fine, but quadratic with re.search on a long run of "a": re takes seconds on 20,000 characters.
    pattern = r"(?:ab?)+c"
    monkeypatch.setattr(regex_safety, "PROBE_SECONDS", 0.001)
    assert regex_problem(pattern) == "the pattern took over 0.001 s on a 5,000-character probe (catastrophic backtracking)"


def test_the_probe_is_skipped_when_regex_cannot_compile_the_pattern(monkeypatch):
    def refuse(*args, **kwargs):
        raise regex_safety.regex.error("unsupported")

    monkeypatch.setattr(regex_safety.regex, "compile", refuse)
    assert regex_problem(r"free\s+money") is None


def test_compile_safe_returns_a_working_pattern():
    pattern = compile_safe(r"free\s+(gift|money|iphone)")
    assert isinstance(pattern, re.Pattern)
    assert pattern.search("Get your FREE  iPhone now").group(1) == "iPhone"
    assert pattern.search("nothing here") is None
    assert compile_safe(r"refund", ignore_case=False).search("REFUND") is None
    assert compile_safe(r"refund", ignore_case=False).search("a refund") is not None


@pytest.mark.parametrize("pattern", [r"(a+)+$", "(", r"(a)\1", ""])
def test_compile_safe_raises_value_error_with_the_problem(pattern):
    with pytest.raises(ValueError) as raised:
        compile_safe(pattern)
    assert str(raised.value) == regex_problem(pattern)


REGEX_PIECES = list("ab.*+?()[]{}|^$-:=!<>,019xé# \\") + [
    r"\w", r"\W", r"\s", r"\S", r"\d", r"\D", r"\b", r"\B", r"\A", r"\Z", r"\1", r"\n", r"\x41", r"\u00e9", "(?:", "(?P<n>",
    "(?P=n)", "(?=", "(?!", "(?<=", "(?<!", "(?>", "(?i)", "(?x)", "(?i:", "(?-i:", "(?#c)", "(?(1)", "{2,}", "{,3}", "{1,20}",
    "*+", "++", "?+", "[^", "a-z", "[:alpha:]", r"\N{DIGIT ONE}"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(REGEX_PIECES), max_size=20).map("".join))
def test_regex_like_text_never_makes_the_check_raise(pattern):
    problem = regex_problem(pattern)
    assert problem is None or (isinstance(problem, str) and problem)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=40))
def test_arbitrary_text_never_makes_the_check_raise(pattern):
    problem = regex_problem(pattern)
    assert problem is None or (isinstance(problem, str) and problem)


ATOMS = ["a", "b", "x", r"\w", r"\d", r"\s", ".", "[a-c]", "[^x]", r"\S", r"\W", "!", " ", r"\b"]
QUANTIFIERS = ["", "", "", "*", "+", "?", "{2}", "{1,3}", "{0,20}", "{2,}", "*?", "+"]


def _generated(rng: random.Random, depth: int) -> str:
    parts = []
    for _ in range(rng.randint(1, 3)):
        if depth and rng.random() < 0.35:
            branches = [_generated(rng, depth - 1) for _ in range(rng.choice((1, 1, 2, 3)))]
            parts.append("(" + "|".join(branches) + ")" + rng.choice(QUANTIFIERS))
        else:
            atom = rng.choice(ATOMS)
            parts.append(atom + ("" if atom == r"\b" else rng.choice(QUANTIFIERS)))
    pattern = "".join(parts)
    return ("^" if rng.random() < 0.2 else "") + pattern + ("$" if rng.random() < 0.2 else "")


def _adversarial_texts() -> list[str]:
    """20,000 characters of long runs of letters, digits, spaces and punctuation, with a line break and an x now and then."""
    segments = ["a" * 60 + " " * 3 + "1" * 12 + "!" * 5 + "b" * 20 + "\t", "ab" * 30 + "1" * 20 + " !" * 5, "a1 " * 20 + "c"]
    texts = []
    for segment in segments:
        line = (segment * (480 // len(segment) + 1))[:480] + "x\n"
        texts.append((line * (20_000 // len(line) + 1))[:20_000])
    return texts


SEARCH_ALL = """
import json, re, sys, time
patterns, texts = json.load(sys.stdin)
for pattern in patterns:
    compiled = re.compile(pattern, re.IGNORECASE)
    worst = 0.0
    for text in texts:
        start = time.perf_counter()
        compiled.search(text)
        worst = max(worst, time.perf_counter() - start)
    print(json.dumps([pattern, worst]), flush=True)
"""


def test_accepted_patterns_run_quickly_with_re_on_long_adversarial_text():
    # Each search runs in a child process, so a catastrophic pattern fails the test instead of hanging it. A backtracking
    # engine still needs time quadratic in the length of a run it retries, so the runs here are those of ordinary text
    # (hundreds of characters); catastrophic backtracking takes far longer than the limit.
    rng = random.Random(0)
    accepted = sorted({p for p in (_generated(rng, 2) for _ in range(600)) if regex_problem(p) is None})
    assert len(accepted) > 100
    feed = json.dumps([accepted, _adversarial_texts()])
    try:
        done = subprocess.run([sys.executable, "-c", SEARCH_ALL], input=feed, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired as stopped:
        output = stopped.stdout or b""  # bytes even with text=True: what the child printed before it was stopped
        finished = (output.decode(errors="replace") if isinstance(output, bytes) else output).count("\n")
        pytest.fail(f"re.search did not finish on {accepted[finished]!r}")
    assert done.returncode == 0, done.stderr
    times = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(times) == len(accepted)
    slow = [(pattern, round(seconds, 2)) for pattern, seconds in times if seconds > 5.0]
    assert not slow, slow
