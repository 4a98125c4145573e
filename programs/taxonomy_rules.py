"""Taxonomy rules: what a bootstrapped label set must satisfy, and the pure operations on one.

Answer schemas that carry the limits, validation that states each problem as a sentence the LM
can act on, typed edits, and carrying a person's edits through an update. Nothing here calls an
LM.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Annotated, Literal

import pydantic

NONE_OF_THESE = "none_of_these"
MIN_DESCRIPTION_CHARS = 30  # a description says which texts belong; a small model otherwise repeats the name
# A name made only of these words says nothing about its texts ("customer_support", "general_questions").
GENERIC_WORDS = frozenset({"other", "others", "misc", "general", "generic", "various", "customer", "customers", "support",
                           "service", "services", "inquiry", "inquiries", "enquiry", "enquiries", "question", "questions",
                           "issue", "issues", "request", "requests", "feedback", "info", "information", "help", "message",
                           "messages", "text", "texts", "topic", "topics", "miscellaneous", "all", "everything", "else",
                           "need", "needs", "management", "sorting", "routing", "category", "categories"})
# Words a description may use besides the name's own without saying anything new.
FILLER_WORDS = frozenset({"texts", "text", "that", "which", "are", "is", "about", "messages", "message", "related", "to",
                          "the", "a", "an", "of", "and", "or", "with", "for", "this", "these", "label", "category", "any",
                          "in", "on", "regarding", "concerning", "all", "customer", "customers"})
JOINING_WORDS = frozenset({"and", "or", "of", "for", "the", "a", "an", "to", "with", "in", "on"})
CATCH_ALL = frozenset({"other", "others", "misc", "miscellaneous", "general", "generic", "none", "unknown", "various",
                       "uncategorized", "uncategorised", "unclassified", "catch_all", "everything_else", "rest", "n_a",
                       "na", "not_applicable", NONE_OF_THESE})



DESCRIPTION_HINT = "one sentence listing what the texts with this label ask or talk about"


def length_limits(constraints: Constraints) -> dict[str, int]:
    """The schema's maximum length of a name and of a description, wherever an answer writes one.

    The description's is one character over the rule: a grammar-constrained answer cut off there
    fails validation, and is retried.
    """
    return {"name": 16 * max(1, constraints.max_name_words), "description": constraints.max_description_chars + 1}


def label_fields(constraints: Constraints, top_level: bool = False, strict: bool = False) -> dict:
    """The name and description types, their JSON schema carrying the length limits.

    Names are plain words ("Order Tracking"), slugged afterwards: a small model forced into
    underscore names by a grammar tends to name labels after single texts. ``strict`` adds a
    pattern of at most ``max_name_words`` words (joining words included), for a last attempt after
    too-long names. ``top_level`` wraps each type in a root model, because DSPy keeps only the bare
    annotation of a top-level output field.
    """
    words = max(1, constraints.max_name_words)
    limits = length_limits(constraints)
    name_limits = {"minLength": 2, "maxLength": limits["name"]}
    if strict:
        name_limits["pattern"] = f"^[A-Za-z][A-Za-z0-9-]*( [A-Za-z][A-Za-z0-9-]*){{0,{words - 1}}}$"
    fields = {"name": (f"one to {words} plain words", name_limits),
              "description": (DESCRIPTION_HINT,
                              {"minLength": MIN_DESCRIPTION_CHARS, "maxLength": limits["description"]})}
    out = {}
    for field, (desc, limits) in fields.items():
        bounded = Annotated[str, pydantic.Field(description=desc, json_schema_extra=limits)]
        out[field] = pydantic.create_model(field.title(), __base__=pydantic.RootModel[bounded]) if top_level else bounded
    return out


def labels_type(constraints: Constraints):
    """A list of labels whose JSON schema carries the count and length limits.

    A grammar-constrained model (the embedded llama.cpp one) cannot break them; other models can,
    and ``validate_taxonomy`` catches that (the limits are schema hints only, never parse errors).
    A root model, because DSPy keeps only the bare annotation of a top-level field.
    """
    item = pydantic.create_model("Label", **{k: (v, ...) for k, v in label_fields(constraints).items()})

    class Labels(pydantic.RootModel[list[item]]):
        model_config = pydantic.ConfigDict(json_schema_extra={"minItems": constraints.min_labels,
                                                              "maxItems": constraints.max_labels})

    return Labels


EDIT_ACTIONS = {"add": 0, "change": 1, "merge": 2, "remove": 1}  # action -> how many current labels it acts on
RETRY_TEMPERATURE = 0.7  # a retried step samples (seeded by the attempt number) instead of decoding greedily
MAX_EDITS = 3  # per update or review answer: without a bound a small model fills its answer budget with edits


def edits_type(names: list[str], constraints: Constraints):
    """A list of at most MAX_EDITS edits whose ``labels`` can only name current labels (an enum in the schema)."""
    text = {field: Annotated[str, pydantic.Field(json_schema_extra={"maxLength": high})]  # empty: kept or not needed
            for field, high in length_limits(constraints).items()}
    item = pydantic.create_model(
        "Edit",
        action=(Literal[tuple(EDIT_ACTIONS)], ...),
        labels=(Annotated[list[Literal[tuple(names)]], pydantic.Field(json_schema_extra={"maxItems": 2})], ...),
        name=(text["name"], ...),
        description=(text["description"], ...))

    class Edits(pydantic.RootModel[list[item]]):
        model_config = pydantic.ConfigDict(json_schema_extra={"maxItems": MAX_EDITS})

    return Edits


def apply_edits(labels: list[dict], edits: list[dict]) -> tuple[list[dict], list[str], list[str]]:
    """The taxonomy after ``edits``, each problem with them, and each applied edit in words.

    ``add`` needs a name and description; ``change`` one label and a new name, description or both
    (empty keeps the old); ``merge`` two labels and the merged label's name and description, which
    takes the first one's place; ``remove`` one label. Labels no edit names stay as they are.

    >>> tax = [{"name": "refunds", "description": "Money back."}, {"name": "returns", "description": "Sending back."}]
    >>> new, problems, done = apply_edits(tax, [
    ...     {"action": "merge", "labels": ["refunds", "returns"], "name": "Refunds and Returns", "description": "Both."},
    ...     {"action": "add", "labels": [], "name": "Late Parcels", "description": "Parcels not there yet."},
    ...     {"action": "remove", "labels": ["refunds"], "name": "", "description": ""}])
    >>> [x["name"] for x in new], problems, done  # doctest: +NORMALIZE_WHITESPACE
    (['refunds_and_returns', 'late_parcels'],
     ['edit 3 (remove) names "refunds", which is not a label at that point'],
     ['merge refunds + returns -> refunds_and_returns', 'add late_parcels'])
    """
    out, problems, done = [dict(x) for x in labels], [], []
    if not isinstance(edits, (list, tuple)):
        return normalise(out), [f"the edits must be a list of objects, not {type(edits).__name__}"], done
    for i, edit in enumerate(edits, 1):
        if isinstance(edit, pydantic.BaseModel):
            edit = edit.model_dump()
        if not isinstance(edit, dict):
            problems.append(f"edit {i} must be an object with action, labels, name and description, not {type(edit).__name__}")
            continue
        action = str(edit.get("action") or "")
        given = edit.get("labels") or []
        given = [given] if isinstance(given, str) else given
        if not isinstance(given, (list, tuple)):
            problems.append(f"edit {i} ({action}) must list its current labels in `labels`, not a {type(given).__name__}")
            continue
        refs = [slug(str(r)) for r in given]
        name, description = slug(str(edit.get("name") or "")), " ".join(str(edit.get("description") or "").split())
        where = {x["name"]: j for j, x in enumerate(out)}
        if action not in EDIT_ACTIONS:
            problems.append(f'edit {i} has action "{action}"; use one of {", ".join(EDIT_ACTIONS)}')
            continue
        if len(refs) != EDIT_ACTIONS[action] or len(set(refs)) != len(refs):
            problems.append(f"edit {i} ({action}) must list {EDIT_ACTIONS[action]} distinct current label(s) in `labels`, "
                            f"not {len(refs)}")
            continue
        missing = [r for r in refs if r not in where]
        if missing:
            problems.append(f'edit {i} ({action}) names "{missing[0]}", which is not a label at that point')
            continue
        if action in ("add", "merge") and not (name and description):
            problems.append(f"edit {i} ({action}) needs the new label's name and description")
            continue
        if action == "add":
            out.append({"name": name, "description": description})
            done.append(f"add {name}")
        elif action == "change":
            if not (name or description):
                problems.append(f'edit {i} (change) gives neither a new name nor a new description for "{refs[0]}"')
                continue
            old = out[where[refs[0]]]
            out[where[refs[0]]] = {"name": name or old["name"], "description": description or old["description"]}
            done.append(f"change {refs[0]}" + (f" -> {name}" if name and name != refs[0] else "")
                        + (" (description)" if description else ""))
        elif action == "merge":
            out[where[refs[0]]] = {"name": name, "description": description}
            del out[where[refs[1]]]
            done.append(f"merge {refs[0]} + {refs[1]} -> {name}")
        else:
            del out[where[refs[0]]]
            done.append(f"remove {refs[0]}")
    return normalise(out), problems, done


@dataclass(frozen=True)
class Constraints:
    """What a taxonomy must satisfy; stated in every prompt and checked on every answer."""

    max_labels: int = 8
    min_labels: int = 2
    max_name_words: int = 3
    max_description_chars: int = 200
    exclusive: bool = True
    allow_catch_all: bool = False

    def text(self, single: bool = False) -> str:
        """The rules as a prompt states them; ``single`` for one label at a time (no count, no overlap rules)."""
        rules = [f"Each name: one to {self.max_name_words} plain words saying what the texts are about.",
                 f"Each description: one sentence of at most {self.max_description_chars} characters listing the kinds "
                 f"of texts that belong."]
        if not single:
            rules = [f"Between {self.min_labels} and {self.max_labels} labels."] + rules + ["Label names must be distinct."]
        if self.exclusive and not single:
            rules.append("Labels must be mutually exclusive: every text fits exactly one label.")
        if not self.allow_catch_all:
            rules.append('No catch-all label such as "other", "misc" or "general".')
        return "\n".join(f"- {r}" for r in rules)


def slug(name: str) -> str:
    """A label name as the rest of the tool uses it: lowercase words joined by underscores.

    >>> slug("  Order Tracking / Delivery "), slug("LoginIssues")
    ('order_tracking_delivery', 'login_issues')
    """
    return "_".join(re.findall(r"[a-z0-9]+", re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower()))


def name_words(name: str) -> int:
    """Words in a slugged name, not counting joining words.

    >>> name_words("refunds_and_returns"), name_words("late_lost_or_damaged_parcels")
    (2, 4)
    """
    return sum(1 for w in name.split("_") if w not in JOINING_WORDS)


def normalise(labels) -> list[dict]:
    """Plain ``{name, description}`` dicts with slugged names and trimmed descriptions.

    A description that starts with a label name ("late_parcels: ...", as a small model copies it from
    the taxonomy it was shown) loses that prefix.

    >>> normalise([{"name": "Late Parcels", "description": " late_parcels:  Parcels that have not arrived."}])
    [{'name': 'late_parcels', 'description': 'Parcels that have not arrived.'}]
    """
    out = []
    if labels is None or isinstance(labels, (str, bytes, dict)) or not hasattr(labels, "__iter__"):
        labels = []  # a malformed answer: no labels, which validation then reports
    for label in labels:
        if isinstance(label, pydantic.BaseModel):
            item = label.model_dump()
        elif isinstance(label, dict):
            item = label
        else:  # a bare name, or something that is no label at all
            item = {"name": label if isinstance(label, str) else ""}
        name, description = slug(str(item.get("name") or "")), " ".join(str(item.get("description") or "").split())
        head, sep, rest = description.partition(":")
        if sep and rest.strip() and (slug(head) == name or re.fullmatch(r"[a-z0-9]+(_[a-z0-9]+)+", head)):
            description = rest.strip()
        out.append({"name": name, "description": description})
    return out


def validate_taxonomy(labels: list[dict], constraints: Constraints) -> list[str]:
    """Every way ``labels`` breaks ``constraints``, as sentences the LM can act on (empty when valid).

    >>> c, d = Constraints(max_labels=2), "Texts about one kind of request."
    >>> validate_taxonomy([{"name": "billing", "description": d}, {"name": "Billing ", "description": d},
    ...                    {"name": "other", "description": d}], c)  # doctest: +NORMALIZE_WHITESPACE
    ['3 labels, but at most 2 are allowed: merge the closest ones',
     'duplicate label name "billing" (labels 1 and 2)',
     'label "other" is a catch-all; name what its texts have in common or drop it']
    """
    problems = []
    if len(labels) < constraints.min_labels:
        problems.append(f"{len(labels)} label(s), but at least {constraints.min_labels} are needed")
    if len(labels) > constraints.max_labels:
        problems.append(f"{len(labels)} labels, but at most {constraints.max_labels} are allowed: merge the closest ones")
    seen: dict[str, int] = {}
    for i, label in enumerate(labels, 1):
        label = label if isinstance(label, dict) else {}
        name, desc = slug(str(label.get("name") or "")), str(label.get("description") or "").strip()
        if not name:
            problems.append(f"label {i} has an empty name")
            continue
        if name in seen:
            problems.append(f'duplicate label name "{name}" (labels {seen[name]} and {i})')
            continue
        seen[name] = i
        if name_words(name) > constraints.max_name_words:
            problems.append(f'name "{name}" has {name_words(name)} words; at most {constraints.max_name_words}')
        if not desc:
            problems.append(f'label "{name}" has an empty description')
        elif len(desc) < MIN_DESCRIPTION_CHARS:
            problems.append(f'description of "{name}" is too short; say in one sentence which texts belong')
        elif set(slug(desc).split("_")) <= FILLER_WORDS | set(name.split("_")) | {w.rstrip("s") for w in name.split("_")}:
            problems.append(f'description of "{name}" only repeats the name; list what these texts ask or talk about')
        elif len(desc) > constraints.max_description_chars:
            problems.append(f'description of "{name}" has {len(desc)} characters; at most {constraints.max_description_chars}')
        if not constraints.allow_catch_all and (name in CATCH_ALL or set(name.split("_")) - JOINING_WORDS <= GENERIC_WORDS):
            problems.append(f'label "{name}" is a catch-all; name what its texts have in common or drop it')
    return problems


def format_taxonomy(labels: list[dict]) -> str:
    """The labels as the update and review steps see them: one JSON object per line, names in plain words.

    Shown as "name: description" lines, a small model copies the name into its new description; shown
    as slugs, it shortens them against the plain-words rule.

    >>> print(format_taxonomy([{"name": "late_parcels", "description": "Parcels that have not arrived."}]))
    {"name": "late parcels", "description": "Parcels that have not arrived."}
    """
    return "\n".join(json.dumps({"name": x["name"].replace("_", " "), "description": x["description"]}, ensure_ascii=False)
                     for x in labels)


def format_summaries(summaries: list[str]) -> str:
    return "\n".join(f"{i}. {s}" for i, s in enumerate(summaries, 1))


def copied_summary(label: dict, summaries: str, overlap: float = 0.6) -> list[str]:
    r"""A problem when a group's description restates one of its summaries instead of the whole group.

    >>> copied_summary({"name": "refunds", "description": "Customer asks when the refund for order 4411 comes."},
    ...                "- Customer asks when the refund for order 4411 comes\n- Money back for a broken kettle")
    ['description of "refunds" restates one text; list the kinds of texts the whole group covers']
    >>> copied_summary({"name": "refunds", "description": "Refunds for returned or cancelled orders."}, "- a refund")
    []
    """
    words = set(re.findall(r"[a-z0-9]+", str(label.get("description") or "").lower())) - FILLER_WORDS
    for line in str(summaries or "").splitlines():
        other = set(re.findall(r"[a-z0-9]+", line.lower())) - FILLER_WORDS
        if words and other and len(words & other) / len(words | other) >= overlap:
            return [f'description of "{label.get("name")}" restates one text; list the kinds of texts the whole group covers']
    return []



def carry_edits(machine_before: list[dict] | None, current: list[dict],
                machine_after: list[dict]) -> tuple[list[dict], list[str]]:
    """Keep a person's edits through an update.

    ``machine_before`` is what bootstrap last wrote, ``current`` the file as the person left it and
    ``machine_after`` the model's revision. Labels the person added or changed come back verbatim
    (replacing a model label of the same name), labels the person deleted stay deleted. Without
    ``machine_before`` every current label counts as the person's. Returns the labels and notes.

    >>> before = [{"name": "a", "description": "x"}, {"name": "b", "description": "y"}]
    >>> person = [{"name": "a", "description": "mine"}, {"name": "c", "description": "z"}]
    >>> after = [{"name": "a", "description": "new"}, {"name": "b", "description": "y"}, {"name": "d", "description": "w"}]
    >>> [x["name"] + "=" + x["description"] for x in carry_edits(before, person, after)[0]]
    ['a=mine', 'd=w', 'c=z']
    """
    before = {(x["name"], x["description"]) for x in machine_before or []}
    owned = [x for x in current if (x["name"], x["description"]) not in before]
    deleted = {x["name"] for x in machine_before or []} - {x["name"] for x in current}
    owned_names = {x["name"] for x in owned}
    out, notes = [], []
    for label in machine_after:
        if label["name"] in deleted:
            notes.append(f'kept "{label["name"]}" deleted, as you left it')
        elif label["name"] in owned_names:
            out.append(next(x for x in owned if x["name"] == label["name"]))
            owned_names.discard(label["name"])
        else:
            out.append(label)
    for label in owned:
        if label["name"] in owned_names:
            out.append(label)
            notes.append(f'kept your label "{label["name"]}", which the model had dropped or renamed')
    return out, notes
