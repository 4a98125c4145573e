"""Prefect flows over the plain functions: what a Prefect server, a schedule and a cluster see.

Flows take a config path and options, never records: Prefect's database (and a remote server)
keep names, counts and paths, not texts or labels. Each flow loads the project itself.

- ``run_project_flow``: label, denoise, train, evaluate and report (``labelloop run`` / ``label``).
  With ``runner="dask"`` the LLM answers are first asked by ``label_shard`` tasks on a Dask
  cluster (``prefect-dask``); they commit into the shared vote store and claim what they ask,
  so each call is paid once and the run that follows reads every answer from the store.
  The run's scores and labeler summary become table artifacts, beside a markdown artifact with
  the path of its ``report.html`` (``labelloop.flows.report_html.publish_artifacts``): numbers and names.
- ``optimize_flow``, ``bootstrap_flow``, ``propose_lfs_flow``: ``labelloop optimize``, ``bootstrap`` and ``propose-lfs``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from prefect import flow, task
from prefect.task_runners import TaskRunner

from labelloop.flows.config import ConfigError, load_config
from labelloop.flows.project import load_project

logger = logging.getLogger("labelloop")

RUNNERS = ("local", "dask")
DEFAULT_SHARDS = 4  # labeling tasks per LLM labeler when the cluster's size is unknown (no workers yet)


def _log_progress() -> None:
    """labelloop's INFO lines (progress, calls per labeler) into the run's log: a scheduled run has no terminal.

    They reach Prefect (console and server) when ``PREFECT_LOGGING_EXTRA_LOGGERS`` names ``labelloop``,
    as the command line sets it; Prefect gives its extra loggers its own level (WARNING by default).
    """
    logging.getLogger("labelloop").setLevel(logging.INFO)


@task(name="label-shard")
def label_shard(config: str, labeler: str, shard: int, shards: int) -> dict:
    """Ask one labeler's missing answers for every ``shards``-th record (from ``shard``); returns counts only.

    With an ``llm_budget`` a shard asks only what is answered whatever the budget (gold splits, extra
    items); the budget's rounds then run in the flow, which picks the train records to ask.

    It takes a path, not records, and returns counts, not answers: what Prefect and Dask carry stays
    small, and the answers reach the flow through the shared vote store, committed one by one.
    """
    from labelloop.flows.label_dataset import answer_labeler, lm_getter, unbudgeted_items
    from labelloop.flows.store import VoteStore

    _log_progress()
    project = load_project(config)
    target = next(lf for lf in project.llm_labelers if lf.name == labeler)
    items = unbudgeted_items(project, target)[shard::shards]
    with VoteStore(project.config.store) as store:
        got = answer_labeler(project, target, store, lm_getter(project), items=items, show_progress=False)
    return {"labeler": labeler, "shard": shard, "records": len(items), "llm_calls": got.calls, "failed": len(got.failed)}


def _task_runner(runner: str, address: str | None) -> TaskRunner | None:
    """The Prefect task runner for ``runner``: None (tasks in this process) or a ``DaskTaskRunner``.

    Without an address Dask starts a local cluster of worker processes (one thread each: a task
    already runs ``lm.max_concurrency`` asks in threads of its own), torn down with the flow run.
    """
    if runner not in RUNNERS:
        raise ConfigError(f"--runner must be one of {RUNNERS}, got {runner!r}")
    if runner == "local":
        return None
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError:
        raise ConfigError('--runner dask needs prefect-dask: pip install "labelloop[dask]"') from None
    if address:
        return DaskTaskRunner(address=address)
    workers = max(1, min(DEFAULT_SHARDS, os.cpu_count() or 1))
    return DaskTaskRunner(cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "processes": True})


def _worker_slots() -> int:
    """Tasks the flow's Dask cluster runs at once (its worker threads); 0 if unknown (no Dask, no workers yet)."""
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    client = getattr(ctx.task_runner, "client", None) if ctx else None  # DaskTaskRunner: connects on first use
    try:
        return sum(client.nthreads().values()) if client is not None else 0
    except Exception:  # a client that cannot answer: fall back to the default
        return 0


