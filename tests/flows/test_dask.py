"""``--runner dask``: label shards on a real Dask cluster (two worker processes) against a loopback OpenAI server.

The same small project is labeled twice into fresh stores, in this process and on the cluster;
the votes and probabilistic labels must match, and the cluster must pay for each question once
(its tasks share one SQLite store and claim what they ask) and for none on a rerun.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pandas as pd
import pytest

from tests.fake_openai import FakeOpenAIServer, answered_by, calls_to_make

pytest.importorskip("prefect_dask")
distributed = pytest.importorskip("distributed")

API_KEY = "sk-test-dask-0123456789abcdef"
RESULTS = ("votes_*.parquet", "probabilistic_labels.parquet")


def _results(run_dir: Path) -> dict[str, pd.DataFrame]:
    found = {p.name: pd.read_parquet(p) for pattern in RESULTS for p in sorted(run_dir.glob(pattern))}
    assert any(name.startswith("votes_") for name in found) and "probabilistic_labels.parquet" in found, found
    return found


class _Lines(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def said():
    """The labelloop logger's messages, from a handler on the logger itself (Prefect's logging setup keeps them from caplog)."""
    logger, lines = logging.getLogger("labelloop"), _Lines()
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(lines)
    try:
        yield lines.lines
    finally:
        logger.removeHandler(lines)
        logger.setLevel(level)


def test_dask_shards_match_the_local_run_and_pay_once(example_project, tmp_path, monkeypatch, said, prefect_harness):
    from labelloop.flows.orchestration import run_project_flow

    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)  # before the cluster starts: its worker processes inherit it
    with FakeOpenAIServer() as server:
        local_cfg = answered_by(example_project, server.url, keep=(30, 10, 10), max_concurrency=2)
        dask_cfg = tmp_path / "dask" / "config.yaml"
        shutil.copytree(local_cfg.parent, dask_cfg.parent)  # same project and URL (part of the answers' key), no store yet
        missing = calls_to_make(local_cfg)
        assert missing == calls_to_make(dask_cfg) > 0

        local_run = run_project_flow(local_cfg, train=False)
        assert server.requests == missing

        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
        try:
            before = server.requests
            dask_run = run_project_flow(dask_cfg, train=False, runner="dask", address=cluster.scheduler_address, shards=3)
            assert server.requests - before == missing  # 2 labelers x 3 shards over 2 workers, each question paid once
            assert calls_to_make(dask_cfg) == 0
            metrics = json.loads((dask_run / "metrics.json").read_text())
            assert metrics["llm_calls"] == metrics["llm_calls_in_tasks"] == missing  # the shards asked them all
            assert server.authorization[-1] == f"Bearer {API_KEY}"  # the workers saw the key

            before = server.requests
            said.clear()
            rerun = run_project_flow(dask_cfg, train=False, runner="dask", address=cluster.scheduler_address)
            assert server.requests == before  # every answer came from the store
            # default shards: one task per worker thread (2) and labeler (2)
            assert "label shards: 0 LLM calls over 4 tasks, 0 records failed" in said
        finally:
            cluster.close()

    local, sharded = _results(local_run), _results(dask_run)
    assert sorted(local) == sorted(sharded)
    for name, frame in local.items():
        pd.testing.assert_frame_equal(frame, sharded[name], obj=name)
    for name, frame in _results(rerun).items():
        pd.testing.assert_frame_equal(frame, sharded[name], obj=f"rerun {name}")


def test_runner_options(example_project):
    from labelloop.flows.config import ConfigError
    from labelloop.flows.orchestration import _task_runner, run_project_flow

    assert _task_runner("local", None) is None
    assert _task_runner("dask", "tcp://10.0.0.5:8786").address == "tcp://10.0.0.5:8786"
    local = _task_runner("dask", None)  # nothing starts until a flow runs with it
    assert local.address is None and local.cluster_kwargs["processes"] and local.cluster_kwargs["threads_per_worker"] == 1

    with pytest.raises(ConfigError, match="--runner must be one of"):
        run_project_flow(example_project, runner="spark")
    with pytest.raises(ConfigError, match="shards must be at least 1"):
        run_project_flow(example_project, runner="dask", address="tcp://127.0.0.1:1", shards=0)
