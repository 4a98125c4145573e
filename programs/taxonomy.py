"""Taxonomy bootstrapping programs (TnT-LLM style): summarise, generate, update, review, assign.

Each step's answer is typed (a JSON schema, so the embedded model's grammar constrains it), then
checked by ``validate_taxonomy``; a malformed or over-limit answer is asked again with the
problems stated, a bounded number of times, before ``TaxonomyError`` names the step and the
problems. Nothing here reads or writes files: the flow caches and stores the answers.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, replace
from typing import Annotated, Literal

import dspy
import pydantic
from dspy.utils.exceptions import AdapterParseError

from programs.choice import CompactJSONAdapter, ClosedChoice
from programs.signatures import classify_signature

# Bump when a prompt changes in a way the signature text does not show; part of every cache key.
PROMPT_VERSION = "taxonomy-1"
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


class TaxonomyError(RuntimeError):
    """A step's answers stayed invalid after every attempt; the message names the step and the problems."""

    def __init__(self, step: str, problems: list[str], attempts: int):
        self.step, self.problems, self.attempts = step, problems, attempts
        super().__init__(f"taxonomy step {step!r} gave no valid answer in {attempts} attempt(s); "
                         f"last problems: {'; '.join(problems)}")


class Label(pydantic.BaseModel):
    name: str = pydantic.Field(description="a few plain words")
    description: str = pydantic.Field(description="one sentence listing what the texts with this label ask or talk about")


def length_limits(constraints: "Constraints") -> dict[str, int]:
    """The schema's maximum length of a name and of a description, wherever an answer writes one.

    The description's is one character over the rule: a grammar-constrained answer cut off there
    fails validation, and is retried.
    """
    return {"name": 16 * max(1, constraints.max_name_words), "description": constraints.max_description_chars + 1}


def label_fields(constraints: "Constraints", top_level: bool = False, strict: bool = False) -> dict:
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
              "description": (Label.model_fields["description"].description,
                              {"minLength": MIN_DESCRIPTION_CHARS, "maxLength": limits["description"]})}
    out = {}
    for field, (desc, limits) in fields.items():
        bounded = Annotated[str, pydantic.Field(description=desc, json_schema_extra=limits)]
        out[field] = pydantic.create_model(field.title(), __base__=pydantic.RootModel[bounded]) if top_level else bounded
    return out


def labels_type(constraints: "Constraints"):
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


def edits_type(names: list[str], constraints: "Constraints"):
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
    for i, edit in enumerate(edits, 1):
        action = str(edit.get("action") or "")
        refs = [slug(str(r)) for r in edit.get("labels") or []]
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
    for label in labels:
        item = label.model_dump() if isinstance(label, pydantic.BaseModel) else dict(label)
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


@dataclass
class Group:
    """Sampled records that embed close together: what the name step sees of one would-be label."""

    size: int
    keywords: list[str]  # words typical of these records against the other groups, most typical first
    summaries: list[str]  # the summaries closest to the group's centre

    def inputs(self) -> dict:
        return {"keywords": ", ".join(self.keywords), "summaries": "\n".join(f"- {s}" for s in self.summaries)}


def distinctive_words(docs: list[str], n: int) -> list[list[str]]:
    """The ``n`` words most typical of each document against the others (class-based TF-IDF, as in BERTopic).

    Words every document uses are left out (with three documents or more).

    >>> distinctive_words(["refund my card refund", "parcel late parcel my", "password reset my login"], 2)
    [['refund', 'card'], ['parcel', 'late'], ['login', 'password']]
    """
    import numpy as np
    from sklearn.feature_extraction.text import CountVectorizer

    counts = CountVectorizer(stop_words="english", token_pattern=r"(?u)\b[^\W\d_]{2,}\b")
    try:
        tf = counts.fit_transform(docs).toarray().astype(float)
    except ValueError:  # only stop words
        return [[] for _ in docs]
    vocab = counts.get_feature_names_out()
    weight = tf / np.maximum(tf.sum(axis=1, keepdims=True), 1) * np.log(1 + tf.sum() / len(docs) / np.maximum(tf.sum(axis=0), 1))
    if len(docs) > 2:
        weight[:, (tf > 0).all(axis=0)] = 0  # a word every group uses ("customer") is typical of none
    return [[str(vocab[j]) for j in np.argsort(-row, kind="stable")[:n] if row[j] > 0] for row in weight]