@flow(name="run-project")
def _run_project_flow(config: str, train: bool = True, shards: int | None = 0, stored_only: bool = False) -> dict:
    """Label (first in ``shards`` tasks per LLM labeler, if any), denoise, train, evaluate and report.

    ``shards``: 0 asks every answer inside ``run_project``; None, one task per worker thread of the
    flow's Dask cluster (``DEFAULT_SHARDS`` if it has none yet). The tasks claim what they ask, so
    overlapping tasks or runs still pay for each answer once. ``stored_only``: as ``run_project``'s.
    """
    from prefect.states import Failed

    from labelloop.flows.report_html import publish_artifacts
    from labelloop.flows.run_project import run_project
    from labelloop.programs.errors import LabelloopError

    _log_progress()
    try:
        project = load_project(config)
        n = (_worker_slots() or DEFAULT_SHARDS) if shards is None else shards
        calls = 0
        if n and project.llm_labelers:
            futures = [label_shard.submit(config, lf.name, i, n) for lf in project.llm_labelers for i in range(n)]
            done = [f.result() for f in futures]  # raises the first failed task's error
            calls = sum(d["llm_calls"] for d in done)
            logger.info("label shards: %d LLM calls over %d tasks, %d records failed", calls, len(done),
                        sum(d["failed"] for d in done))
        run_dir = run_project(project, train=train, show_progress=False, calls_in_tasks=calls, stored_only=stored_only)
        publish_artifacts(run_dir)  # scores and labeler tables, the report's path: names and counts, no texts
        return {"run_dir": str(run_dir)}
    except LabelloopError as exc:
        # a user's error, not a crash: the run is Failed with its message, and the caller raises it (one
        # line in the CLI) instead of Prefect logging a traceback
        return Failed(message=f"{type(exc).__name__}: {exc}", data=exc)


def run_project_flow(config: str | Path, *, train: bool = True, runner: str = "local", address: str | None = None,
                     shards: int | None = None, stored_only: bool = False) -> Path:
    """``run_project`` as a Prefect flow run; returns the run folder.

    Args:
        config: the project config's path (resolved: Dask workers load it by path, so on other
            machines it must be at the same path, as must the vote store).
        train: also train the student.
        runner: ``local`` (in this process) or ``dask`` (labeling tasks on a Dask cluster).
        address: the Dask scheduler (``tcp://host:8786``); a local cluster when None.
        shards: labeling tasks per LLM labeler with ``dask`` (default: the cluster's worker threads).
        stored_only: with an ``llm_budget``, ask nothing on the train split (``labelloop train``).
    """
    task_runner = _task_runner(runner, address)
    if task_runner is None:
        return Path(_run_project_flow(str(Path(config).resolve()), train=train, shards=0, stored_only=stored_only)["run_dir"])
    if shards is not None and shards < 1:
        raise ConfigError(f"shards must be at least 1, got {shards}")
    flow_fn = _run_project_flow.with_options(task_runner=task_runner)
    return Path(flow_fn(str(Path(config).resolve()), train=train, shards=shards, stored_only=stored_only)["run_dir"])


@flow(name="optimize")
def optimize_flow(config: str, labeler: str | None = None) -> list[dict]:
    """``labelloop optimize`` as a flow: compile the optimizable labelers and save them."""
    from labelloop.flows.optimize import optimize_project

    return optimize_project(load_project(config), labeler)


@flow(name="bootstrap-taxonomy")
def bootstrap_flow(config: str, update: bool = False, show_progress: bool = False):
    """``labelloop bootstrap`` as a flow: propose (or refine) the taxonomy and write it."""
    from labelloop.flows.bootstrap import bootstrap_taxonomy

    return bootstrap_taxonomy(load_config(Path(config)), update=update, show_progress=show_progress)


