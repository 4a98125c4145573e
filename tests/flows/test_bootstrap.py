"""`labelloop bootstrap` on the example project with a recorded-answer LM, in a Prefect test harness."""

import json

import pytest
import yaml
from typer.testing import CliRunner

from labelloop.flows.bootstrap import bootstrap_taxonomy
from labelloop.flows.cli import app
from labelloop.flows.config import load_config
from labelloop.flows.io import read_taxonomy
from labelloop.programs.errors import StateError, TaxonomyError
from tests.fakes_taxonomy import GOLD, taxonomy_lm

pytestmark = pytest.mark.usefixtures("prefect_harness")

SAMPLE, BATCH, GROUPS = 20, 8, 6  # 6 named groups instead of generate, minibatches 8, 8, 4: update, update, then review


@pytest.fixture
def project(example_project):
    """The example project without its label set: data only, a zero-shot labeler, a bootstrap section."""
    cfg = {"name": "boot", "data": "records.jsonl", "taxonomy": "proposed.yaml",
           "labelers": [{"type": "zero_shot"}], "label_model": "majority",
           "bootstrap": {"use_case": "Route support messages by intent.", "sample_size": SAMPLE,
                         "minibatch_size": BATCH, "max_labels": GROUPS}}
    path = example_project.parent / "boot.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture
def lm(monkeypatch):
    holder = {"lm": taxonomy_lm()}
    monkeypatch.setattr("labelloop.programs.lm.make_lm", lambda *a, **k: holder["lm"])
    return holder


def _full_run_calls() -> int:
    return SAMPLE + GROUPS + 2 + 1 + SAMPLE  # summaries, one name per group, 2 updates, review, coverage check


def test_bootstrap_writes_a_taxonomy_the_labeling_config_accepts(project, lm):
    result = bootstrap_taxonomy(load_config(project), show_progress=False)
    engine = lm["lm"].engine
    assert result.llm_calls == engine.calls == _full_run_calls()
    assert [s for s in engine.steps if s not in ("summarise", "assign")] == ["name"] * GROUPS + ["update", "update", "review"]
    taxonomy = read_taxonomy(result.output)
    assert list(taxonomy.names) == [x["name"] for x in GOLD]
    # the fake names the 6th group like the 1st: one label, and a note that says so
    assert any('group 6 (' in n and 'was named "billing" like a larger group' in n for n in result.notes)
    raw = yaml.safe_load(result.output.read_text())
    examples = {x["name"]: x["examples"] for x in raw["labels"]}
    assert examples["billing"] and len(examples["billing"]) <= 3
    assert set(examples["billing"]) <= set(result.sample_ids)
    # the rule engine answers none_of_these when no keyword matches, so coverage is below 1
    assert result.counts["none_of_these"] > 0
    assert result.coverage == pytest.approx(1 - result.counts["none_of_these"] / SAMPLE)
    report = result.report.read_text()
    assert result.report.name == "proposed_report.md"
    assert f"coverage: {result.coverage:.1%}" in report and "| name group 1 |" in report and "(keywords: " in report
    assert "| billing |" in report


def test_an_existing_taxonomy_is_never_overwritten_without_update(project, lm):
    cfg = load_config(project)
    cfg.taxonomy.write_text("labels: [{name: a, description: mine}, {name: b, description: mine}]\n")
    before = cfg.taxonomy.read_text()
    with pytest.raises(StateError, match="may hold your edits.*--update"):
        bootstrap_taxonomy(cfg, show_progress=False)
    assert cfg.taxonomy.read_text() == before and lm["lm"].engine.calls == 0


class Interrupted(BaseException):
    pass


# crash while summarising, naming, updating, checking coverage
@pytest.mark.parametrize("crash_at", [7, SAMPLE + 2, SAMPLE + GROUPS + 1, SAMPLE + GROUPS + 5])
def test_rerun_after_a_crash_pays_only_for_missing_calls(project, lm, crash_at):
    engine = lm["lm"].engine
    original = engine.complete

    def crash(request):
        if engine.calls >= crash_at:
            raise Interrupted()
        return original(request)

    engine.complete = crash
    with pytest.raises(Interrupted):
        bootstrap_taxonomy(load_config(project), show_progress=False)
    assert not load_config(project).taxonomy.exists()
    lm["lm"] = taxonomy_lm()
    result = bootstrap_taxonomy(load_config(project), show_progress=False)
    assert result.llm_calls == lm["lm"].engine.calls == _full_run_calls() - crash_at


def test_groups_that_get_no_valid_name_are_a_clean_error_and_write_nothing(project, lm):
    lm["lm"] = taxonomy_lm(script={"name": [{"name": "Customer Support", "description": "Customers who need support."}] * 18})
    result = CliRunner().invoke(app, ["bootstrap", str(project), "--no-progress"])
    assert result.exit_code == 2, result.output
    assert "'name' gave no valid answer" in result.output and "catch-all" in result.output
    assert "Traceback" not in result.output
    assert not load_config(project).taxonomy.exists()


def test_without_grouping_generate_runs_on_the_first_minibatch_and_a_bad_one_writes_nothing(project, lm):
    cfg = load_config(project)
    cfg.bootstrap.group_summaries = False
    lm["lm"] = taxonomy_lm(script={"generate": [[GOLD[0]] * 3] * 3})  # duplicates every time
    with pytest.raises(TaxonomyError, match="'generate' gave no valid answer in 3 attempt.*duplicate label name"):
        bootstrap_taxonomy(cfg, show_progress=False)
    assert not cfg.taxonomy.exists()

    lm["lm"] = taxonomy_lm()
    result = bootstrap_taxonomy(cfg, show_progress=False)
    assert [s for s in lm["lm"].engine.steps if s not in ("summarise", "assign")] == ["generate", "update", "update", "review"]
    assert [x["name"] for x in result.labels] == [x["name"] for x in GOLD]