def group_records(summaries: list[str], texts: list[str], n_groups: int, per_group: int = 5, n_keywords: int = 8,
                  seed: int = 0, by: str = "text") -> list[Group]:
    """Cluster the sampled records by sentence embeddings (k-means), largest group first.

    A small LM names a group far better than it invents a label set: shown one group's typical
    words and summaries at a time, it says what they share instead of naming labels after single
    texts. ``by`` says what is embedded: the ``text`` (default; on the example project's short
    messages these clusters match the gold classes better than those of the summaries) or the
    ``summary`` (for long texts, which the embedder truncates). The keywords come from the
    summaries and the texts together.
    """
    import numpy as np
    from sklearn.cluster import KMeans

    from programs.embeddings import embed

    if by not in ("text", "summary"):
        raise ValueError(f"group records by 'text' or 'summary', not {by!r}")
    k = max(1, min(n_groups, len(summaries)))
    vectors = embed(texts if by == "text" else summaries)
    ids = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(vectors) if k > 1 else np.zeros(len(summaries), int)
    order = sorted(set(ids.tolist()), key=lambda g: (-(ids == g).sum(), g))
    members = [np.flatnonzero(ids == g) for g in order]
    keywords = distinctive_words([" ".join(f"{summaries[i]} {texts[i]}" for i in m) for m in members], n_keywords)
    groups = []
    for m, words in zip(members, keywords):
        closest = m[np.argsort(-(vectors[m] @ vectors[m].mean(axis=0)), kind="stable")][:per_group]
        groups.append(Group(len(m), words, [summaries[i] for i in closest]))
    return groups


class SummariseText(dspy.Signature):
    """In one short sentence, say what the writer wants or reports (their request or problem) as it matters for the use
    case, leaving out names of products, places and people."""

    text: str = dspy.InputField()
    summary: str = dspy.OutputField(desc="one sentence")


class NameGroup(dspy.Signature):
    """Name one category of a taxonomy. The texts of this category share the keywords given, and the summaries show some
    of them. The name is a few plain words for what these texts are about in general (use the keywords; not a product,
    brand or single detail). The description is one sentence listing the kinds of texts it covers. Follow every rule."""

    rules: str = dspy.InputField()
    keywords: str = dspy.InputField(desc="words typical of this category's texts, most typical first")
    summaries: str = dspy.InputField(desc="summaries of some of its texts")
    problems: str = dspy.InputField(desc="problems with your previous answer, to fix now; 'none' on the first try")
    name: str = dspy.OutputField()
    description: str = dspy.OutputField()


class GenerateTaxonomy(dspy.Signature):
    """Propose a label set (taxonomy) for the use case from the summaries of a sample of texts: group the summaries into a
    few broad categories that serve the use case and name each one by what its texts have in common, never by a single
    product, brand or detail. Every label must fit several summaries. Follow every rule."""

    use_case: str = dspy.InputField()
    rules: str = dspy.InputField()
    summaries: str = dspy.InputField(desc="numbered summaries of sampled texts")
    problems: str = dspy.InputField(desc="problems with your previous answer, to fix now; 'none' on the first try")
    labels: list[Label] = dspy.OutputField()


EDITS_DESC = (f"at most {MAX_EDITS} edits, possibly none; each: action (add | change | merge | remove), labels (the current label "
              "names it acts on: none to add, one to change or remove, two to merge), name and description (of the new, "
              "changed or merged label; empty when kept or not needed)")


class UpdateTaxonomy(dspy.Signature):
    """Check the current taxonomy against new summaries: rate how well it fits them (1 = poorly, 5 = very well), then list
    the edits it needs, if any: add a label for texts no label fits, merge two labels that overlap, change a label's name
    or description to fit its texts better, remove a label that fits nothing. Labels no edit names stay as they are.
    Follow every rule."""

    use_case: str = dspy.InputField()
    rules: str = dspy.InputField()
    taxonomy: str = dspy.InputField(desc="the current labels, one JSON object per line")
    summaries: str = dspy.InputField(desc="numbered summaries of new sampled texts")
    problems: str = dspy.InputField(desc="problems with your previous answer, to fix now; 'none' on the first try")
    rating: int = dspy.OutputField(desc="1 to 5")
    edits: list = dspy.OutputField(desc=EDITS_DESC)


class ReviewTaxonomy(dspy.Signature):
    """Review the taxonomy a last time for the use case and list the edits it needs, if any: change a name to be clear or a
    description to be precise, merge two labels that overlap so that labels are mutually exclusive. Labels no edit names
    stay as they are. Follow every rule."""

    use_case: str = dspy.InputField()
    rules: str = dspy.InputField()
    taxonomy: str = dspy.InputField(desc="the labels, one JSON object per line")
    problems: str = dspy.InputField(desc="problems with your previous answer, to fix now; 'none' on the first try")
    edits: list = dspy.OutputField(desc=EDITS_DESC)


