"""Whether a regular expression written by an LM is safe to run with ``re`` on every record of a dataset.

Labeling rules proposed by an LM are regexes that ``re.search`` runs over millions of texts of up to
200,000 characters each; one rule that backtracks catastrophically stalls the whole run. A pattern is
checked on the standard library's parse tree (backreferences, nested repetition, ambiguous
alternation, overlapping repeats, repeats inside lookarounds), then probed with adversarial strings
under the ``regex`` package's timeout. The checks are conservative: a refused rule can be rewritten,
a stalled run cannot. Nothing here runs generated code.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field

import regex

try:
    from re import _parser as _sre
except ImportError:  # Python < 3.11
    import sre_parse as _sre  # type: ignore[no-redef]

MAX_PATTERN_CHARS = 200
BIG_REPEAT = 10  # a repeat allowing more iterations than this counts as unbounded
MAX_WIDE_REPEATS = 2  # unbounded repeats of near-universal classes that can give characters back
PROBE_SECONDS = 0.1
PROBE_RUN_CHARS = 5_000
PROBE_MIX_CHARS = 20_000

_LITERAL, _NOT_LITERAL, _IN, _ANY = _sre.LITERAL, _sre.NOT_LITERAL, _sre.IN, _sre.ANY
_NEGATE, _RANGE, _CATEGORY = _sre.NEGATE, _sre.RANGE, _sre.CATEGORY
_AT, _BRANCH, _SUBPATTERN = _sre.AT, _sre.BRANCH, _sre.SUBPATTERN
_ASSERT, _ASSERT_NOT = _sre.ASSERT, _sre.ASSERT_NOT
_GROUPREF, _GROUPREF_EXISTS = _sre.GROUPREF, _sre.GROUPREF_EXISTS
_ATOMIC_GROUP = getattr(_sre, "ATOMIC_GROUP", None)
_MAXREPEAT = _sre.MAXREPEAT
_CHAR_OPS = frozenset({_LITERAL, _NOT_LITERAL, _IN, _ANY})
_REPEAT_OPS = frozenset(op for op in (_sre.MAX_REPEAT, _sre.MIN_REPEAT, getattr(_sre, "POSSESSIVE_REPEAT", None)) if op)
_LOOK_OPS = frozenset({_ASSERT, _ASSERT_NOT})
_GROUPREF_OPS = frozenset({_GROUPREF, _GROUPREF_EXISTS})
_END_ATS = frozenset({_sre.AT_END, _sre.AT_END_STRING})

_CATEGORIES = {_sre.CATEGORY_DIGIT: r"\d", _sre.CATEGORY_NOT_DIGIT: r"\D", _sre.CATEGORY_SPACE: r"\s",
               _sre.CATEGORY_NOT_SPACE: r"\S", _sre.CATEGORY_WORD: r"\w", _sre.CATEGORY_NOT_WORD: r"\W"}
_ATS = {_sre.AT_BEGINNING: "^", _sre.AT_BEGINNING_STRING: r"\A", _sre.AT_BOUNDARY: r"\b",
        _sre.AT_NON_BOUNDARY: r"\B", _sre.AT_END: "$", _sre.AT_END_STRING: r"\Z"}
_FLAG_LETTERS = ((re.ASCII, "a"), (re.IGNORECASE, "i"), (re.LOCALE, "L"), (re.MULTILINE, "m"), (re.DOTALL, "s"),
                 (re.UNICODE, "u"), (re.VERBOSE, "x"))
_SPECIAL = set(r".^$*+?{}[]\|()")
_CLASS_SPECIAL = set(r"\]^-[")
# Characters every set is tested on: ASCII, and the non-ASCII letters, digits, spaces and symbols that
# classes such as \w, \d and \s reach; each pattern adds its own literals and range ends.
_UNIVERSE = "".join(map(chr, range(128))) + (
    "\u00a0\u00a1\u00a9\u00ab\u00ae\u00b0\u00b2\u00b5\u00b7\u00ba\u00bb\u00bc\u00bf\u00c0\u00c4\u00c5\u00c9\u00d7"
    "\u00df\u00e0\u00e4\u00e5\u00e9\u00f1\u00f7\u00ff\u0130\u0131\u0152\u0153\u017f\u01c5\u02bc\u0300\u0391\u03a3"
    "\u03b1\u03c2\u03c3\u0401\u0416\u0436\u0451\u05d0\u0660\u0663\u06f0\u0905\u0966\u0e01\u1680\u1e9e\u2000\u2003"
    "\u2009\u200b\u2013\u2014\u2019\u201c\u2022\u2026\u2028\u2029\u202f\u205f\u20ac\u2122\u212a\u212b\u2160\u2460"
    "\u3000\u3042\u4e2d\uac00\ufb01\ufeff\uff10\uff21\ufffd\U0001d400\U0001f44d\U0001f600")


class _Refusal(Exception):
    """A problem found in a pattern; its message is the sentence regex_problem returns."""


def regex_problem(pattern: str, *, max_chars: int = MAX_PATTERN_CHARS) -> str | None:
    """Why ``pattern`` may not be used as a labeling rule (one sentence, naming what was found), or None when it is safe.

    A safe pattern compiles with ``re``, has no backreferences or conditional groups, no nested,
    overlapping or ambiguously alternated repetition that could backtrack catastrophically, and
    finishes quickly on adversarial probe strings. The pattern is analysed as it runs with
    ``re.IGNORECASE``.

    >>> regex_problem(r"(a+)+$")
    'nested repetition: `(a+)+` repeats a group that itself repeats (`a+`), ...; rewrite without the outer repetition'
    >>> regex_problem(r"\\bfree\\s+(gift|money|iphone)\\b") is None
    True
    """
    try:
        _check_text(pattern, max_chars)
        parsed = _parse(pattern)
        _Checker(pattern, parsed).check()
    except _Refusal as refusal:
        return str(refusal)
    return None


def compile_safe(pattern: str, *, ignore_case: bool = True) -> re.Pattern:
    """``re.compile(pattern)`` (with ``re.IGNORECASE`` unless ``ignore_case`` is false) once regex_problem finds nothing.

    Raises ValueError with regex_problem's sentence when the pattern is not safe.
    """
    problem = regex_problem(pattern)
    if problem is not None:
        raise ValueError(problem)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return re.compile(pattern, re.IGNORECASE if ignore_case else 0)


def _check_text(pattern: object, max_chars: int) -> None:
    if not isinstance(pattern, str):
        raise _Refusal(f"the pattern must be a str; got {type(pattern).__name__}")
    if not pattern:
        raise _Refusal("the pattern is empty; expected a regular expression")
    if not pattern.strip():
        raise _Refusal("the pattern is blank (only whitespace); expected a regular expression")
    if len(pattern) > max_chars:
        raise _Refusal(f"the pattern is {len(pattern)} characters long; at most {max_chars} are allowed")
    for i, ch in enumerate(pattern):
        if ch == "\0":
            raise _Refusal(f"the pattern contains a NUL character at position {i}; write it without NUL characters")
        if "\ud800" <= ch <= "\udfff":
            raise _Refusal(f"the pattern contains a lone surrogate ({ch!r}) at position {i}; use valid Unicode characters only")


def _parse(pattern: str) -> _sre.SubPattern:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            re.compile(pattern, re.IGNORECASE)
            return _sre.parse(pattern, re.IGNORECASE)
    except re.error as exc:
        where = f" at position {exc.pos}" if exc.pos is not None else ""
        raise _Refusal(f"the pattern does not compile with re: {exc.msg}{where}") from None
    except (RecursionError, OverflowError, ValueError, TypeError) as exc:
        raise _Refusal(f"the pattern does not compile with re: {exc}") from None


def _big(hi: int) -> bool:
    return hi > BIG_REPEAT


def _variable(lo: int, hi: int) -> bool:
    return hi > 1 and lo < hi


def _quantifier(op, lo: int, hi: int) -> str:
    if hi == _MAXREPEAT:
        text = {0: "*", 1: "+"}.get(lo, f"{{{lo},}}")
    elif (lo, hi) == (0, 1):
        text = "?"
    else:
        text = f"{{{lo}}}" if lo == hi else f"{{{lo},{hi}}}"
    if op is _sre.MIN_REPEAT:
        return text + "?"
    return text if op is _sre.MAX_REPEAT else text + "+"


def _escape(ch: str, special: set[str]) -> str:
    if ch in special:
        return "\\" + ch
    if ch == "\n":
        return r"\n"
    if ch == "\t":
        return r"\t"
    if ch.isprintable():
        return ch
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


@dataclass(frozen=True)
class _Frame:
    """What follows the end of a sequence: ``seq[index:]``; ``again`` marks the next iteration of a repeat (may be skipped)."""

    seq: list
    index: int
    again: bool = False


@dataclass
class _Follow:
    """What can come right after a repeat: the overlapping repeats reached, and whether a fixed character overlaps it."""

    hits: list = field(default_factory=list)
    fixed_overlap: bool = False


class _Checker:
    """The static checks and the probe for one parsed pattern."""

    def __init__(self, pattern: str, parsed: _sre.SubPattern) -> None:
        self.pattern = pattern
        self.tree = list(parsed)
        self.flags = parsed.state.flags
        self.names = {gid: name for name, gid in parsed.state.groupdict.items()}
        self.members: dict[object, frozenset[str]] = {}
        extra = set()
        for op, av in self._char_items(self.tree):
            extra.update(self._extra_chars(op, av))
        self.universe = _UNIVERSE + "".join(sorted(set(extra) - set(_UNIVERSE)))
        self.leading = {id(av) for av in self._leading_repeats(self.tree)[0]}

    def check(self) -> None:
        self._structure(self.tree, None)
        self._alternations()
        wide: list[tuple[str, int]] = []
        self._overlaps(self.tree, (), None, 0, 1, wide)
        total = sum(count for _, count in wide)
        if total > MAX_WIDE_REPEATS:
            shown = [f"`{text}`" + (f" ({count} times, in a repeated group)" if count > 1 else "") for text, count in wide]
            listed = ", ".join(shown[:-1]) + " and " + shown[-1] if len(shown) > 1 else shown[0]
            raise _Refusal(f"too many wide repeats: {listed} match almost any character and can give characters back to "
                           f"the text that follows, {total} such repeats where at most {MAX_WIDE_REPEATS} are allowed, which "
                           "backtracks polynomially with re.search; make each repeat stop at a character it cannot match "
                           "or use fewer repeats")
        self._probe()

    # Rendering

    def _render(self, seq) -> str:
        items = list(seq)
        return "".join(self._render_item(op, av, len(items) == 1) for op, av in items)

    def _render_item(self, op, av, alone: bool = True) -> str:
        if op in _CHAR_OPS:
            return self._render_char(op, av)
        if op is _AT:
            return _ATS.get(av, "")
        if op is _BRANCH:
            text = "|".join(self._render(branch) for branch in av[1])
            return text if alone else f"(?:{text})"
        if op is _SUBPATTERN:
            gid, add, delete, body = av
            if gid is None:
                on = "".join(letter for flag, letter in _FLAG_LETTERS if add & flag)
                off = "".join(letter for flag, letter in _FLAG_LETTERS if delete & flag)
                return f"(?{on}{'-' + off if off else ''}:{self._render(body)})"
            name = self.names.get(gid)
            return f"(?P<{name}>{self._render(body)})" if name else f"({self._render(body)})"
        if op is _ATOMIC_GROUP:
            return f"(?>{self._render(av)})"
        if op in _REPEAT_OPS:
            lo, hi, body = av
            items = list(body)
            text = self._render(items)
            if len(items) != 1 or items[0][0] in (_BRANCH, _AT) or items[0][0] in _REPEAT_OPS:
                text = f"(?:{text})"
            return text + _quantifier(op, lo, hi)
        if op in _LOOK_OPS:
            direction, body = av
            kind = ("=" if op is _ASSERT else "!") if direction == 1 else ("<=" if op is _ASSERT else "<!")
            return f"(?{kind}{self._render(body)})"
        if op is _GROUPREF:
            name = self.names.get(av)
            return f"(?P={name})" if name else f"\\{av}"
        if op is _GROUPREF_EXISTS:
            gid, yes, no = av
            return f"(?({self.names.get(gid, gid)}){self._render(yes)}{'|' + self._render(no) if no else ''})"
        return "?"

    def _render_char(self, op, av) -> str:
        if op is _LITERAL:
            return _escape(chr(av), _SPECIAL)
        if op is _NOT_LITERAL:
            return f"[^{_escape(chr(av), _CLASS_SPECIAL)}]"
        if op is _ANY:
            return "."
        items = list(av)
        negated = bool(items) and items[0][0] is _NEGATE
        if negated:
            items = items[1:]
        if len(items) == 1 and items[0][0] is _CATEGORY and not negated and items[0][1] in _CATEGORIES:
            return _CATEGORIES[items[0][1]]
        parts = []
        for kind, value in items:
            if kind is _LITERAL:
                parts.append(_escape(chr(value), _CLASS_SPECIAL))
            elif kind is _RANGE:
                parts.append(f"{_escape(chr(value[0]), _CLASS_SPECIAL)}-{_escape(chr(value[1]), _CLASS_SPECIAL)}")
            elif kind is _CATEGORY:
                parts.append(_CATEGORIES.get(value, r"\s\S"))
            else:
                parts.append(r"\s\S")
        return f"[{'^' if negated else ''}{''.join(parts)}]"

    # Character sets

    def _char_items(self, seq) -> Iterator[tuple]:
        for op, av in seq:
            if op in _CHAR_OPS:
                yield op, av
            else:
                for child in _children(op, av):
                    yield from self._char_items(child)

    @staticmethod
    def _extra_chars(op, av) -> set[str]:
        codes: list[int] = []
        if op in (_LITERAL, _NOT_LITERAL):
            codes.append(av)
        elif op is _IN:
            for kind, value in av:
                if kind is _LITERAL:
                    codes.append(value)
                elif kind is _RANGE:
                    lo, hi = value
                    codes.extend((lo, min(lo + 1, hi), (lo + hi) // 2, max(hi - 1, lo), hi))
        chars = set()
        for code in codes:
            ch = chr(code)
            for variant in (ch, ch.lower(), ch.upper(), ch.casefold()):
                if len(variant) == 1 and not "\ud800" <= variant <= "\udfff":
                    chars.add(variant)
        return chars

    def _chars(self, op, av) -> frozenset[str]:
        key = (op, tuple(av) if isinstance(av, list) else av)
        found = self.members.get(key)
        if found is None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                single = re.compile(self._render_char(op, av), self.flags & ~re.VERBOSE)
            found = self.members[key] = frozenset(single.findall(self.universe))
        return found

    def _all_chars(self, seq) -> frozenset[str]:
        out: set[str] = set()
        for op, av in seq:
            if op in _CHAR_OPS:
                out |= self._chars(op, av)
            elif op in _GROUPREF_OPS:
                out |= set(self.universe)
            elif op not in _LOOK_OPS:
                for child in _children(op, av):
                    out |= self._all_chars(child)
        return frozenset(out)

    def _first(self, seq) -> tuple[frozenset[str], bool]:
        """The characters a match of ``seq`` can start with, and whether it can match the empty string."""
        out: set[str] = set()
        for op, av in seq:
            if op in _CHAR_OPS:
                return frozenset(out | self._chars(op, av)), False
            if op is _AT or op in _LOOK_OPS:
                continue
            if op in _GROUPREF_OPS:
                out |= set(self.universe)
                continue
            if op in _REPEAT_OPS:
                chars, empty = self._first(av[2])
                out |= chars
                if av[0] > 0 and not empty:
                    return frozenset(out), False
                continue
            children = list(_children(op, av))
            empty = not children
            for child in children:
                chars, child_empty = self._first(child)
                out |= chars
                empty = empty or child_empty
            if not empty:
                return frozenset(out), False
        return frozenset(out), True

    def _strict_first(self, seq) -> frozenset[str] | None:
        """The characters a match of ``seq`` starts with, or None when it does not start with a fixed character or set."""
        for op, av in seq:
            if op in _CHAR_OPS:
                return self._chars(op, av)
            if op is _AT or op in _LOOK_OPS:
                continue
            if op is _SUBPATTERN:
                return self._strict_first(av[3])
            if op is _ATOMIC_GROUP:
                return self._strict_first(av)
            if op in _REPEAT_OPS:
                return self._strict_first(av[2]) if av[0] >= 1 else None
            if op is _BRANCH:
                firsts = [self._strict_first(branch) for branch in av[1]]
                return None if any(first is None for first in firsts) else frozenset().union(*firsts)
            return None
        return None

    @staticmethod
    def _wide(chars: frozenset[str]) -> bool:
        return len({ch.lower() for ch in chars if " " <= ch <= "~"}) >= 10

    @staticmethod
    def _example(chars: frozenset[str]) -> str:
        ordered = sorted(chars, key=lambda ch: (not (ch.isascii() and ch.isalnum()), not (ch.isascii() and ch.isprintable()),
                                                ch != " ", ch != ch.lower(), ch))
        return repr(ordered[0]) if ordered else "''"

    # Rules 3, 4 and 7: backreferences, conditionals, nested repetition, repeats in lookarounds

    def _structure(self, seq, big_outer: tuple | None) -> None:
        for op, av in seq:
            if op is _GROUPREF:
                raise _Refusal(f"backreference: `{self._render_item(op, av)}` must match the same text as group {av}, "
                               "which re cannot do in linear time; write the group's pattern again instead of referring to it")
            if op is _GROUPREF_EXISTS:
                raise _Refusal(f"conditional group: `{self._render_item(op, av)}` depends on whether group {av[0]} matched, "
                               "which re cannot do in linear time; write the alternatives as separate rules")
            if op in _LOOK_OPS:
                inner = self._find_big_repeat(av[1])
                if inner is not None:
                    raise _Refusal(f"unbounded repeat in a lookaround: `{self._render_item(op, av)}` contains "
                                   f"`{self._render_item(*inner)}`; a lookaround may only hold fixed text or repeats of at "
                                   f"most {BIG_REPEAT}")
            if op in _REPEAT_OPS:
                lo, hi, body = av
                if big_outer is not None and _variable(lo, hi):
                    raise _Refusal(f"nested repetition: `{self._render_item(*big_outer)}` repeats a group that itself repeats "
                                   f"(`{self._render_item(op, av)}`), so the same text can be split between the repeats in "
                                   "exponentially many ways; rewrite without the outer repetition")
                self._structure(body, big_outer if big_outer is not None or not _big(hi) else (op, av))
                continue
            for child in _children(op, av):
                self._structure(child, big_outer)

    def _find_big_repeat(self, seq) -> tuple | None:
        for op, av in seq:
            if op in _REPEAT_OPS and _big(av[1]):
                return op, av
            for child in _children(op, av):
                found = self._find_big_repeat(child)
                if found is not None:
                    return found
        return None

    # Rule 5: alternations inside repeats, checked on the source (re's parser merges one-character alternatives)

    def _alternations(self) -> None:
        for repeated, alternatives, verbose in _repeated_alternations(self.pattern, bool(self.flags & re.VERBOSE)):
            firsts = []
            for source in alternatives:
                first = self._alternative_first(source, verbose)
                text = source.strip() if verbose else source
                if first is None:
                    shown = f"`{text}`" if text.strip() else "the empty alternative"
                    raise _Refusal(f"ambiguous alternation: in `{repeated}` {shown} does not start with a fixed character; "
                                   "inside a repeat every alternative must start with a literal character or set, each "
                                   "different from the others")
                for other_text, other in firsts:
                    common = first & other
                    if common:
                        raise _Refusal(f"ambiguous alternation: in `{repeated}` the alternatives `{other_text}` and `{text}` "
                                       f"can both start with {self._example(common)}, so the repeat can match the same text "
                                       "in many ways; start each alternative with a different character or move the "
                                       "alternation out of the repeat")
                firsts.append((text, first))

    def _alternative_first(self, text: str, verbose: bool) -> frozenset[str] | None:
        flags = (self.flags & ~re.VERBOSE) | (re.VERBOSE if verbose else 0)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                parsed = _sre.parse(text, flags)
        except (re.error, RecursionError, OverflowError, ValueError, TypeError):
            return None
        return self._strict_first(list(parsed))

    # Rule 6 (and exponential ambiguity of optional parts): what can follow each repeat

    def _overlaps(self, seq, cont: tuple, big_outer: tuple | None, outer_tail: int, times: int,
                  wide: list[tuple[str, int]]) -> None:
        items = list(seq)
        for i, (op, av) in enumerate(items):
            rest = (_Frame(items, i + 1),) + cont
            if op in _REPEAT_OPS:
                lo, hi, body = av
                if (_variable(lo, hi) and _single_char(body)) or (big_outer is not None and lo < hi):
                    self._check_repeat(op, av, rest, big_outer, outer_tail, times, wide)
                inner = rest if hi <= 1 else (_Frame(list(body), 0, True),) + rest
                if big_outer is None and _big(hi):
                    self._overlaps(body, inner, (op, av), len(rest), times, wide)
                else:
                    self._overlaps(body, inner, big_outer, outer_tail, times * (hi if 1 < hi <= BIG_REPEAT else 1), wide)
            elif op in _LOOK_OPS:
                self._overlaps(av[1], (), None, 0, 1, wide)
            else:
                for child in _children(op, av):
                    self._overlaps(child, rest, big_outer, outer_tail, times, wide)

    def _check_repeat(self, op, av, rest: tuple, big_outer: tuple | None, outer_tail: int, times: int,
                      wide: list[tuple[str, int]]) -> None:
        lo, hi, body = av
        chars = self._all_chars(body)
        text = self._render_item(op, av)
        if not _variable(lo, hi):
            frames = rest[:len(rest) - outer_tail]
            follow = self._follow(frames, chars, av, optional=True)
            if follow.hits or follow.fixed_overlap:
                what = f"`{self._render_item(*follow.hits[0])}`" if follow.hits else "the fixed character"
                raise _Refusal(f"ambiguous optional part: in `{self._render_item(*big_outer)}` the optional `{text}` and "
                               f"{what} that can follow it can match the same character, so the repeat can split the text "
                               "in exponentially many ways; make what follows an optional part start with a character the "
                               "optional part cannot match")
            return
        follow = self._follow(rest, chars, av, optional=False)
        for other_op, other_av in follow.hits:
            other = self._first(other_av[2])[0]
            common = chars & other
            same = other_av is av
            if not (chars == other or any(ch.isalnum() for ch in common)):
                continue
            if not (_big(hi) or _big(other_av[1]) or same):
                continue
            if same:
                raise _Refusal(f"overlapping repeats: `{text}` can follow itself when its enclosing group repeats and "
                               f"both can match {self._example(common)}, so the text can be split between them in many "
                               "ways; put a fixed character the repeat cannot match after it")
            raise _Refusal(f"overlapping repeats: `{text}` and `{self._render_item(other_op, other_av)}` can match the "
                           f"same characters (such as {self._example(common)}) with nothing fixed between them, so the "
                           "text can be split between them in many ways; merge them into one repeat or put a fixed "
                           "character between them")
        if id(av) in self.leading and _big(hi) and _crosses_words(chars):
            after = self._follow(rest, frozenset(self.universe), av, optional=False)
            if after.hits or after.fixed_overlap:
                raise _Refusal(f"leading wide repeat: `{text}` can start the match and runs across words and spaces, so "
                               "re.search retries it at every position of a long line, which takes quadratic time; drop it "
                               "(re.search already looks everywhere) or start the pattern with a fixed word or ^")
        if _big(hi) and self._wide(chars) and (follow.hits or follow.fixed_overlap):
            wide.append((text, times))

    def _follow(self, frames: tuple, chars: frozenset[str], own: tuple, *, optional: bool) -> _Follow:
        """The repeats (and fixed characters) overlapping ``chars`` that can come first after a repeat, ``frames`` being
        what follows it; with ``optional``, optional parts count as repeats too."""
        found = _Follow()
        seen: set[tuple[int, int]] = set()

        def walk(items: list, index: int, rest: tuple) -> None:
            if (id(items), index) in seen:
                return
            seen.add((id(items), index))
            for op, av in items[index:]:
                index += 1
                here = (_Frame(items, index),) + rest
                if op in _CHAR_OPS:
                    found.fixed_overlap |= bool(self._chars(op, av) & chars)
                    return
                if op is _AT:
                    if av in _END_ATS:
                        return
                    continue
                if op in _LOOK_OPS:
                    continue
                if op in _GROUPREF_OPS:
                    found.fixed_overlap = True
                    return
                if op in _REPEAT_OPS:
                    lo, hi, body = av
                    first, empty = self._first(body)
                    if _variable(lo, hi) or (optional and lo < hi):
                        if first & chars:
                            if not (optional and av is own):
                                found.hits.append((op, av))
                            return
                        if lo > 0 and not empty:
                            return
                        continue
                    walk(list(body), 0, here if hi <= 1 else (_Frame(list(body), 0, True),) + here)
                    if lo > 0 and not empty:
                        return
                    continue
                if op is _BRANCH:
                    for branch in av[1]:
                        walk(list(branch), 0, here)
                    return
                body = av[3] if op is _SUBPATTERN else av
                walk(list(body), 0, here)
                return
            for k, frame in enumerate(rest):
                if frame.again:
                    walk(frame.seq, frame.index, rest[k:])
                    continue
                walk(frame.seq, frame.index, rest[k + 1:])
                return

        walk([], 0, frames)
        return found

    def _leading_repeats(self, seq) -> tuple[list, bool]:
        """The repeats a match of ``seq`` can start in (unless it is anchored at ^ or \\A), and whether it can be empty."""
        found: list = []
        for op, av in seq:
            if op is _AT:
                if av in (_sre.AT_BEGINNING, _sre.AT_BEGINNING_STRING):
                    return found, False
                continue
            if op in _LOOK_OPS:
                continue
            if op in _CHAR_OPS or op in _GROUPREF_OPS:
                return found, False
            if op in _REPEAT_OPS:
                found.append(av)
            children = list(_children(op, av))
            empty = op in _REPEAT_OPS and av[0] == 0
            for child in children:
                inner, child_empty = self._leading_repeats(child)
                found += inner
                empty = empty or child_empty
            if not empty:
                return found, False
        return found, True

    # The dynamic probe

    def _probe(self) -> None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                compiled = regex.compile(self.pattern, regex.IGNORECASE | regex.V0)
        except (regex.error, RecursionError, OverflowError, ValueError, TypeError):
            return
        sets = [self._chars(op, av) for op, av in self._char_items(self.tree)]
        union = frozenset().union(*sets)
        stop = next((ch for ch in "!~\u00a7\x07\x00\n" if ch not in union), "\n")
        reps: list[str] = []
        for chars in sets:
            for ch in _representatives(chars):
                if ch not in reps:
                    reps.append(ch)
        reps = reps[:8] or ["a"]
        mix = "".join(reps)
        probes = [(PROBE_RUN_CHARS, ch * PROBE_RUN_CHARS + stop) for ch in reps]
        probes.append((PROBE_MIX_CHARS, (mix * (PROBE_MIX_CHARS // len(mix) + 1))[:PROBE_MIX_CHARS] + stop))
        for size, text in probes:
            try:
                compiled.search(text, timeout=PROBE_SECONDS)
            except TimeoutError:
                raise _Refusal(f"the pattern took over {PROBE_SECONDS:g} s on a {size:,}-character probe "
                               "(catastrophic backtracking)") from None


def _children(op, av) -> Iterator:
    """The sub-sequences of a parsed item."""
    if op is _SUBPATTERN:
        yield av[3]
    elif op is _BRANCH:
        yield from av[1]
    elif op in _REPEAT_OPS:
        yield av[2]
    elif op in _LOOK_OPS:
        yield av[1]
    elif _ATOMIC_GROUP is not None and op is _ATOMIC_GROUP:
        yield av
    elif op is _GROUPREF_EXISTS:
        yield av[1]
        if av[2] is not None:
            yield av[2]


def _crosses_words(chars: frozenset[str]) -> bool:
    """Whether a run of ``chars`` can span several words: they include a space and a letter or digit."""
    return " " in chars and any(ch.isalnum() for ch in chars)


def _single_char(body) -> bool:
    """Whether a repeat's body matches exactly one character (a class, a literal or ``.``, possibly in a group)."""
    items = list(body)
    if len(items) != 1:
        return False
    op, av = items[0]
    if op in _CHAR_OPS:
        return True
    if op is _SUBPATTERN:
        return _single_char(av[3])
    return _ATOMIC_GROUP is not None and op is _ATOMIC_GROUP and _single_char(av)


