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
from dataclasses import asdict, dataclass
from typing import Annotated

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
                           "messages", "text", "texts", "topic", "topics", "miscellaneous", "all", "everything", "else"})
# Words a description may use besides the name's own without saying anything new.
FILLER_WORDS = frozenset({"texts", "text", "that", "which", "are", "is", "about", "messages", "message", "related", "to",
                          "the", "a", "an", "of", "and", "or", "with", "for", "this", "these", "label", "category", "any",
                          "in", "on", "regarding", "concerning", "all", "customer", "customers"})
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
    name: str = pydantic.Field(description="a short lowercase name, words joined by underscores")
    description: str = pydantic.Field(description="one sentence listing what the texts with this label ask or talk about")


def labels_type(constraints: "Constraints"):
    """A list of labels whose JSON schema carries the count and name-shape limits.

    A grammar-constrained model (the embedded llama.cpp one) cannot break them; other models can,
    and ``validate_taxonomy`` catches that (the limits are schema hints only, never parse errors).
    A root model, because DSPy keeps only the bare annotation of a top-level field.
    """
    words = max(1, constraints.max_name_words)
    name = Annotated[str, pydantic.Field(description=Label.model_fields["name"].description,
                                         json_schema_extra={"pattern": f"^[a-z]+(_[a-z0-9]+){{0,{words - 1}}}$"})]
    description = Annotated[str, pydantic.Field(description=Label.model_fields["description"].description,
                                                json_schema_extra={"minLength": MIN_DESCRIPTION_CHARS,
                                                                   "maxLength": constraints.max_description_chars})]
    item = pydantic.create_model("Label", name=(name, ...), description=(description, ...))

    class Labels(pydantic.RootModel[list[item]]):
        model_config = pydantic.ConfigDict(json_schema_extra={"minItems": constraints.min_labels,
                                                              "maxItems": constraints.max_labels})

    return Labels


class Suggestions(pydantic.RootModel[list[Annotated[str, pydantic.Field(json_schema_extra={"maxLength": 120})]]]):
    """At most 3 short edit suggestions: without a bound a small model can fill its whole answer budget with them."""

    model_config = pydantic.ConfigDict(json_schema_extra={"maxItems": 3})


@dataclass(frozen=True)
class Constraints:
    """What a taxonomy must satisfy; stated in every prompt and checked on every answer."""

    max_labels: int = 8
    min_labels: int = 2
    max_name_words: int = 3
    max_description_chars: int = 200
    exclusive: bool = True
    allow_catch_all: bool = False

    def text(self) -> str:
        rules = [f"Between {self.min_labels} and {self.max_labels} labels.",
                 f"Each name: at most {self.max_name_words} words, lowercase, words joined by underscores.",
                 f"Each description: one sentence of at most {self.max_description_chars} characters saying which texts belong.",
                 "Label names must be distinct."]
        if self.exclusive:
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


def normalise(labels) -> list[dict]:
    """Plain ``{name, description}`` dicts with slugged names and trimmed descriptions."""
    out = []
    for label in labels:
        item = label.model_dump() if isinstance(label, pydantic.BaseModel) else dict(label)
        out.append({"name": slug(str(item.get("name") or "")), "description": " ".join(str(item.get("description") or "").split())})
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
        if len(name.split("_")) > constraints.max_name_words:
            problems.append(f'name "{name}" has {len(name.split("_"))} words; at most {constraints.max_name_words}')
        if not desc:
            problems.append(f'label "{name}" has an empty description')
        elif len(desc) < MIN_DESCRIPTION_CHARS:
            problems.append(f'description of "{name}" is too short; say in one sentence which texts belong')
        elif set(slug(desc).split("_")) <= FILLER_WORDS | set(name.split("_")) | {w.rstrip("s") for w in name.split("_")}:
            problems.append(f'description of "{name}" only repeats the name; list what these texts ask or talk about')
        elif len(desc) > constraints.max_description_chars:
            problems.append(f'description of "{name}" has {len(desc)} characters; at most {constraints.max_description_chars}')
        if not constraints.allow_catch_all and (name in CATCH_ALL or set(name.split("_")) <= GENERIC_WORDS):
            problems.append(f'label "{name}" is a catch-all; name what its texts have in common or drop it')
    return problems


