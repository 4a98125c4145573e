"""Runs nobody watches: ids across files, null ids, records that never get an answer, a dead key, student policy."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

import labelloop
from labelloop.flows.cli import app
from tests.fakes import RuleEngine, _record_text, rule_lm


def _config(path, **changes):
    cfg = yaml.safe_load(path.read_text())
    cfg.update(changes)
    path.write_text(yaml.safe_dump(cfg))
    return path


def _append(path, rows):
    with open(path, "a", encoding="utf-8") as handle:
        handle.writelines(json.dumps(r) + "\n" for r in rows)


class FailingEngine(RuleEngine):
    """Answers by keyword rules, but a record text matching ``when`` raises ``error`` instead."""

    def __init__(self, when, error):
        super().__init__()
        self.when, self.error = when, error

    def complete(self, request):
        if self.when(_record_text(request)):
            self.calls += 1
            raise self.error
        return super().complete(request)


def _lm(engine):
    import dspy

    return dspy.LM("fake/rule", engine=engine, cache=False)


def test_an_id_naming_two_texts_in_two_files_stops_before_any_call(example_project):
    folder = example_project.parent
    first = json.loads((folder / "records.jsonl").read_text().splitlines()[0])
    _append(folder / "test.jsonl", [{"id": first["id"], "text": "a different message", "label": "billing"}])
    clash = rf"name different records in .*records.jsonl and .*test.jsonl.*'{first['id']}'"
    with pytest.raises(labelloop.DataError, match=clash):
        labelloop.load_project(example_project)


def test_the_same_record_in_two_files_is_one_question(example_project):
    folder = example_project.parent
    first = json.loads((folder / "records.jsonl").read_text().splitlines()[0])
    _append(folder / "test.jsonl", [{**first, "label": "billing"}])
    project = labelloop.load_project(example_project)
    zero_shot = labelloop.plan(project)[0]
    assert zero_shot["records"] == 281 and zero_shot["llm_calls"] == 280


@pytest.mark.parametrize("writer", ["jsonl", "parquet"])
def test_a_null_id_is_refused_with_its_row(tmp_path, writer):
    if writer == "jsonl":
        path = tmp_path / "records.jsonl"
        path.write_text('{"id": 1, "text": "fine"}\n{"id": null, "text": "no id"}\n')
    else:
        path = tmp_path / "records.parquet"
        pd.DataFrame({"id": pd.array([1, None], dtype="Int64"), "text": ["fine", "no id"]}).to_parquet(path)
    from labelloop.flows.config import DataSpec
    from labelloop.flows.io import read_records

    with pytest.raises(labelloop.DataError, match=r"1 record\(s\) have no 'id' \(null\), e.g. row 2"):
        read_records(DataSpec(path=path))


def test_a_whole_float_id_keeps_its_integer_form(tmp_path):
    path = tmp_path / "records.parquet"
    pd.DataFrame({"id": [1.0, 2.0], "text": ["a", "b"]}).to_parquet(path)
    from labelloop.flows.config import DataSpec
    from labelloop.flows.io import read_records

    assert read_records(DataSpec(path=path))["id"].tolist() == ["1", "2"]


def test_a_text_too_long_for_the_context_is_shortened_and_train_is_not_blocked(example_project):
    long_text = "My parcel is late. " * 200
    _append(example_project.parent / "records.jsonl", [{"id": "long-1", "text": long_text}])
    error = ValueError("Requested tokens (3100) exceed context window of 2048")
    lm = _lm(FailingEngine(lambda text: len(text) > 1000, error))
    project = labelloop.load_project(example_project)
    run_dir = labelloop.label(project, lm=lm)
    summary = pd.read_csv(run_dir / "lf_summary.csv").set_index("labeler")
    assert summary.loc["zero_shot", "truncated"] == 1 and summary.loc["asks_about_money", "truncated"] == 1
    votes = pd.read_parquet(run_dir / "votes_train.parquet").set_index("id")
    assert votes.loc["long-1", "zero_shot"] == "shipping"  # answered on the shortened text
    assert "shortened to fit the model's context" in (run_dir / "report.md").read_text()
    assert all(row["llm_calls"] == 0 for row in labelloop.plan(project))
    labelloop.train(project)  # nothing missing: train runs


def test_a_record_that_always_fails_is_retried_then_abstains(example_project):
    _append(example_project.parent / "records.jsonl", [{"id": "poison", "text": "poison pill, about my parcel"}])
    _config(example_project, max_attempts=2)
    lm = _lm(FailingEngine(lambda text: "poison pill" in text, RuntimeError("the model returned garbage")))
    project = labelloop.load_project(example_project)
    labelloop.label(project, lm=lm)
    first = {row["labeler"]: row for row in labelloop.plan(project)}
    assert (first["zero_shot"]["retrying"], first["zero_shot"]["failed"], first["zero_shot"]["llm_calls"]) == (1, 0, 1)
    with pytest.raises(labelloop.StateError, match="2 LLM answers are not stored yet"):
        labelloop.train(project)  # a record still to be retried blocks train
    run_dir = labelloop.label(project, lm=lm)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["llm_calls"] == 0 and metrics["records"]["failed"] == {"zero_shot": 1, "asks_about_money": 1}
    assert "records without an LLM answer" in (run_dir / "report.md").read_text()
    summary = pd.read_csv(run_dir / "lf_summary.csv").set_index("labeler")
    assert summary.loc["zero_shot", "llm_failures"] == 1
    after = {row["labeler"]: row for row in labelloop.plan(project)}
    assert (after["zero_shot"]["failed"], after["zero_shot"]["retrying"], after["zero_shot"]["llm_calls"]) == (1, 0, 0)
    calls = lm.engine.calls
    labelloop.train(project)  # given up on: it abstains, and train does not ask
    assert lm.engine.calls == calls


def test_a_dead_llm_stops_the_run_in_one_line_and_blames_no_record(example_project, monkeypatch):
    engine = FailingEngine(lambda text: True, ConnectionError("connection reset by peer"))
    monkeypatch.setattr("labelloop.programs.lm.make_lm", lambda *a, **k: _lm(engine))
    monkeypatch.setattr("labelloop.programs.calls.backoff", lambda *a, **k: 0.0, raising=False)
    result = CliRunner().invoke(app, ["label", str(example_project), "--no-prefect"])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "5 LLM calls in a row failed" in lines[0] and "connection reset" in lines[0]
    project = labelloop.load_project(example_project)
    assert all(row["retrying"] == 0 and row["failed"] == 0 for row in labelloop.plan(project))


def test_student_is_kept_until_enough_records_are_new(example_project):
    _config(example_project, student={"features": "tfidf", "retrain": "on_change", "retrain_new_fraction": 0.1})
    lm = rule_lm()
    first = labelloop.run(labelloop.load_project(example_project), lm=lm)
    assert json.loads((first / "metrics.json").read_text())["student"]["reason"] == "no earlier student"
    records = example_project.parent / "records.jsonl"
    rows = [json.loads(line) for line in records.read_text().splitlines()]
    _append(records, [{"id": f"new-{i}", "text": r["text"] + " (again)"} for i, r in enumerate(rows[:8])])  # 5%
    second = labelloop.run(labelloop.load_project(example_project), lm=lm)
    metrics = json.loads((second / "metrics.json").read_text())
    assert metrics["records"]["new"] == 8 and metrics["llm_calls"] == 16  # two LLM labelers ask about the new ones only
    student = metrics["student"]
    assert (student["retrain"], student["kept_from"], student["trained_in"]) == (False, first.name, first.name)
    assert (second / "model.skops").read_bytes() == (first / "model.skops").read_bytes()
    _append(records, [{"id": f"newer-{i}", "text": r["text"] + " (once more)"} for i, r in enumerate(rows[:12])])
    third = labelloop.run(labelloop.load_project(example_project), lm=lm)
    student = json.loads((third / "metrics.json").read_text())["student"]
    assert student["retrain"] and student["new_fraction"] >= 0.1 and student["trained_in"] == third.name