def _representatives(chars: frozenset[str]) -> list[str]:
    ordered = sorted(chars, key=lambda ch: (not ch.isascii(), ch != " ", ch))
    if len(ordered) <= 2:
        return ordered
    picks = []
    for test in (str.isalpha, str.isdigit, str.isspace, lambda ch: ch.isprintable() and not ch.isalnum()):
        pick = next((ch for ch in ordered if test(ch)), None)
        if pick is not None and pick not in picks:
            picks.append(pick)
    return picks or ordered[:2]


_QUANTIFIER = re.compile(r"[*+?]|\{(\d*)(,?)(\d*)\}")
_FLAGS_GROUP = re.compile(r"\(\?([aiLmsux]*)(?:-([imsx]*))?([:)])")


def _repeated_alternations(pattern: str, verbose: bool) -> Iterator[tuple[str, list[str], bool]]:
    """Each group of alternatives that sits inside a repeat allowing more than one iteration, as written in ``pattern``:
    (the repeated group with its quantifier, the alternatives, whether they are in verbose mode)."""
    stack = [{"open": 0, "content": 0, "bars": [], "pending": [], "verbose": verbose}]
    i, n = 0, len(pattern)
    while i < n:
        frame = stack[-1]
        ch = pattern[i]
        if ch == "\\":
            i += 2
        elif frame["verbose"] and ch == "#":
            end = pattern.find("\n", i)
            i = n if end < 0 else end + 1
        elif ch == "[":
            i = _skip_class(pattern, i)
        elif ch == "(" and pattern.startswith("(?#", i):
            end = pattern.find(")", i)
            i = n if end < 0 else end + 1
        elif ch == "(":
            content, frame_verbose = _group_content(pattern, i, frame["verbose"])
            stack.append({"open": i, "content": content, "bars": [], "pending": [], "verbose": frame_verbose})
            i = content
        elif ch == "|":
            frame["bars"].append(i)
            i += 1
        elif ch == ")" and len(stack) > 1:
            stack.pop()
            bounds = [frame["content"] - 1, *frame["bars"], i]
            if frame["bars"]:
                alternatives = [pattern[a + 1:b] for a, b in zip(bounds, bounds[1:])]
                frame["pending"].append((alternatives, frame["verbose"]))
            end, hi = _read_quantifier(pattern, i + 1, stack[-1]["verbose"])
            if hi > 1:
                for alternatives, alt_verbose in frame["pending"]:
                    yield pattern[frame["open"]:end], alternatives, alt_verbose
            else:
                stack[-1]["pending"].extend(frame["pending"])
            i += 1
        else:
            i += 1


