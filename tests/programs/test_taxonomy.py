import dspy
import pytest

from programs.taxonomy import (
    NONE_OF_THESE,
    Constraints,
    Summariser,
    TaxonomyError,
    TaxonomyStep,
    assignment_program,
    validate_taxonomy,
)
from tests.fakes_taxonomy import GOLD, taxonomy_lm


def _problems_sent(lm) -> list[str]:
    """The `problems` input of every taxonomy request, in order."""
    out = []
    for request in lm.engine.requests:
        user = request.messages[-1].text
        if "[[ ## problems ## ]]" in user:
            out.append(user.split("[[ ## problems ## ]]", 1)[1].split("[[", 1)[0].split("Respond with", 1)[0].strip())
    return out


D = "Texts about one particular kind of request."


@pytest.mark.parametrize("labels, expected", [
    (GOLD, []),
    ([{"name": f"kind_{i}", "description": D} for i in range(10)], ["10 labels, but at most 8 are allowed"]),
    (GOLD[:1], ["1 label(s), but at least 2 are needed"]),
    ([GOLD[0], {"name": "Billing", "description": "again"}], ['duplicate label name "billing"']),
    ([GOLD[0], {"name": "Misc", "description": D}], ['label "misc" is a catch-all']),
    ([GOLD[0], {"name": "", "description": D}], ["label 2 has an empty name"]),
    ([GOLD[0], {"name": "refunds", "description": " "}], ['label "refunds" has an empty description']),
    ([GOLD[0], {"name": "refunds", "description": "Refunds"}], ['description of "refunds" is too short']),
    ([GOLD[0], {"name": "customer_support", "description": D}], ['label "customer_support" is a catch-all']),
    ([GOLD[0], {"name": "shipping_issues", "description": "Texts that are shipping issue messages."}],
     ['description of "shipping_issues" only repeats the name']),
    ([GOLD[0], {"name": "late lost or damaged parcels", "description": D}], ['has 5 words; at most 3']),
    ([GOLD[0], {"name": "refunds", "description": "x" * 201}], ['has 201 characters; at most 200']),
])
def test_validate_taxonomy_names_each_problem(labels, expected):
    problems = validate_taxonomy(labels, Constraints())
    assert len(problems) == len(expected)
    for problem, start in zip(problems, expected):
        assert start in problem


def test_catch_all_allowed_when_the_user_says_so():
    labels = [GOLD[0], {"name": "other", "description": D}]
    assert validate_taxonomy(labels, Constraints(allow_catch_all=True)) == []


def test_malformed_answer_is_retried_with_the_problem_stated():
    lm = taxonomy_lm(script={"generate": ['{"labels": [{"name": "billing"', "not json at all"]})
    with dspy.context(lm=lm):
        result = TaxonomyStep("generate", Constraints(), max_attempts=3)(use_case="route", summaries="1. refund")
    assert [x["name"] for x in result.labels] == [x["name"] for x in GOLD]
    assert result.calls == 3 == lm.engine.calls
    sent = _problems_sent(lm)
    assert sent[0] == "none"
    assert "not the requested JSON" in sent[1] and "not the requested JSON" in sent[2]


def test_answers_that_stay_malformed_end_in_a_clear_error():
    lm = taxonomy_lm(script={"review": ["{oops"] * 5})
    with dspy.context(lm=lm), pytest.raises(TaxonomyError) as info:
        TaxonomyStep("review", Constraints(), max_attempts=2)(use_case="route", taxonomy="- a: b")
    assert lm.engine.calls == 2
    assert info.value.step == "review" and info.value.attempts == 2
    assert "'review' gave no valid answer in 2 attempt(s)" in str(info.value) and "not the requested JSON" in str(info.value)


def test_over_limit_duplicate_and_catch_all_answers_are_sent_back():
    too_many = [{"name": f"label_{i}", "description": f"{D} ({i})"} for i in range(12)]
    dupes = [GOLD[0], {"name": "Billing", "description": D}, GOLD[1]]
    catch_all = GOLD[:3] + [{"name": "other", "description": D}]
    lm = taxonomy_lm(script={"update": [too_many, dupes, catch_all]})
    with dspy.context(lm=lm):
        result = TaxonomyStep("update", Constraints(max_labels=8), max_attempts=4)(
            use_case="route", taxonomy="- billing: money", summaries="1. refund")
    assert result.calls == 4 and len(result.labels) == 5
    assert result.rating == 4
    sent = _problems_sent(lm)
    assert "12 labels, but at most 8 are allowed" in sent[1]
    assert 'duplicate label name "billing"' in sent[2]
    assert 'label "other" is a catch-all' in sent[3]
    assert len(result.retried_for) == 3


def test_schema_carries_the_limits_for_grammar_constrained_models():
    lm = taxonomy_lm()
    with dspy.context(lm=lm):
        TaxonomyStep("generate", Constraints(max_labels=6, max_name_words=2))(use_case="route", summaries="1. refund")
    schema = lm.engine.requests[0].config.response_format["schema"]
    ref = lambda node: schema["$defs"][node["$ref"].rsplit("/", 1)[1]] if "$ref" in node else node  # noqa: E731
    labels = ref(schema["properties"]["labels"])
    assert labels["maxItems"] == 6 and labels["minItems"] == 2
    item = ref(labels["items"])
    assert item["properties"]["name"]["pattern"] == "^[a-z]+(_[a-z0-9]+){0,1}$"
    assert item["properties"]["description"]["minLength"] == 30