def test_an_update_that_stays_invalid_keeps_the_taxonomy_and_says_so(project, lm):
    lm["lm"] = taxonomy_lm(script={"update": ["{bad"] * 3})
    result = bootstrap_taxonomy(load_config(project), show_progress=False)
    assert [x["name"] for x in result.labels] == [x["name"] for x in GOLD]
    assert any("update 2 kept the taxonomy unchanged" in n for n in result.notes)
    assert "update 2 kept the taxonomy unchanged" in result.report.read_text()
    assert result.llm_calls == _full_run_calls() + 2  # update 2 tried 3 times, update 3 once


def test_update_keeps_a_persons_edits_and_shows_the_diff(project, lm):
    runner = CliRunner()
    assert runner.invoke(app, ["bootstrap", str(project), "--no-progress"]).exit_code == 0
    path = load_config(project).taxonomy
    raw = yaml.safe_load(path.read_text())
    raw["labels"] = [x for x in raw["labels"] if x["name"] != "product_question"]  # deleted by hand
    raw["labels"][0]["description"] = "MY OWN WORDS about money."                    # changed by hand
    raw["labels"].append({"name": "returns", "description": "Sending a product back for money."})  # added by hand
    path.write_text(yaml.safe_dump(raw, sort_keys=False))

    # the model rewrites billing and adds warranty_claims, then drops returns and puts product_question back
    edit = lambda action, labels=(), name="", description="": {  # noqa: E731
        "action": action, "labels": list(labels), "name": name, "description": description}
    edits_1 = [edit("change", ["billing"], description="Payments, refunds and invoices of orders."),
             edit("add", name="Warranty Claims", description="Repairs or replacements under warranty.")]
    edits_2 = [edit("remove", ["returns"]), edit("add", name="Product Question", description=GOLD[4]["description"])]
    lm["lm"] = taxonomy_lm(script={"update": [edits_1, edits_2]})
    result = runner.invoke(app, ["bootstrap", str(project), "--update", "--no-progress"])
    assert result.exit_code == 0, result.output
    labels = {x["name"]: x["description"] for x in yaml.safe_load(path.read_text())["labels"]}
    assert labels["billing"] == "MY OWN WORDS about money."
    assert "product_question" not in labels
    assert labels["returns"] == "Sending a product back for money."
    assert "warranty_claims" in labels
    assert "added: ['warranty_claims']" in result.output and "removed: none" in result.output
    assert "+- name: warranty_claims" in result.output  # the unified diff of the YAML
    assert 'kept "product_question" deleted' in result.output
    # an update summarises records not sampled before
    first = set(yaml.safe_load(path.read_text())["labels"][0]["examples"])
    engine = lm["lm"].engine
    assert engine.steps.count("summarise") == SAMPLE and "generate" not in engine.steps
    assert first  # examples come from the new sample's coverage check


def test_update_needs_an_existing_file(project, lm):
    with pytest.raises(StateError, match="does not exist; run `labelloop bootstrap` first"):
        bootstrap_taxonomy(load_config(project), update=True, show_progress=False)


def test_run_end_to_end_on_a_bootstrapped_taxonomy(project, lm):
    # one fake answers both: taxonomy steps by script, labeling questions by keyword rules
    runner = CliRunner()
    result = runner.invoke(app, ["run", str(project), "--no-progress"])
    assert result.exit_code == 2 and "labelloop bootstrap" in result.output  # no label set yet: say what to do

    result = runner.invoke(app, ["bootstrap", str(project), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "coverage:" in result.output and "wrote" in result.output
    engine = lm["lm"].engine
    before = engine.calls
    result = runner.invoke(app, ["run", str(project), "--no-progress"])
    assert result.exit_code == 0, result.output
    run_dir = max((project.parent / "runs").iterdir())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["labels"] == [x["name"] for x in GOLD]
    assert metrics["llm_calls"] == engine.calls - before == 160
    assert (run_dir / "model.skops").exists()


@pytest.mark.llm_call
def test_tiny_bootstrap_on_the_embedded_model(example_project):
    from labelloop.programs.lm import ModelNotAvailable, embedded_model_path

    try:
        embedded_model_path()
    except ModelNotAvailable as exc:
        pytest.skip(str(exc))
    cfg = {"name": "boot", "data": "records.jsonl", "taxonomy": "proposed.yaml", "labelers": [{"type": "zero_shot"}],
           "bootstrap": {"use_case": "Route support messages of an electronics shop by the customer's request.",
                         "sample_size": 6, "minibatch_size": 6, "max_labels": 5, "summary_words": 15}}
    path = example_project.parent / "boot.yaml"
    path.write_text(yaml.safe_dump(cfg))
    result = bootstrap_taxonomy(load_config(path), show_progress=False)
    taxonomy = read_taxonomy(result.output)  # the labeling config accepts it
    assert 2 <= len(taxonomy) <= 5
    assert all(name == name.lower() and " " not in name for name in taxonomy.names)
    assert 0 <= result.coverage <= 1 and sum(result.counts.values()) <= 6
    assert result.llm_calls >= 6 + 2 + 6  # summaries, generate and review, the coverage check
