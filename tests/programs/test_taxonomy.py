import dspy
import pytest

from labelloop.programs.errors import TaxonomyError
from labelloop.programs.taxonomy import (
    NONE_OF_THESE,
    Constraints,
    Summariser,
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
    ([GOLD[0], {"name": "late lost or damaged parcels", "description": D}], ['has 4 words; at most 3']),
    ([GOLD[0], {"name": "refunds and returns", "description": D}], []),  # joining words do not count
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
        TaxonomyStep("review", Constraints(), max_attempts=2, current=GOLD)(use_case="route")
    assert lm.engine.calls == 2
    assert info.value.step == "review" and info.value.attempts == 2
    assert "'review' gave no valid answer in 2 attempt(s)" in str(info.value) and "not the requested JSON" in str(info.value)


def _edit(action, labels=(), name="", description=""):
    return {"action": action, "labels": list(labels), "name": name, "description": description}


def test_update_edits_over_limit_duplicate_and_catch_all_answers_are_sent_back():
    too_many = [_edit("add", name=f"kind {i}", description=f"{D} ({i})") for i in range(3)]
    dupe = [_edit("add", name="Billing", description=D)]
    catch_all = [_edit("change", ["shipping"], name="other")]
    dangling = [_edit("remove", ["billing"]), _edit("change", ["billing"], description=D)]
    good = [_edit("merge", ["billing", "shipping"], "Orders and Money", "Payments, refunds and deliveries of orders."),
            _edit("change", ["account_access"], description="Login, passwords, two-factor codes and account deletion.")]
    lm = taxonomy_lm(script={"update": [too_many, dupe, catch_all, dangling, good]})
    with dspy.context(lm=lm):
        result = TaxonomyStep("update", Constraints(max_labels=7), max_attempts=5, current=GOLD)(use_case="route",
                                                                                                summaries="1. refund")
    assert result.calls == 5 and result.rating == 4
    assert [x["name"] for x in result.labels] == ["orders_and_money", "technical_issue", "account_access", "product_question"]
    assert result.labels[2]["description"].startswith("Login, passwords, two-factor")
    assert result.labels[1] == GOLD[2]  # labels no edit names are kept verbatim
    assert result.edits == ["merge billing + shipping -> orders_and_money", "change account_access (description)"]
    sent = _problems_sent(lm)
    assert "8 labels, but at most 7 are allowed" in sent[1]
    assert 'duplicate label name "billing"' in sent[2]
    assert 'label "other" is a catch-all' in sent[3]
    assert 'edit 2 (change) names "billing", which is not a label at that point' in sent[4]
    assert len(result.retried_for) == 4


def test_edits_can_only_name_current_labels_and_are_bounded():
    lm = taxonomy_lm()
    with dspy.context(lm=lm):
        result = TaxonomyStep("review", Constraints(), current=GOLD[:3])(use_case="route")
    assert result.labels == GOLD[:3] and result.edits == []  # no edits: the taxonomy as it was
    schema = lm.engine.requests[0].config.response_format["schema"]
    edits = schema["$defs"][schema["properties"]["edits"]["$ref"].rsplit("/", 1)[1]]
    assert edits["maxItems"] == 3
    edit = schema["$defs"][edits["items"]["$ref"].rsplit("/", 1)[1]]
    assert edit["properties"]["action"]["enum"] == ["add", "change", "merge", "remove"]
    assert edit["properties"]["labels"]["items"]["enum"] == ["billing", "shipping", "technical_issue"]
    assert edit["properties"]["labels"]["maxItems"] == 2
    shown = lm.engine.requests[0].messages[-1].text
    assert '{"name": "technical issue", "description": "A product, the website or the app malfunctions."}' in shown
    with pytest.raises(ValueError, match="needs the current taxonomy"):
        TaxonomyStep("update", Constraints())


def test_schema_carries_the_limits_for_grammar_constrained_models():
    lm = taxonomy_lm()
    with dspy.context(lm=lm):
        TaxonomyStep("generate", Constraints(max_labels=6, max_name_words=2))(use_case="route", summaries="1. refund")
    schema = lm.engine.requests[0].config.response_format["schema"]
    ref = lambda node: schema["$defs"][node["$ref"].rsplit("/", 1)[1]] if "$ref" in node else node  # noqa: E731
    labels = ref(schema["properties"]["labels"])
    assert labels["maxItems"] == 6 and labels["minItems"] == 2
    item = ref(labels["items"])
    assert item["properties"]["name"]["maxLength"] == 32  # plain words, slugged afterwards: no name pattern
    assert item["properties"]["description"]["minLength"] == 30
    assert item["properties"]["description"]["maxLength"] == 201  # an answer the grammar cut off fails validation


def test_names_are_normalised_to_the_tools_label_style():
    labels = [{"name": "Order Tracking", "description": " Where  is my parcel, when will it come? "},
              {"name": "LoginIssues", "description": "The customer cannot sign in to the account."}]
    lm = taxonomy_lm(script={"generate": [labels]})
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


@pytest.mark.parametrize("by", ["text", "summary"])
def test_records_are_grouped_by_meaning_with_their_typical_words(by):
    from labelloop.programs.clustering import group_records

    refunds = ["Customer wants a refund for a returned item", "Customer asks when the refund for the return comes back",
               "Customer was charged twice and wants a refund"]
    parcels = ["Customer's parcel has not arrived yet", "Customer asks where the parcel delivery is",
               "Customer says the parcel tracking has not moved"]
    logins = ["Customer cannot log in to the account", "Customer forgot the password and cannot log in"]
    meaningful = refunds + parcels + logins
    filler = [f"message number {i}" for i in range(len(meaningful))]  # the other side carries no meaning
    summaries, texts = (filler, meaningful) if by == "text" else (meaningful, filler)
    groups = group_records(summaries, texts, 3, per_group=2, by=by)
    assert [g.size for g in groups] == [3, 3, 2]  # largest group first
    assert [len(g.summaries) for g in groups] == [2, 2, 2]
    assert {g.keywords[0] for g in groups} == {"refund", "parcel", "log"}
    if by == "summary":
        by_word = {g.keywords[0]: set(g.summaries) for g in groups}
        assert by_word["refund"] <= set(refunds) and by_word["parcel"] <= set(parcels) and by_word["log"] <= set(logins)
    assert "customer" not in {w for g in groups for w in g.keywords[:2]}  # shared by every group: not typical of one
    inputs = groups[0].inputs()
    assert inputs["keywords"].startswith(groups[0].keywords[0]) and inputs["summaries"].startswith("- ")
    assert [g.size for g in group_records(["only one"], ["x"], 3)] == [1]
    with pytest.raises(ValueError, match="'text' or 'summary'"):
        group_records(summaries, texts, 3, by="title")


def test_name_step_answers_one_label_in_plain_words_checked_like_any_label():
    lm = taxonomy_lm(script={"name": [{"name": "Customer Support", "description": D},
                                      {"name": "Refunds and Returns", "description": "Money back for returned orders."}]})
    with dspy.context(lm=lm):
        result = TaxonomyStep("name", Constraints(max_name_words=2))(keywords="refund, return", summaries="- a refund")
    assert result.labels == [{"name": "refunds_and_returns", "description": "Money back for returned orders."}]
    assert result.calls == 2 and 'label "customer_support" is a catch-all' in _problems_sent(lm)[1]
    request = lm.engine.requests[0]
    schema = request.config.response_format["schema"]
    name = schema["$defs"][schema["properties"]["name"]["$ref"].rsplit("/", 1)[1]]
    assert name["maxLength"] == 32 and "pattern" not in name
    assert "Between" not in request.messages[-1].text  # one label: no count or overlap rules


def test_after_too_long_names_the_last_attempt_gets_a_word_count_pattern():
    long = {"name": "Password Reset Email Assistance", "description": "Password resets and emails about them."}
    lm = taxonomy_lm(script={"name": [long, long, {"name": "Password Resets", "description": long["description"]}]})
    with dspy.context(lm=lm):
        result = TaxonomyStep("name", Constraints(max_name_words=3))(keywords="password", summaries="- a reset")
    assert result.labels[0]["name"] == "password_resets" and result.calls == 3

    def name_schema(request):
        schema = request.config.response_format["schema"]
        return schema["$defs"][schema["properties"]["name"]["$ref"].rsplit("/", 1)[1]]

    assert [("pattern" in name_schema(r)) for r in lm.engine.requests] == [False, False, True]
    assert name_schema(lm.engine.requests[2])["pattern"] == "^[A-Za-z][A-Za-z0-9-]*( [A-Za-z][A-Za-z0-9-]*){0,2}$"
    retries = [r.config.temperature for r in lm.engine.requests]
    assert retries[0] in (None, 0.0) and retries[1] == retries[2] == 0.7  # retries sample instead of repeating


def test_a_group_description_that_restates_one_summary_is_sent_back():
    copy = {"name": "Refunds", "description": "Customer asks when the refund for order 4411 comes back."}
    fixed = {"name": "Refunds", "description": "When refunds for returns or cancellations arrive."}
    lm = taxonomy_lm(script={"name": [copy, fixed]})
    with dspy.context(lm=lm):
        summaries = "- Customer asks when the refund for order 4411 comes back\n- A refund for a kettle"
        result = TaxonomyStep("name", Constraints())(keywords="refund", summaries=summaries)
    assert result.calls == 2 and result.labels[0]["description"].startswith("When refunds")
    assert 'description of "refunds" restates one text' in _problems_sent(lm)[1]


def test_a_description_that_keeps_restating_one_summary_is_kept_rather_than_losing_the_group():
    copy = {"name": "Refunds", "description": "Customer asks when the refund for order 4411 comes back."}
    lm = taxonomy_lm(script={"name": [copy, {"name": "Other", "description": "Anything else at all, really."}, copy]})
    with dspy.context(lm=lm):
        result = TaxonomyStep("name", Constraints())(keywords="refund", summaries="- Customer asks when the refund for "
                                                                                   "order 4411 comes back")
    assert result.calls == 3 and result.labels[0]["name"] == "refunds"
    assert any("restates one text" in p for p in result.retried_for) and any("catch-all" in p for p in result.retried_for)