def format_taxonomy(labels: list[dict]) -> str:
    return "\n".join(f"- {x['name']}: {x['description']}" for x in labels)


def format_summaries(summaries: list[str]) -> str:
    return "\n".join(f"{i}. {s}" for i, s in enumerate(summaries, 1))


def group_summaries(summaries: list[str], n_groups: int, per_group: int = 4) -> list[list[str]]:
    """Cluster summaries by sentence-embedding similarity (average-linkage, cosine), largest group first.

    A small LM names groups far better than it invents them: shown one group per intended label,
    it describes what each group shares instead of naming labels after single texts. Each group
    keeps at most ``per_group`` summaries, those closest to its centre.
    """
    import numpy as np
    from sklearn.cluster import AgglomerativeClustering

    from programs.embeddings import embed

    if len(summaries) <= n_groups:
        return [[s] for s in summaries]
    vectors = embed(summaries)
    ids = AgglomerativeClustering(n_clusters=n_groups, metric="cosine", linkage="average").fit_predict(vectors)
    groups = []
    for g in sorted(set(ids.tolist()), key=lambda g: -(ids == g).sum()):
        members = np.flatnonzero(ids == g)
        centre = vectors[members].mean(axis=0)
        closest = members[np.argsort(-(vectors[members] @ centre))][:per_group]
        groups.append([summaries[i] for i in closest])
    return groups


def format_groups(groups: list[list[str]]) -> str:
    """Grouped summaries for the generate step, with the instruction to name what each group shares.

    >>> print(format_groups([["a refund", "money back"], ["late parcel"]]))
    The summaries are grouped by similarity. Propose one label per group, named after what its summaries share (merge groups with the same meaning; skip a group of one odd text).
    Group 1 (2 summaries): a refund | money back
    Group 2 (1 summaries): late parcel
    """
    head = ("The summaries are grouped by similarity. Propose one label per group, named after what its summaries share "
            "(merge groups with the same meaning; skip a group of one odd text).")
    return "\n".join([head] + [f"Group {i} ({len(g)} summaries): " + " | ".join(g) for i, g in enumerate(groups, 1)])


class SummariseText(dspy.Signature):
    """In one short sentence, say what the writer wants or reports (their request or problem) as it matters for the use
    case, leaving out names of products, places and people."""

    text: str = dspy.InputField()
    summary: str = dspy.OutputField(desc="one sentence")


class GenerateTaxonomy(dspy.Signature):
    """Propose a label set (taxonomy) for the use case from the summaries of a sample of texts: group the summaries into a
    few broad categories that serve the use case and name each one by what its texts have in common, never by a single
    product, brand or detail. Every label must fit several summaries. Follow every rule."""

    use_case: str = dspy.InputField()
    rules: str = dspy.InputField()
    summaries: str = dspy.InputField(desc="numbered summaries of sampled texts")
    problems: str = dspy.InputField(desc="problems with your previous answer, to fix now; 'none' on the first try")
    labels: list[Label] = dspy.OutputField()


class UpdateTaxonomy(dspy.Signature):
    """Check the current taxonomy against new summaries: rate how well it fits them (1 = poorly, 5 = very well), suggest
    edits (add a missing label, merge overlapping ones, split a broad one, sharpen a description), then give the revised
    taxonomy. Keep labels that still fit unchanged. Follow every rule."""

    use_case: str = dspy.InputField()
    rules: str = dspy.InputField()
    taxonomy: str = dspy.InputField(desc="the current labels, one per line: name: description")
    summaries: str = dspy.InputField(desc="numbered summaries of new sampled texts")
    problems: str = dspy.InputField(desc="problems with your previous answer, to fix now; 'none' on the first try")
    rating: int = dspy.OutputField(desc="1 to 5")
    suggestions: Suggestions = dspy.OutputField(desc="up to 3 short edit suggestions, possibly none")
    labels: list[Label] = dspy.OutputField(desc="the revised taxonomy")