def _group_content(pattern: str, i: int, verbose: bool) -> tuple[int, bool]:
    """Where the content of the group opening at ``i`` starts, and whether it is in verbose mode."""
    if not pattern.startswith("(?", i):
        return i + 1, verbose
    for prefix in ("(?:", "(?=", "(?!", "(?>", "(?<=", "(?<!", "(?P=", "(?("):
        if pattern.startswith(prefix, i):
            return i + len(prefix), verbose
    if pattern.startswith("(?P<", i):
        end = pattern.find(">", i)
        return (end + 1 if end >= 0 else i + 4), verbose
    match = _FLAGS_GROUP.match(pattern, i)
    if match is None:
        return i + 2, verbose
    on, off, end = match.group(1), match.group(2) or "", match.group(3)
    inner = (verbose or "x" in on) and "x" not in off
    return (match.end() if end == ":" else match.end() - 1), inner


def _skip_class(pattern: str, i: int) -> int:
    """The index just after the character class opening at ``i``."""
    j = i + 1
    if pattern.startswith("^", j):
        j += 1
    if pattern.startswith("]", j):
        j += 1
    while j < len(pattern):
        if pattern[j] == "\\":
            j += 2
        elif pattern[j] == "]":
            return j + 1
        else:
            j += 1
    return len(pattern)


def _read_quantifier(pattern: str, i: int, verbose: bool) -> tuple[int, int]:
    """The end of the quantifier at ``i`` (or ``i``) and the most iterations it allows (1 without one)."""
    j = i
    if verbose:
        while j < len(pattern) and (pattern[j].isspace() or pattern[j] == "#"):
            if pattern[j] == "#":
                end = pattern.find("\n", j)
                j = len(pattern) if end < 0 else end + 1
            else:
                j += 1
    match = _QUANTIFIER.match(pattern, j)
    if match is None:
        return i, 1
    text = match.group(0)
    if text == "?":
        hi = 1
    elif text in "*+":
        hi = _MAXREPEAT
    else:
        lo, comma, top = match.groups()
        hi = int(top) if top else (_MAXREPEAT if comma else int(lo or 0))
    return match.end(), hi
