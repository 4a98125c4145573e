"""`labelloop schedule` against a real Prefect server: scheduled runs happen, the second asks the LLM nothing, stopping
the serve process leaves the schedule active, and the flow runs' parameters are paths and options, never records.

Everything is a separate process on loopback, as in production: ``prefect server start`` (its own PREFECT_HOME),
``labelloop schedule`` (the runner, which starts each flow run in a subprocess of its own) and, in this process,
the OpenAI-compatible fake that answers the LLM labelers.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

import labelloop
from tests.fake_openai import FakeOpenAIServer, answered_by

PREFECT = shutil.which("prefect", path=str(Path(sys.executable).parent)) or shutil.which("prefect")
needs_prefect_cli = pytest.mark.skipif(PREFECT is None, reason="the `prefect` command is not installed")

DEPLOYMENT = "scheduled-test"
INTERVAL_S = 10
WAIT_S = 240


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, n: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:]) if path.exists() else ""


def _environment(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}  # no profile or API of the caller's
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_LOGGING_LEVEL="INFO", **extra)
    return env


def _start(args: list[str], env: dict[str, str], log: Path, cwd: Path) -> subprocess.Popen:
    """A process in a session (and process group) of its own, so that cleanup reaches the flow runs it starts."""
    with log.open("wb") as out:
        return subprocess.Popen(args, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _kill(proc: subprocess.Popen | None) -> None:
    if proc is not None and proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    if proc is not None:
        proc.wait(timeout=30)


@pytest.fixture
def prefect_server(tmp_path):
    """``prefect server start`` on a free loopback port with fast scheduler loops; yields its API URL."""
    port, log = _free_port(), tmp_path / "server.log"
    env = _environment(tmp_path / "server-home", PREFECT_SERVER_UI_ENABLED="false",
                       PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS="1",
                       PREFECT_SERVER_SERVICES_SCHEDULER_RECENT_DEPLOYMENTS_LOOP_SECONDS="1",
                       PREFECT_SERVER_SERVICES_FOREMAN_ENABLED="false")
    proc = _start([PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)], env, log, tmp_path)
    url = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:  # it could not even start (no sockets, a broken install): not this project's bug
                pytest.skip(f"`prefect server start` exited with {proc.returncode}:\n{_tail(log)}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"the Prefect server did not answer /api/health in 120 s:\n{_tail(log)}"
            time.sleep(0.5)
        yield url
    finally:
        _kill(proc)


def _flow_runs(client, deployment_id) -> list:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.client.schemas.sorting import FlowRunSort

    return client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
                                 sort=FlowRunSort.EXPECTED_START_TIME_ASC)


@pytest.mark.parametrize(("args", "api_url", "expected"), [
    (["--interval", "60"], None, "a schedule needs a Prefect server that keeps running: start one with `prefect server start`"),
    (["--cron", "0 2 * * *", "--interval", "60"], None, "give exactly one of --cron"),
    ([], "http://127.0.0.1:9/api", "give exactly one of --cron"),
    (["--cron", "0 2 * *"], "http://127.0.0.1:9/api", "--cron '0 2 * *' is not a valid cron string"),
    (["--interval", "0"], "http://127.0.0.1:9/api", "--interval must be a positive number of seconds, got 0"),
    (["--interval", "60"], "http://127.0.0.1:9/api", "cannot reach the Prefect API at http://127.0.0.1:9/api"),
], ids=["no-api", "both", "neither", "bad-cron", "zero-interval", "unreachable"])
def test_schedule_refuses_in_one_line(example_project, monkeypatch, args, api_url, expected):
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from typer.testing import CliRunner

    from labelloop.flows.cli import app

    if api_url is None:
        monkeypatch.delenv("PREFECT_API_URL", raising=False)
        settings = temporary_settings(restore_defaults={PREFECT_API_URL})  # no profile's or test harness's API either
    else:
        monkeypatch.setenv("PREFECT_API_URL", api_url)
        settings = temporary_settings({PREFECT_API_URL: api_url})
    with settings:
        result = CliRunner().invoke(app, ["schedule", str(example_project), *args])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], result.output


@needs_prefect_cli
def test_scheduled_runs_reuse_answers_and_stopping_keeps_the_schedule(example_project, tmp_path, prefect_server):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with FakeOpenAIServer() as llm:
        config = answered_by(example_project, llm.url, keep=(20, 10, 10), max_concurrency=4)
        expected = sum(row["llm_calls"] for row in labelloop.plan(labelloop.load_project(config)))
        assert expected == 2 * (20 + 10 + 10)  # two LLM labelers over every split
        records = [json.loads(line) for name in ("records.jsonl", "dev.jsonl", "test.jsonl")
                   for line in (config.parent / name).read_text().splitlines()]
        log = tmp_path / "schedule.log"
        env = _environment(tmp_path / "client-home", PREFECT_API_URL=prefect_server, PREFECT_RUNNER_POLL_FREQUENCY="1",
                           OPENAI_API_KEY="sk-test-schedule-0123456789")
        command = [sys.executable, "-c", "from labelloop.flows.cli import main; main()", "schedule", str(config),
                   "--interval", str(INTERVAL_S), "--name", DEPLOYMENT, "--no-train"]
        serve = _start(command, env, log, tmp_path)  # another folder: the deployment must not depend on the cwd
        try:
            with temporary_settings({PREFECT_API_URL: prefect_server}), get_client(sync_client=True) as client:
                deadline, deployment, runs, after_first = time.monotonic() + WAIT_S, None, [], None
                while True:
                    assert serve.poll() is None, f"labelloop schedule exited with {serve.returncode}:\n{_tail(log)}"
                    if deployment is None:
                        try:
                            deployment = client.read_deployment_by_name(f"run-project/{DEPLOYMENT}")
                        except Exception:  # not registered yet
                            pass
                    else:
                        runs = _flow_runs(client, deployment.id)
                        bad = [r for r in runs if r.state_type and r.state_type.value in ("FAILED", "CRASHED")]
                        assert not bad, f"a scheduled run failed: {bad[0].state}\n{_tail(log)}"
                        done = [r for r in runs if r.state_type and r.state_type.value == "COMPLETED"]
                        if done and after_first is None:
                            after_first = llm.requests  # the second run cannot have asked anything yet (limit=1)
                        if len(done) >= 2:
                            break
                    assert time.monotonic() < deadline, (f"no two completed scheduled runs in {WAIT_S} s: "
                                                         f"{[(r.name, r.state_name) for r in runs]}\n{_tail(log)}")
                    time.sleep(1)
                assert after_first == expected  # the first run asked every missing answer once
                assert llm.requests == expected  # the second asked none: every answer came from the vote store
                for run in done:
                    assert run.parameters == {"config": str(config.resolve()), "train": False, "shards": 0}
                dumped = json.dumps([r.model_dump(mode="json") for r in runs])
                assert not [r["text"] for r in records if r["text"] in dumped]

                serve.send_signal(signal.SIGINT)  # Ctrl-C
                serve.wait(timeout=60)
                assert serve.returncode == 0, _tail(log)
                assert "its schedule is still active" in log.read_text(), _tail(log)
                deployment = client.read_deployment(deployment.id)
                assert not deployment.paused and deployment.schedules
                assert all(s.active for s in deployment.schedules)
        finally:
            _kill(serve)
    run_dirs = sorted(p for p in (config.parent / "runs").iterdir() if (p / "metrics.json").is_file())
    metrics = [json.loads((p / "metrics.json").read_text()) for p in run_dirs]
    assert len(metrics) >= 2, run_dirs
    assert [m["llm_calls"] for m in metrics[:2]] == [expected, 0]
    assert metrics[1]["records"]["answers_reused"] == expected