class ReviewTaxonomy(dspy.Signature):
    """Review the taxonomy a last time for the use case: make names clear, descriptions precise, and labels mutually
    exclusive (merge any two that overlap). Change nothing that is already good. Follow every rule."""

    use_case: str = dspy.InputField()
    rules: str = dspy.InputField()
    taxonomy: str = dspy.InputField(desc="the labels, one per line: name: description")
    problems: str = dspy.InputField(desc="problems with your previous answer, to fix now; 'none' on the first try")
    labels: list[Label] = dspy.OutputField(desc="the reviewed taxonomy")


STEPS = {"generate": GenerateTaxonomy, "update": UpdateTaxonomy, "review": ReviewTaxonomy}


def prompt_version(step: str, constraints: Constraints | None = None) -> str:
    """A hash of what shapes a step's answers besides its inputs: signature text, answer schema, PROMPT_VERSION."""
    sig = SummariseText if step == "summarise" else STEPS.get(step)
    blob = [PROMPT_VERSION, step]
    if sig is not None:
        blob += [sig.instructions, {k: str(v.json_schema_extra) for k, v in sig.fields.items()}]
    if constraints is not None:
        blob += [constraints.text(), labels_type(constraints).model_json_schema(), MIN_DESCRIPTION_CHARS]
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class StepResult:
    """A validated answer: the labels (and the update step's rating and suggestions), and what it cost."""

    labels: list[dict]
    calls: int
    rating: int | None = None
    suggestions: list[str] | None = None
    retried_for: list[str] | None = None  # problems of earlier attempts

    def to_dict(self) -> dict:
        return asdict(self)


class TaxonomyStep(dspy.Module):
    """One of generate / update / review, with validation and bounded retries.

    Args:
        step: ``generate``, ``update`` or ``review``.
        constraints: what every answer must satisfy.
        max_attempts: LM calls at most, the first included.
        max_tokens: the answer budget per call (the labels are the long part).
    """

    def __init__(self, step: str, constraints: Constraints, max_attempts: int = 3, max_tokens: int | None = None):
        super().__init__()
        self.step = step
        self.constraints = constraints
        self.max_attempts = max(1, max_attempts)
        self.max_tokens = max_tokens or 120 + 80 * constraints.max_labels
        self.predict = dspy.Predict(STEPS[step].with_updated_fields("labels", type_=labels_type(constraints)))

    def forward(self, **inputs) -> StepResult:
        problems, history, labels = ["none"], [], []
        for attempt in range(1, self.max_attempts + 1):
            try:
                with dspy.context(adapter=CompactJSONAdapter()):
                    pred = self.predict(**inputs, rules=self.constraints.text(), problems=_problem_text(problems),
                                        config={"max_tokens": self.max_tokens})
            except AdapterParseError as exc:
                problems = [f"the answer was not the requested JSON ({_short(exc.lm_response)}); "
                            f"answer with a JSON object with the field(s) {list(STEPS[self.step].output_fields)}"]
                history += problems
                continue
            labels = pred["labels"]  # not pred.labels: that is a Prediction method
            labels = normalise(getattr(labels, "root", labels) or [])
            problems = validate_taxonomy(labels, self.constraints)
            if not problems:
                result = StepResult(labels, attempt, retried_for=history or None)
                if self.step == "update":
                    result.rating = min(5, max(1, int(pred["rating"] or 1)))
                    suggestions = getattr(pred["suggestions"], "root", pred["suggestions"]) or []
                    result.suggestions = [" ".join(str(s).split()) for s in suggestions if str(s).strip()][:3]
                return result
            history += problems
        repaired = _drop_repeats(labels) if problems and all(p.startswith("duplicate label name") for p in problems) else None
        if repaired is not None and not validate_taxonomy(repaired, self.constraints):
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
