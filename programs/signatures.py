"""One signature per LLM step. The docstring is the instruction."""

from typing import Literal

import dspy
import pydantic

from labelloop.programs.taxonomy_rules import DESCRIPTION_HINT, MAX_EDITS


class ClassifyText(dspy.Signature):
    """Classify the text into exactly one of the labels below. Answer with the label name only."""

    text: str = dspy.InputField()
    label: str = dspy.OutputField()


class AnswerQuestion(dspy.Signature):
    """Read the text and answer the question about it with one of the allowed answers."""

    question: str = dspy.InputField()
    text: str = dspy.InputField()
    answer: str = dspy.OutputField()


def closed(signature: type[dspy.Signature], field: str, options: list[str]) -> type[dspy.Signature]:
    """Restrict an output field to a closed set of string options (a JSON-schema enum for the LM)."""
    if not options or len(set(options)) != len(options):
        raise ValueError(f"a closed answer needs distinct options, got {options!r}")
    return signature.with_updated_fields(field, type_=Literal[tuple(options)])


def classify_signature(labels: list[str], descriptions: list[str]) -> type[dspy.Signature]:
    """ClassifyText with the taxonomy in its instructions, so it is part of the shared prompt prefix."""
    lines = [f"- {name}: {desc}" if desc else f"- {name}" for name, desc in zip(labels, descriptions, strict=True)]
    signature = ClassifyText.with_instructions(ClassifyText.instructions + "\n\nLabels:\n" + "\n".join(lines))
    return closed(signature, "label", labels)


# Taxonomy bootstrapping (TnT-LLM style): summarise, name a group, generate, update, review.


class Label(pydantic.BaseModel):
    name: str = pydantic.Field(description="a few plain words")
    description: str = pydantic.Field(description=DESCRIPTION_HINT)



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


EDITS_DESC = (f"at most {MAX_EDITS} edits, possibly none; each: action (add | change | merge | remove), labels (the current "
              "label names it acts on: none to add, one to change or remove, two to merge), name and description (of the new, "
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


# Labeling functions the LLM writes (labelloop propose-lfs): keyword and regex rules, never code.


class KeywordRule(pydantic.BaseModel):
    any_of: list[str] = pydantic.Field(json_schema_extra={"minItems": 1, "maxItems": 8},
                                       description="words or short phrases; the rule fires on a text holding one of them")
    all_of: list[str] = pydantic.Field(default_factory=list, description="words the text must also hold")
    none_of: list[str] = pydantic.Field(default_factory=list, description="words that stop the rule from firing")


# The limits are in the schema only: it becomes the embedded model's grammar (left free, a small model answers an
# empty list), while an answer from a model the schema does not bind is accepted as it is and trimmed by the program.
class Keywords(pydantic.RootModel[list[str]]):
    root: list[str] = pydantic.Field(json_schema_extra={"minItems": 5, "maxItems": 15})


class Combinations(pydantic.RootModel[list[KeywordRule]]):
    root: list[KeywordRule] = pydantic.Field(json_schema_extra={"maxItems": 3})


class Patterns(pydantic.RootModel[list[str]]):
    root: list[str] = pydantic.Field(json_schema_extra={"maxItems": 3})


class ProposeRules(dspy.Signature):
    """Write labeling rules that find the texts of one label of a text classification task. List words and short phrases
    that often appear in this label's texts (the examples show some) and rarely in the texts of the other labels (the
    counter-examples show some): each one becomes a rule that votes for the label on any text holding it (whole words,
    any case). Optionally add a few combinations (a rule that fires when any of its words and all of another list occur,
    unless one of a third list does) and a few short, simple regular expressions (no nested repetition, no
    backreferences)."""

    labels: str = dspy.InputField(desc="the task's labels and what each means")
    label: str = dspy.InputField(desc="the label whose texts the rules must find")
    examples: str = dspy.InputField(desc="texts of this label that the rules should match")
    counter_examples: str = dspy.InputField(desc="texts of other labels that the rules must not match")
    rules_so_far: str = dspy.InputField(desc="rules already kept for this label: propose different ones")
    problems: str = dspy.InputField(desc="problems with your previous answer, to fix now; 'none' on the first try")
    keywords: Keywords = dspy.OutputField(desc="distinct words or short phrases, one rule each")
    combinations: Combinations = dspy.OutputField(desc="may be empty")
    regex_rules: Patterns = dspy.OutputField(desc="regular expressions; may be empty")


class ExampleTexts(pydantic.RootModel[list[str]]):
    root: list[str] = pydantic.Field(json_schema_extra={"minItems": 5, "maxItems": 10})


class WriteExamples(dspy.Signature):
    """Write new short texts that clearly belong to one label of a text classification task, as a labeling rule's
    examples: a text is given this label when it reads like one of them. Each text is about a different situation of
    this label (its description lists them), written as the examples are written (same voice, style and length), but
    never a copy of an example. No text may fit another label."""

    labels: str = dspy.InputField(desc="the task's labels and what each means")
    label: str = dspy.InputField(desc="the label the texts must belong to")
    examples: str = dspy.InputField(desc="texts of this label, to write like but not to copy")
    problems: str = dspy.InputField(desc="problems with your previous answer, to fix now; 'none' on the first try")
    texts: ExampleTexts = dspy.OutputField(desc="distinct new texts of this label, one or two sentences each")