def test_names_are_normalised_to_the_tools_label_style():
    lm = taxonomy_lm(script={"generate": [[{"name": "Order Tracking", "description": " Where  is my parcel, when will it come? "},
                                           {"name": "LoginIssues", "description": "The customer cannot sign in to the account."}]]})
    with dspy.context(lm=lm):
        result = TaxonomyStep("generate", Constraints())(use_case="route", summaries="1. x")
    assert result.labels == [{"name": "order_tracking", "description": "Where is my parcel, when will it come?"},
                             {"name": "login_issues", "description": "The customer cannot sign in to the account."}]


def test_summary_is_cut_to_the_word_limit_and_falls_back_on_malformed_answers():
    lm = taxonomy_lm()
    with dspy.context(lm=lm):
        pred = Summariser("route messages", max_words=5)(text="my parcel never arrived and the tracking page is blank")
    assert pred.summary == "my parcel never arrived and" and pred.ok and pred.calls == 1
    assert "Use case: route messages" in lm.engine.requests[0].system[0].text if not isinstance(
        lm.engine.requests[0].system, str) else "Use case: route messages" in lm.engine.requests[0].system

    broken = dspy.LM("fake/broken", engine=_Broken(), cache=False)
    with dspy.context(lm=broken):
        pred = Summariser("route messages", max_words=3, max_attempts=2)(text="one two three four")
    assert pred.summary == "one two three" and not pred.ok and pred.calls == 2 == broken.engine.calls


class _Broken:
    supports_response_schema = True
    supported_params = frozenset({"response_format", "temperature", "max_tokens"})

    def __init__(self):
        self.calls = 0

    def complete(self, request):
        from dspy.lm15 import Message, Response, TextPart, Usage

        self.calls += 1
        return Response(id=None, model="broken", message=Message.assistant([TextPart("{{{")]), finish_reason="stop",
                        usage=Usage(input_tokens=1, output_tokens=1))


def test_assignment_offers_none_of_these():
    lm = taxonomy_lm()
    program = assignment_program(GOLD[:2])
    with dspy.context(lm=lm):
        refund = program(text="I want a refund")
        other = program(text="what a lovely day")
    assert program.options == ["billing", "shipping", NONE_OF_THESE]
    assert refund.answer == "billing" and other.answer == NONE_OF_THESE  # the rule engine's fallback is the last option


def test_update_suggestions_are_bounded_so_they_cannot_eat_the_answer_budget():
    lm = taxonomy_lm(script={"update": [{"labels": GOLD, "suggestions": ["merge a and b", "split c"]}]})
    with dspy.context(lm=lm):
        result = TaxonomyStep("update", Constraints())(use_case="route", taxonomy="- billing: money", summaries="1. x")
    assert result.suggestions == ["merge a and b", "split c"]
    schema = lm.engine.requests[0].config.response_format["schema"]
    suggestions = schema["$defs"][schema["properties"]["suggestions"]["$ref"].rsplit("/", 1)[1]]
    assert suggestions["maxItems"] == 3 and suggestions["items"]["maxLength"] == 120


def test_a_model_that_keeps_repeating_labels_gets_each_first_one_after_the_last_attempt():
    looping = GOLD[:2] * 3
    lm = taxonomy_lm(script={"generate": [looping] * 3})
    with dspy.context(lm=lm):
        result = TaxonomyStep("generate", Constraints(), max_attempts=3)(use_case="route", summaries="1. x")
    assert lm.engine.calls == 3  # retried first, repaired only after the last attempt
    assert result.labels == GOLD[:2] and result.retried_for[-1] == "repeated labels dropped"

    lm = taxonomy_lm(script={"generate": [[GOLD[0]] * 3] * 3})  # one label repeated: still too few after the repair
    with dspy.context(lm=lm), pytest.raises(TaxonomyError, match="duplicate label name"):
        TaxonomyStep("generate", Constraints(), max_attempts=3)(use_case="route", summaries="1. x")


def test_summaries_are_grouped_by_meaning_for_the_generate_step():
    from programs.taxonomy import format_groups, group_summaries

    refunds = ["Customer wants a refund for a returned item", "Customer asks when the money for the return comes back",
               "Customer was charged twice and wants the money back"]
    parcels = ["Customer's parcel has not arrived yet", "Customer asks where the delivery is",
               "Customer says the package tracking has not moved"]
    logins = ["Customer cannot log in to the account", "Customer forgot the password and the reset email never came"]
    groups = group_summaries(refunds + parcels + logins, 3)
    assert sorted(map(sorted, groups)) == sorted(map(sorted, [refunds, parcels, logins]))
    assert len(groups[0]) == 3 and len(groups[-1]) == 2  # largest group first
    assert group_summaries(["only one"], 3) == [["only one"]]
    assert format_groups(groups).count("Group ") == 3