STEPS = {"name": NameGroup, "generate": GenerateTaxonomy, "update": UpdateTaxonomy, "review": ReviewTaxonomy}


def prompt_version(step: str, constraints: Constraints | None = None) -> str:
    """A hash of what shapes a step's answers besides its inputs: signature text, answer schema, PROMPT_VERSION."""
    sig = SummariseText if step == "summarise" else STEPS.get(step)
    blob = [PROMPT_VERSION, step]
    if sig is not None:
        blob += [sig.instructions, {k: str(v.json_schema_extra) for k, v in sig.fields.items()}]
    if constraints is not None:
        blob += [constraints.text(single=step == "name"), labels_type(constraints).model_json_schema(),
                 MIN_DESCRIPTION_CHARS, sorted(GENERIC_WORDS), sorted(JOINING_WORDS), MAX_EDITS, list(EDIT_ACTIONS),
                 RETRY_TEMPERATURE, "copied-summary check" if step == "name" else None]
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class StepResult:
    """A validated answer: the labels (and for update and review the edits made, for update its rating), and its cost."""

    labels: list[dict]
    calls: int
    rating: int | None = None
    edits: list[str] | None = None
    retried_for: list[str] | None = None  # problems of earlier attempts

    def to_dict(self) -> dict:
        return asdict(self)


class TaxonomyStep(dspy.Module):
    """One of name / generate / update / review, with validation and bounded retries.

    ``name`` answers one label for one group of records, ``generate`` a whole taxonomy, ``update``
    (with a rating) and ``review`` a few edits to ``current``, applied by ``apply_edits``: a label
    no edit names cannot be garbled on the way, and the answer is short.

    Args:
        step: ``name``, ``generate``, ``update`` or ``review``.
        constraints: what every answer must satisfy.
        max_attempts: LM calls at most, the first included.
        max_tokens: the answer budget per call.
        current: the taxonomy an update or review edits.
    """

    def __init__(self, step: str, constraints: Constraints, max_attempts: int = 3, max_tokens: int | None = None,
                 current: list[dict] | None = None):
        super().__init__()
        self.step = step
        self.single = step == "name"
        self.current = current
        if step in ("update", "review") and not current:
            raise ValueError(f"the {step} step needs the current taxonomy")
        self.constraints = replace(constraints, min_labels=1, max_labels=1) if self.single else constraints
        self.max_attempts = max(1, max_attempts)
        signature = STEPS[step]
        self.strict = None  # the name step's last attempt after too-long names: a word-count pattern in the schema
        if self.single:
            strict = signature
            for field, type_ in label_fields(constraints, top_level=True).items():
                signature = signature.with_updated_fields(field, type_=type_)
            for field, type_ in label_fields(constraints, top_level=True, strict=True).items():
                strict = strict.with_updated_fields(field, type_=type_)
            self.strict = dspy.Predict(strict)
            budget = 200
        elif current is not None:
            signature = signature.with_updated_fields("edits", type_=edits_type([x["name"] for x in current], constraints))
            budget = 120 + 90 * MAX_EDITS
        else:
            signature = signature.with_updated_fields("labels", type_=labels_type(constraints))
            budget = 120 + 80 * constraints.max_labels
        self.max_tokens = max_tokens or budget
        self.predict = dspy.Predict(signature)

    def forward(self, **inputs) -> StepResult:
        if self.current is not None:
            inputs["taxonomy"] = format_taxonomy(self.current)
        problems, history, labels, fallback = ["none"], [], [], None
        for attempt in range(1, self.max_attempts + 1):
            config = {"max_tokens": self.max_tokens}
            if attempt > 1:  # at temperature 0 a small model tends to repeat its rejected answer word for word
                config |= {"temperature": RETRY_TEMPERATURE, "seed": attempt}
            last = attempt == self.max_attempts > 1
            predict = self.strict if self.strict and last and any(" words; at most " in p for p in history) else self.predict
            try:
                with dspy.context(adapter=CompactJSONAdapter()):
                    pred = predict(**inputs, rules=self.constraints.text(single=self.single),
                                   problems=_problem_text(problems), config=config)
            except AdapterParseError as exc:
                problems = [f"the answer was not the requested JSON ({_short(exc.lm_response)}); "
                            f"answer with a JSON object with the field(s) {list(STEPS[self.step].output_fields)}"]
                history += problems
                continue
            done, soft = None, []  # soft problems are sent back, but an answer with only those is kept as a fallback
            if self.single:
                labels = normalise([{k: getattr(pred[k], "root", pred[k]) for k in ("name", "description")}])
                soft = copied_summary(labels[0], inputs.get("summaries", ""))
                problems = validate_taxonomy(labels, self.constraints)
            elif self.current is not None:
                edits = [e.model_dump() if isinstance(e, pydantic.BaseModel) else dict(e)
                         for e in getattr(pred["edits"], "root", pred["edits"]) or []]
                labels, problems, done = apply_edits(self.current, edits)
                problems += validate_taxonomy(labels, self.constraints) if not problems else []
            else:
                labels = pred["labels"]  # not pred.labels: that is a Prediction method
                labels = normalise(getattr(labels, "root", labels) or [])
                problems = validate_taxonomy(labels, self.constraints)
            if not problems and not soft:
                result = StepResult(labels, attempt, edits=done, retried_for=history or None)
                if self.step == "update":
                    result.rating = min(5, max(1, int(pred["rating"] or 1)))
                return result
            if not problems:
                fallback = labels
            problems = problems + soft
            history += problems
        if fallback is not None:
            return StepResult(fallback, self.max_attempts, retried_for=history)
        repaired = _drop_repeats(labels) if problems and all(p.startswith("duplicate label name") for p in problems) else None
        if repaired is not None and self.current is None and not validate_taxonomy(repaired, self.constraints):
            # a small model that loops repeats whole labels; after the last attempt keep each first one
            return StepResult(repaired, self.max_attempts, retried_for=history + ["repeated labels dropped"])
        raise TaxonomyError(self.step, problems, self.max_attempts)


