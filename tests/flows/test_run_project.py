"""End to end on the example project with the recorded-answer LM, in a Prefect test harness."""

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from labelloop.flows.cli import app
from labelloop.flows.predict import load_student
from labelloop.flows.project import load_project
from labelloop.flows.run_project import require_stored, run_project
from labelloop.programs.errors import StateError

pytestmark = pytest.mark.usefixtures("prefect_harness")


def _n_items(config_path):
    n = sum(1 for f in ("records.jsonl", "dev.jsonl", "test.jsonl") for _ in open(config_path.parent / f))
    return n * 2  # two LLM labelers, batch calibration asks nothing extra


def test_run_writes_everything_and_second_run_pays_nothing(example_project, fake_lm):
    run_dir = run_project(load_project(example_project), show_progress=False)
    expected = {"config.yaml", "votes_train.parquet", "votes_dev.parquet", "votes_test.parquet",
                "probabilistic_labels.parquet", "lf_summary.csv", "metrics.json", "report.md", "model.skops",
                "model_card.md"}
    assert expected <= {p.name for p in run_dir.iterdir()}
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["llm_calls"] == fake_lm.engine.calls == _n_items(example_project)
    assert set(metrics["scores"]["test"]) == {"majority_vote", "label_model", "student", "zero_shot_llm"}
    assert 0 < metrics["scores"]["test"]["student"]["accuracy"] <= 1
    summary = pd.read_csv(run_dir / "lf_summary.csv")
    assert {"zero_shot", "asks_about_money", "lf_tracking_number"} <= set(summary["labeler"])
    assert "## Labeling functions" in (run_dir / "report.md").read_text()

    calls_before = fake_lm.engine.calls
    second = run_project(load_project(example_project), show_progress=False)
    assert json.loads((second / "metrics.json").read_text())["llm_calls"] == 0
    assert fake_lm.engine.calls == calls_before


class Interrupted(BaseException):
    pass


def test_crash_mid_run_keeps_every_answer_already_paid_for(example_project, fake_lm):
    engine = fake_lm.engine
    original = engine.complete

    def crash_after_40(request):
        if engine.calls >= 40:
            raise Interrupted()
        return original(request)

    engine.complete = crash_after_40
    with pytest.raises(Interrupted):
        run_project(load_project(example_project), show_progress=False)
    assert not (example_project.parent / "runs").exists() or not any((example_project.parent / "runs").iterdir())
    engine.complete = original
    engine.calls = 0
    run_dir = run_project(load_project(example_project), show_progress=False)
    calls = json.loads((run_dir / "metrics.json").read_text())["llm_calls"]
    assert calls <= _n_items(example_project) - 32  # at least two committed batches of 16 were kept


def test_train_refuses_to_call_the_llm(example_project, fake_lm):
    with pytest.raises(StateError, match="not stored yet; run `labelloop label"):
        require_stored(load_project(example_project))
    assert fake_lm.engine.calls == 0


def test_cli_plan_label_train_predict(example_project, fake_lm, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["plan", str(example_project)])
    assert result.exit_code == 0, result.output
    assert f"total: {_n_items(example_project)} LLM calls" in result.output

    result = runner.invoke(app, ["label", str(example_project), "--no-progress"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["train", str(example_project)])
    assert result.exit_code == 0, result.output
    assert "LLM calls this run: 0" in result.output
    run_dir = max((example_project.parent / "runs").iterdir())
    assert load_student(run_dir / "model.skops") is not None

    out = tmp_path / "pred.csv"
    result = runner.invoke(app, ["predict", str(run_dir / "model.skops"), str(example_project.parent / "test.jsonl"),
                                 "-o", str(out)])
    assert result.exit_code == 0, result.output
    pred = pd.read_csv(out)
    assert set(pred["label"]) <= {"billing", "shipping", "technical_issue", "account_access", "product_question"}
    assert len(pred) == 80


def test_cli_errors_are_one_clean_message(tmp_path):
    result = CliRunner().invoke(app, ["run", str(tmp_path / "missing.yaml")])
    assert result.exit_code == 2
    assert "error:" in result.output and "does not exist" in result.output
    assert "Traceback" not in result.output
