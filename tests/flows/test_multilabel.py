"""Multi-label projects end to end with the recorded-answer LM: config, IRR votes, label models, optimize."""

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from labelloop.flows.cli import app
from labelloop.flows.config import ConfigError, DataSpec
from labelloop.flows.io import read_records
from labelloop.flows.optimize import optimize_project
from labelloop.flows.project import load_project
from labelloop.flows.run_project import run_project
from labelloop.labelers.irr import IRRLabeler
from labelloop.programs.errors import DataError

pytestmark = pytest.mark.usefixtures("prefect_harness")


def test_multilabel_gold_is_read_from_lists_or_separated_strings(tmp_path):
    (tmp_path / "a.csv").write_text("id,text,label\n1,hi,billing|shipping\n2,yo,shipping\n")
    df = read_records(DataSpec(path=tmp_path / "a.csv"), require_label=True, multilabel=True)
    assert df["label"].tolist() == [["billing", "shipping"], ["shipping"]]
    (tmp_path / "b.jsonl").write_text('{"id": 1, "text": "hi", "label": ["billing", "billing"]}\n'
                                      '{"id": 2, "text": "yo", "label": 7}\n')
    with pytest.raises(DataError, match=r"record '2': expected 'label' as a list of label names.*got 7"):
        read_records(DataSpec(path=tmp_path / "b.jsonl"), require_label=True, multilabel=True)


def test_unknown_gold_label_in_a_list_is_named(multilabel_project):
    dev = multilabel_project.parent / "dev.jsonl"
    dev.write_text(dev.read_text().replace('"shipping"', '"shiping"', 1))
    with pytest.raises(DataError, match="shiping"):
        load_project(multilabel_project)


def test_multilabel_run_end_to_end_then_optimize(multilabel_project, fake_lm):
    project = load_project(multilabel_project)
    assert project.task.name == "multilabel" and isinstance(project.llm_labelers[0], IRRLabeler)
    run_dir = run_project(project, show_progress=False)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["task"] == "multilabel" and metrics["llm_calls"] == fake_lm.engine.calls > 0
    test = metrics["scores"]["test"]
    assert set(test) == {"majority_vote", "label_model", "student", "irr_llm"}
    assert all(0 <= test[m]["micro_f1"] <= 1 and 0 <= test[m]["rp5"] <= 1 for m in test)
    assert test["label_model"]["micro_f1"] > 0.3  # the rules behind the fake LM find most intents
    assert metrics["labels_with_snorkel"] >= 1  # shipping has three labelers: Snorkel; the rest majority vote
    votes = pd.read_parquet(run_dir / "votes_test.parquet")
    assert any(len(v) == 2 for v in votes["irr"])  # a set of labels from one labeler
    probs = pd.read_parquet(run_dir / "probabilistic_labels.parquet")
    assert {"labels", "top_labels", "top_probs"} <= set(probs.columns)
    summary = pd.read_csv(run_dir / "lf_summary.csv").set_index("labeler")
    assert {"dev_precision", "dev_recall", "labels_per_record"} <= set(summary.columns)
    assert "rp5" in (run_dir / "report.md").read_text()
    cal = metrics["calibration"]  # one threshold per label, tuned on dev, never worse than 0.5 there
    assert len(cal["thresholds"]) == len(metrics["labels"]) and all(0 < t < 1 for t in cal["thresholds"])
    assert cal["dev"]["micro_f1"] >= cal["dev"]["micro_f1_at_0.5"] and 0 <= cal["test"]["ece"] <= 1
    # labels a multi-label student predicts, through the CLI
    out = multilabel_project.parent / "pred.jsonl"
    result = CliRunner().invoke(app, ["predict", str(run_dir / "model.skops"), str(multilabel_project.parent / "test.jsonl"),
                                      "-o", str(out)])
    assert result.exit_code == 0, result.output
    preds = [json.loads(line) for line in out.read_text().splitlines()]
    assert all(isinstance(p["labels"], list) for p in preds) and any(p["labels"] for p in preds)
    assert all(p["abstain"] == (not p["labels"]) for p in preds)

    # optimize: saved, loaded by the next run under a new version, so its answers are computed afresh
    calls, before = fake_lm.engine.calls, project.llm_labelers[0].version(project.context())
    rows = optimize_project(project)
    assert rows[0]["path"] == multilabel_project.parent / "optimized" / "irr.json" and rows[0]["path"].is_file()
    assert {c["seed"] for c in rows[0]["candidates"]} == {-3, -1, 0}
    assert fake_lm.engine.calls > calls
    reloaded = load_project(multilabel_project)
    assert "irr" in reloaded.programs and reloaded.llm_labelers[0].version(reloaded.context()) != before
    from labelloop.flows.plan import plan_calls

    assert plan_calls(reloaded)[0]["llm_calls"] > 0 and plan_calls(project)[0]["llm_calls"] == 0


def test_irr_answers_outside_the_taxonomy_are_counted(multilabel_project, monkeypatch):
    import dspy

    from tests.fakes import RuleEngine

    def answer(field, options, text):
        return ["billing", "tax advice"] if field == "guesses" else ["billing", "tax advice", "shipping"]

    lm = dspy.LM("fake/rule", engine=RuleEngine(answer), cache=False)
    monkeypatch.setattr("labelloop.programs.lm.make_lm", lambda *a, **k: lm)
    run_dir = run_project(load_project(multilabel_project), train=False, show_progress=False)
    summary = pd.read_csv(run_dir / "lf_summary.csv").set_index("labeler")
    assert summary.loc["irr", "invalid_answers"] == 144  # one per record, dropped, never a crash
    assert summary.loc["irr", "labels_per_record"] == 2.0


def test_optimize_needs_an_irr_labeler_and_gold(example_project):
    with pytest.raises(ConfigError, match="no `{type: irr}` labeler"):
        optimize_project(load_project(example_project))


@pytest.mark.llm_call
def test_multilabel_example_on_the_embedded_model(multilabel_project):
    """A slice of the multi-label example, labelled for real by the embedded model (about 30 LLM calls)."""
    folder = multilabel_project.parent
    for name, keep in (("records.jsonl", 8), ("dev.jsonl", 4), ("test.jsonl", 4)):
        path = folder / name
        path.write_text("".join(path.read_text().splitlines(keepends=True)[:keep]))
    run_dir = run_project(load_project(multilabel_project), show_progress=False)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 16 * 2 <= metrics["llm_calls"] <= 16 * 3 and not any(metrics["llm_failures"].values())
    summary = pd.read_csv(run_dir / "lf_summary.csv").set_index("labeler")
    assert summary.loc["irr", "coverage"] > 0.5  # the model answers, inside the taxonomy
    votes = pd.read_parquet(run_dir / "votes_train.parquet")
    assert all(set(v) <= set(metrics["labels"]) for v in votes["irr"])
    assert {"majority_vote", "label_model", "student", "irr_llm"} <= set(metrics["scores"]["test"])