def _drop_repeats(labels: list[dict]) -> list[dict]:
    seen, out = set(), []
    for label in labels:
        if label["name"] not in seen:
            seen.add(label["name"])
            out.append(label)
    return out


def _problem_text(problems: list[str]) -> str:
    return "none" if problems == ["none"] else "\n".join(f"- {p}" for p in problems)


def copied_summary(label: dict, summaries: str, overlap: float = 0.6) -> list[str]:
    r"""A problem when a group's description restates one of its summaries instead of the whole group.

    >>> copied_summary({"name": "refunds", "description": "Customer asks when the refund for order 4411 comes."},
    ...                "- Customer asks when the refund for order 4411 comes\n- Money back for a broken kettle")
    ['description of "refunds" restates one text; list the kinds of texts the whole group covers']
    >>> copied_summary({"name": "refunds", "description": "Refunds for returned or cancelled orders."}, "- a refund")
    []
    """
    words = set(re.findall(r"[a-z0-9]+", label["description"].lower())) - FILLER_WORDS
    for line in summaries.splitlines():
        other = set(re.findall(r"[a-z0-9]+", line.lower())) - FILLER_WORDS
        if words and other and len(words & other) / len(words | other) >= overlap:
            return [f'description of "{label["name"]}" restates one text; list the kinds of texts the whole group covers']
    return []


def _short(text, n: int = 120) -> str:
    text = " ".join(str(text or "").split())
    return text if len(text) <= n else text[:n] + "..."


class Summariser(dspy.Module):
    """One short summary per text; an unparseable answer falls back to the text's first words."""

    def __init__(self, use_case: str, max_words: int = 25, max_attempts: int = 2):
        super().__init__()
        self.use_case = use_case
        self.max_words = max_words
        self.max_attempts = max(1, max_attempts)
        signature = SummariseText.with_instructions(f"{SummariseText.instructions}\n\nUse case: {use_case}")
        self.predict = dspy.Predict(signature.with_updated_fields("summary", desc=f"one sentence, at most {max_words} words"))

    def forward(self, text: str) -> dspy.Prediction:
        for attempt in range(1, self.max_attempts + 1):
            try:
                with dspy.context(adapter=CompactJSONAdapter()):
                    pred = self.predict(text=text, config={"max_tokens": 3 * self.max_words + 24})
            except AdapterParseError:
                continue
            words = str(pred.summary or "").split()
            if words:
                return dspy.Prediction(summary=" ".join(words[: self.max_words]), calls=attempt, ok=True)
        return dspy.Prediction(summary=" ".join(text.split()[: self.max_words]), calls=self.max_attempts, ok=False)


def assignment_program(labels: list[dict]) -> ClosedChoice:
    """Closed choice over the labels plus an explicit ``none_of_these`` (the coverage check)."""
    names = [x["name"] for x in labels] + [NONE_OF_THESE]
    descriptions = [x["description"] for x in labels] + ["None of the labels above fits the text."]
    return ClosedChoice(classify_signature(names, descriptions), "label", names)


def carry_edits(machine_before: list[dict] | None, current: list[dict], machine_after: list[dict]) -> tuple[list[dict], list[str]]:
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
