"""What Prefect's database keeps of a run: the config path and the options, never a record's text or gold label.

Regression for the design in which flows took the loaded ``Project`` (its DataFrames of records) as a
parameter, so every run copied the whole dataset into Prefect's database and onto any remote server.
Also: ``--no-prefect`` never starts Prefect, ``--prefect`` goes through a flow run.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from labelloop.flows.cli import app
from labelloop.flows.orchestration import run_project_flow

pytestmark = pytest.mark.usefixtures("prefect_harness")

SPLITS = ("records.jsonl", "dev.jsonl", "test.jsonl")


def _records(config: Path) -> list[dict]:
    return [json.loads(line) for name in SPLITS for line in (config.parent / name).read_text().splitlines() if line]


def _strings(value) -> Iterator[str]:
    """Every string in a JSON value, keys included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def _stored_since(since: datetime) -> list[dict]:
    """The flow runs started since ``since`` as Prefect's API returns them, each with its task runs and logs."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas import filters
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=10)  # logs reach the API in batches
    with get_client(sync_client=True) as client:
        started = filters.FlowRunFilter(start_time=filters.FlowRunFilterStartTime(after_=since))
        runs = client.read_flow_runs(flow_run_filter=started)
        ids = [run.id for run in runs]
        tasks = client.read_task_runs(flow_run_filter=filters.FlowRunFilter(id=filters.FlowRunFilterId(any_=ids))) if ids else []
        logs = client.read_logs(log_filter=filters.LogFilter(flow_run_id=filters.LogFilterFlowRunId(any_=ids))) if ids else []
        flows = {run.flow_id: client.read_flow(run.flow_id).name for run in runs}
    return [{"flow": flows[run.flow_id], "flow_run": run.model_dump(mode="json"),
             "task_runs": [t.model_dump(mode="json") for t in tasks if t.flow_run_id == run.id],
             "logs": [log.model_dump(mode="json") for log in logs if log.flow_run_id == run.id]} for run in runs]


def _leaks(stored: list[dict], records: list[dict]) -> list[str]:
    """Record texts, and gold labels as whole values, found in what Prefect stored (a label inside a sentence is not one)."""
    strings = set(_strings(stored))
    blob = "\n".join(strings)
    found = [r["text"] for r in records if r["text"] in blob]
    return found + sorted({r["label"] for r in records if "label" in r} & strings)


def test_flow_runs_keep_the_config_path_and_options_only(example_project, fake_lm):
    since = datetime.now(UTC)
    run_dir = run_project_flow(example_project, train=False)
    assert (run_dir / "metrics.json").is_file() and fake_lm.engine.calls > 0
    stored = _stored_since(since)
    assert [s["flow"] for s in stored] == ["run-project"]
    run = stored[0]["flow_run"]
    assert run["parameters"] == {"config": str(example_project.resolve()), "train": False, "shards": 0,
                                 "stored_only": False}
    assert run["state"]["type"] == "COMPLETED"
    assert _leaks(stored, _records(example_project)) == []
    # labelloop's own lines (per labeler: calls, reuse, failures) reach the run's log on the server
    lines = [log["message"] for log in stored[0]["logs"] if log["name"] == "labelloop"]
    assert any(line.startswith("zero_shot: ") and "LLM calls" in line for line in lines), lines


def test_the_check_finds_the_records_a_flow_taking_the_project_stores(example_project, fake_lm):
    """The old design, rebuilt here: the same check must see the dataset in its flow run."""
    from prefect import flow

    from labelloop.flows.project import load_project
    from labelloop.flows.run_project import run_project

    old_design = flow(name="run-project-old-design")(run_project)
    since = datetime.now(UTC)
    old_design(load_project(example_project), train=False, show_progress=False)
    stored = _stored_since(since)
    assert [s["flow"] for s in stored] == ["run-project-old-design"]
    assert set(stored[0]["flow_run"]["parameters"]) != {"config", "train", "shards"}
    records = _records(example_project)
    assert len(_leaks(stored, records)) > len(records)  # every text, and the gold labels


def test_label_without_prefect_starts_no_flow_and_no_server(example_project, fake_lm, monkeypatch):
    from prefect import Flow
    from prefect.server.api.server import SubprocessASGIServer

    started, since = [], datetime.now(UTC)
    monkeypatch.setattr(Flow, "__call__", lambda self, *a, **k: started.append(self.name) or pytest.fail("a flow ran"))
    monkeypatch.setattr(SubprocessASGIServer, "start", lambda self, *a, **k: started.append("server"))
    result = CliRunner().invoke(app, ["label", str(example_project), "--no-prefect", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert started == [] and "LLM calls this run: " in result.output
    assert _stored_since(since) == []  # and the (session's) Prefect API saw no flow run


def test_label_with_prefect_goes_through_one_flow_run(example_project, fake_lm):
    since = datetime.now(UTC)
    result = CliRunner().invoke(app, ["label", str(example_project), "--prefect", "--no-progress"])
    assert result.exit_code == 0, result.output
    stored = _stored_since(since)
    assert [s["flow"] for s in stored] == ["run-project"]
    assert stored[0]["flow_run"]["parameters"]["config"] == str(example_project.resolve())
    assert stored[0]["flow_run"]["state"]["type"] == "COMPLETED"
