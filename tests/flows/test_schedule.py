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
import yaml

import labelloop
from tests.fake_openai import FakeOpenAIServer

PREFECT = shutil.which("prefect", path=str(Path(sys.executable).parent)) or shutil.which("prefect")
pytestmark = pytest.mark.skipif(PREFECT is None, reason="the `prefect` command is not installed")

DEPLOYMENT = "scheduled-test"
INTERVAL_S = 10
WAIT_S = 240


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, n: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:]) if path.exists() else ""


def _small_project(config: Path, api_base: str) -> Path:
    """The example trimmed to 20 records and 10 dev/test records each, answered by ``api_base``."""
    cfg = yaml.safe_load(config.read_text())
    cfg["lm"] = {"model": "openai/fake-model", "api_base": api_base, "max_concurrency": 4}
    config.write_text(yaml.safe_dump(cfg))
    for name, keep in (("records.jsonl", 20), ("dev.jsonl", 10), ("test.jsonl", 10)):
        path = config.parent / name
        path.write_text("".join(path.read_text().splitlines(keepends=True)[:keep]))
    return config


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


def test_scheduled_runs_reuse_answers_and_stopping_keeps_the_schedule(example_project, tmp_path, prefect_server):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with FakeOpenAIServer() as llm:
        config = _small_project(example_project, llm.url)
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