@flow(name="propose-lfs")
def propose_lfs_flow(config: str, overwrite: bool = False, show_progress: bool = False):
    """``labelloop propose-lfs`` as a flow: the LLM writes labeling functions, scored on gold dev, and they are written."""
    from labelloop.flows.propose_lfs import propose_lfs

    project = load_project(config, skip_missing_includes=True)
    return propose_lfs(project, overwrite=overwrite, show_progress=show_progress)


def serve_schedule(config: str | Path, *, cron: str | None = None, interval: float | None = None, name: str | None = None,
                   train: bool = True, on_serving: Callable[[dict], None] | None = None) -> dict:
    """Serve ``run-project`` on a schedule from a Prefect server; blocks until stopped (Ctrl-C, SIGTERM).

    A schedule needs a server that outlives this process (``prefect server start`` or a remote
    ``PREFECT_API_URL``): Prefect's temporary in-process server would forget it on exit, so that
    case is refused. The deployment's parameters are the config's absolute path and the options
    only; every run loads the project itself, so no record ever reaches Prefect's database.
    ``pause_on_shutdown=False``: stopping this process (a restart, a deploy) leaves the schedule
    active; runs that fall due meanwhile wait as Late and start when something serves it again.
    Runs of one project go one at a time (``limit=1``): they share a vote store and run folders.

    Args:
        config: the project config's path.
        cron: a cron string (UTC), e.g. ``"0 2 * * *"``; exactly one of ``cron`` and ``interval``.
        interval: seconds between runs.
        name: the deployment's name (default: the project's ``name:``); the full name is ``run-project/NAME``.
        train: also train the student in each run.
        on_serving: called with the returned dict once everything is checked, just before serving starts.

    Returns:
        ``deployment``, ``schedule`` (words), ``config``, ``parameters`` and ``api_url``, once serving stops.
    """
    import os

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.schedules import CronSchedule
    from prefect.settings import get_current_settings
    from prefect.types.entrypoint import EntrypointType
    from pydantic import ValidationError

    from labelloop.programs.errors import StateError

    if (cron is None) == (interval is None):
        raise ConfigError('give exactly one of --cron "0 2 * * *" and --interval SECONDS')
    if cron is not None:
        try:
            CronSchedule(cron=cron)
        except ValidationError:
            raise ConfigError(f"--cron {cron!r} is not a valid cron string (five fields: minute hour day month "
                              "weekday, e.g. '0 2 * * *' for 02:00 UTC daily)") from None
        when = f"cron {cron!r} UTC"
    else:
        if not interval > 0:
            raise ConfigError(f"--interval must be a positive number of seconds, got {interval:g}")
        when = f"every {interval:g} s"
    api_url = os.environ.get("PREFECT_API_URL") or get_current_settings().api.url
    if not api_url:
        raise StateError("a schedule needs a Prefect server that keeps running: start one with `prefect server start`, "
                         "then `export PREFECT_API_URL=http://127.0.0.1:4200/api` (or the URL of a remote server)")
    project = load_project(config)  # a broken project fails here, not at 02:00
    with get_client(sync_client=True) as client:
        unreachable = client.api_healthcheck()
    if unreachable is not None:
        raise StateError(f"cannot reach the Prefect API at {api_url} ({type(unreachable).__name__}); is "
                         "`prefect server start` running there?")
    name = name or project.config.name
    parameters = {"config": str(Path(config).resolve()), "train": train, "shards": 0}
    info = {"deployment": f"{_run_project_flow.name}/{name}", "schedule": when, "config": parameters["config"],
            "parameters": parameters, "api_url": api_url}
    if on_serving is not None:
        on_serving(info)
    try:
        _run_project_flow.serve(name=name, cron=cron, interval=interval, parameters=parameters, pause_on_shutdown=False,
                                limit=1, description=f"labelloop run of {parameters['config']}",
                                print_starting_message=False, entrypoint_type=EntrypointType.MODULE_PATH)
    except KeyboardInterrupt:  # Prefect catches the first Ctrl-C itself; a second one lands here
        pass
    return info
