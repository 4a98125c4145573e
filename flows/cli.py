"""The `labelloop` command line: a thin layer that parses arguments and prints results."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

# How the command line configures the process (a library import sets nothing): no network for
# LiteLLM's cost map, a quiet Prefect, and time for its local server to start on a small machine.
ENVIRONMENT = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "PREFECT_LOGGING_LEVEL": "WARNING",
               "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
               "HF_HUB_OFFLINE": "1", "PREFECT_LOGGING_EXTRA_LOGGERS": "labelloop"}

app = typer.Typer(help="Turn unlabeled text into a trained classifier with an LLM in the loop.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
console = Console()
CONFIG = typer.Argument(..., help="project config YAML", exists=False)


def _guard(fn, *args, **kwargs):
    """Run ``fn``; any labelloop error becomes one line on the console and exit code 2."""
    from labelloop.programs.errors import LabelloopError

    try:
        return fn(*args, **kwargs)
    except KeyboardInterrupt:
        console.print("[bold red]interrupted:[/] every answer the LLM returned is stored; run the same command "
                      "again to continue")
        raise typer.Exit(130) from None
    except LabelloopError as exc:
        message = ""
        for line in filter(None, (x.strip() for x in str(exc).splitlines())):
            message += (" " if not message or message.endswith(":") else "; ") + line
        message = message.strip()
        console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
        raise typer.Exit(2) from None


def _print_run(run_dir: Path) -> None:
    import json

    metrics = json.loads((run_dir / "metrics.json").read_text())
    table = Table(title=f"{metrics['name']}: scores on gold records")
    cols = ("micro_f1", "macro_f1", "rp5", "rp10", "n") if metrics.get("task") == "multilabel" else \
        ("accuracy", "macro_f1", "coverage", "n")
    for col in ("split", "method", *cols):
        table.add_column(col)
    for split, rows in metrics["scores"].items():
        for method, s in rows.items():
            table.add_row(split, method, *(str(s.get(c, "")) for c in cols))
    if metrics["scores"]:
        console.print(table)
    console.print(f"LLM calls this run: {metrics['llm_calls']}  |  wall time: {metrics['wall_s']:.0f} s")
    records = metrics.get("records")
    if records:
        console.print(f"records in all files: {records['total']} ({records['new']} new or changed, {records['failed_records']} "
                      f"without some LLM answer)  |  LLM answers new: {records['answers_new']}, reused: "
                      f"{records['answers_reused']}")
        for name, n in records["failed"].items():
            if n:
                console.print(f"[bold yellow]warning:[/] {name}: {n} record(s) have no answer (their LLM calls failed "
                              "and they abstain); `labelloop plan` shows them, a later run retries them")
        for name, n in records["truncated"].items():
            if n:
                console.print(f"[yellow]note:[/] {name}: {n} record(s) were shortened to fit the model's context")
    if metrics.get("llm_budget"):
        b = metrics["llm_budget"]
        console.print(f"llm_budget: {b['spent']} of {b['max_answers']} answers spent on the train split "
                      f"({b['llm_calls']} LLM calls, {b['reused']} from the vote store), {b['unasked']} record x labeler "
                      f"pairs left unasked (they abstain); {b['stopped']}", soft_wrap=True)
    if metrics.get("student"):
        student = metrics["student"]
        console.print(f"student: {'trained' if student['retrain'] else 'kept from ' + student['kept_from']} "
                      f"({student['reason']})")
    quality = {s: q for s, q in metrics.get("gold_quality", {}).items() if isinstance(q, dict)}
    if any(q["flagged"] for q in quality.values()):
        counts = ", ".join(f"{q['flagged']} of {q['n']} {s}" for s, q in quality.items())
        console.print(f"[yellow]gold labels:[/] the run's models disagree with {counts} gold label(s) (gold_issues.csv, "
                      "most likely wrong first; `labelloop audit-gold CONFIG` asks the LLM)", soft_wrap=True)
    ranked = metrics.get("label_quality") or {}
    if ranked.get("n_ranked"):
        console.print(f"likely-wrong train labels: {ranked['flagged']} of {ranked['n_ranked']} flagged (label_issues.csv, "
                      "most likely wrong first; `labelloop review export CONFIG` sends the top ones to a person)",
                      soft_wrap=True)
    console.print(f"[bold green]outputs:[/] {run_dir}")
    for name in sorted(p.name for p in run_dir.iterdir()):
        console.print(f"  {name}")


def _refuse(message: str) -> None:
    from labelloop.programs.errors import ConfigError

    raise ConfigError(message)


def prefect_configured() -> bool:
    """Whether a Prefect API is set (``PREFECT_API_URL``, in the environment or the active Prefect profile)."""
    if os.environ.get("PREFECT_API_URL"):
        return True
    from prefect.settings import get_current_settings

    return bool(get_current_settings().api.url)


def _run(config: Path, *, train: bool, stored_only: bool = False, progress: bool = True, runner: str = "local",
         address: str | None = None, prefect: bool | None = None) -> None:
    from labelloop.flows.project import load_project
    from labelloop.flows.run_project import require_stored, run_project

    project = _guard(load_project, config)  # validate everything before anything runs
    if stored_only:
        _guard(require_stored, project)
    if address and runner != "dask":
        _guard(_refuse, "--address names a Dask scheduler; add --runner dask")
    if runner != "local" or (prefect if prefect is not None else prefect_configured()):
        from labelloop.flows.orchestration import run_project_flow

        run_dir = _guard(run_project_flow, config, train=train, runner=runner, address=address, stored_only=stored_only)
    else:  # no Prefect server to report to: skip starting a temporary one
        run_dir = _guard(run_project, project, train=train, show_progress=progress, stored_only=stored_only)
    _print_run(run_dir)


RUNNER = typer.Option("local", help="where labeling tasks run: local (this process) or dask (a Dask cluster)")
ADDRESS = typer.Option(None, help="Dask scheduler address (tcp://host:8786) for --runner dask; default: a local cluster")
PREFECT = typer.Option(None, "--prefect/--no-prefect",
                       help="run as a Prefect flow (default: when a Prefect API is configured, e.g. PREFECT_API_URL)")


@app.command()
def run(config: Path = CONFIG, progress: bool = typer.Option(True, help="show progress bars"), runner: str = RUNNER,
        address: str = ADDRESS, prefect: bool = PREFECT):
    """Label, denoise, train the student, evaluate and write a report (one run folder)."""
    _run(config, train=True, progress=progress, runner=runner, address=address, prefect=prefect)


@app.command()
def label(config: Path = CONFIG, progress: bool = typer.Option(True, help="show progress bars"), runner: str = RUNNER,
          address: str = ADDRESS, prefect: bool = PREFECT):
    """Run every labeler and the label model; write votes, probabilistic labels and the LF summary."""
    _run(config, train=False, progress=progress, runner=runner, address=address, prefect=prefect)


@app.command()
def train(config: Path = CONFIG, prefect: bool = PREFECT):
    """Train and evaluate the student from stored LLM answers only (no LLM call is made)."""
    _run(config, train=True, stored_only=True, progress=False, prefect=prefect)


@app.command()
def plan(config: Path = CONFIG):
    """Count the LLM calls and prompt tokens a run would make, before making any."""
    from labelloop.flows.plan import estimate_cost, plan_budget, plan_calls
    from labelloop.flows.project import load_project
    from labelloop.programs.lm import is_local

    project = _guard(load_project, config)
    rows = _guard(plan_calls, project)
    budget = plan_budget(project, rows)
    table = Table(title="LLM work for this run" if budget is None else "LLM work for this run without its llm_budget")
    cols = ("labeler", "records", "stored", "failed", "retrying", "llm_calls", "prompt_tokens")
    if budget is not None:
        cols += ("train_missing",)
    for col in cols:
        table.add_column(col, justify="right" if col != "labeler" else "left")
    for row in rows:
        table.add_row(*(str(row[c]) for c in cols))
    console.print(table)
    calls, tokens = sum(r["llm_calls"] for r in rows), sum(r["prompt_tokens"] for r in rows)
    if budget is None:
        console.print(f"total: {calls} LLM calls, ~{tokens} prompt tokens")
    else:
        share = f"fraction {budget['fraction']:g} of" if budget["fraction"] is not None else "max_calls, of"
        console.print(f"llm_budget: {budget['max_answers']} answers on the train split ({share} "
                      f"{budget['train_pairs']} record x LLM labeler pairs), in up to {budget['rounds']} rounds, "
                      f"{budget['random_share']:.0%} of each drawn at random; stored answers are free", soft_wrap=True)
        console.print(f"without the budget: {calls} LLM calls, ~{tokens} prompt tokens")
        calls, tokens = budget["llm_calls_at_most"], budget["prompt_tokens_at_most"]
        console.print(f"total: at most {calls} LLM calls, ~{tokens} prompt tokens ({budget['gold_calls']} on the gold "
                      f"splits, answered in full; at most {budget['train_answers_at_most']} of the "
                      f"{budget['train_missing']} train answers missing = min(budget, missing))", soft_wrap=True)
    failed = sum(r["failed"] for r in rows)
    if failed:
        console.print(f"[yellow]note:[/] {failed} answer(s) failed {project.config.max_attempts} times (max_attempts) "
                      "and are not asked again; those records abstain")
    model = project.config.lm.model
    cost = estimate_cost(model, calls, tokens)
    if cost is not None:
        console.print(f"estimated cost on {model}: ${cost:.4f} (list prices; the shared prompt prefix may be cached for less)")
    elif is_local(model):
        console.print(f"runs locally, no API cost; about {calls / 60:.0f} min on 2 CPU cores at ~1 s per call")
    if project.config.lm.api_base and calls:
        console.print(f"[yellow]note:[/] {model} is served over an OpenAI-compatible API: set lm.max_concurrency "
                      f"(now {project.config.lm.max_concurrency}) to the server's parallel slots (llama.cpp --parallel, "
                      "vLLM --max-num-seqs, OLLAMA_NUM_PARALLEL); more only queues requests at the server, and on a "
                      "single-slot llama.cpp server it evicts the cached prompt prefix between labelers", soft_wrap=True)


@app.command()
def optimize(config: Path = CONFIG, labeler: str = typer.Option(None, help="only this irr labeler")):
    """Compile the Infer-Retrieve-Rank labelers on the gold dev records; later runs use the result."""
    from labelloop.flows.optimize import optimize_project
    from labelloop.flows.project import load_project

    project = _guard(load_project, config)
    for row in _guard(optimize_project, project, labeler):
        scores = ", ".join(f"{'zero-shot' if c['seed'] == -3 else 'seed ' + str(c['seed'])}: {c['score']}"
                           for c in row["candidates"])
        console.print(f"{row['labeler']}: demos {row['demos']}; candidates (RP@k % on the dev sample) {scores or 'n/a'}; "
                      f"{row['seconds']:.0f} s")
        console.print(f"[bold green]saved[/] {row['path']}: `labelloop run` now uses it (its answers are stored "
                      "apart from the zero-shot program's; `labelloop plan` shows the calls)")


@app.command("audit-gold")
def audit_gold_command(config: Path = CONFIG,
                       phrasings: int = typer.Option(3, help="how many fixed phrasings judge each gold label (1 to 4)"),
                       threshold: float = typer.Option(0.5, help="flag a gold label when the phrasings' disagreement "
                                                                 "with it (probability-weighted share) is above this"),
                       split: str = typer.Option("both", help="dev, test or both"),
                       output: Path = typer.Option(None, "--output", "-o", help="CSV to write (default: gold_audit.csv "
                                                                                "beside the config)"),
                       progress: bool = typer.Option(True, help="show progress bars")):
    """Ask the LLM, in several phrasings, whether each gold dev/test label is right; flag those it disagrees with."""
    from labelloop.flows.audit import audit_gold
    from labelloop.flows.project import load_project

    project = _guard(load_project, config)
    audit = _guard(audit_gold, project, phrasings=phrasings, threshold=threshold, split=split, output=output,
                   show_progress=progress)
    flagged = audit.flagged
    if len(flagged):
        table = Table(title=f"gold labels the LLM disagrees with (disagreement > {audit.threshold:g} over "
                            f"{len(audit.phrasings)} phrasings)")
        for col in ("split", "id", "gold_label", "suggested_label", "disagreement", "text"):
            table.add_column(col, justify="right" if col == "disagreement" else "left")
        for row in flagged.itertuples():
            text = row.text if len(row.text) <= 80 else row.text[:77] + "..."
            table.add_row(row.split, escape(str(row.id)), escape(row.gold_label), escape(row.suggested_label or ""),
                          f"{row.disagreement:.2f}", escape(text))
        console.print(table)
    console.print(f"{len(flagged)} of {len(audit.frame)} gold labels flagged; phrasings: {', '.join(audit.phrasings)}",
                  soft_wrap=True)
    console.print(f"LLM calls this audit: {audit.calls}  |  answers new: {audit.asked}, reused from the vote store: "
                  f"{audit.reused}" + (f", without an answer: {audit.failed}" if audit.failed else ""), soft_wrap=True)
    console.print(f"[bold green]wrote[/] {escape(str(audit.path))}", soft_wrap=True)


@app.command()
def bootstrap(config: Path = CONFIG,
              update: bool = typer.Option(False, "--update",
                                          help="refine the existing taxonomy on new records, keeping your edits"),
              progress: bool = typer.Option(True, help="show progress bars")):
    """Propose a taxonomy from a sample of the records (summarise, generate, update, review, coverage check)."""
    from labelloop.flows.bootstrap import bootstrap_taxonomy
    from labelloop.flows.config import load_config

    cfg = _guard(load_config, config)
    result = _guard(bootstrap_taxonomy, cfg, update=update, show_progress=progress)
    table = Table(title=f"taxonomy from {len(result.sample_ids)} sampled records")
    for col in ("label", "sampled records", "description"):
        table.add_column(col)
    for label in result.labels:
        table.add_row(label["name"], str(result.counts.get(label["name"], 0)), label["description"])
    console.print(table)
    console.print(f"coverage: {result.coverage:.0%} of sampled records fit a label; LLM calls this run: {result.llm_calls}")
    for note in result.notes:
        console.print(f"[yellow]note:[/] {note}", soft_wrap=True)
    if result.diff is not None:
        console.print(f"added: {result.diff['added'] or 'none'}  removed: {result.diff['removed'] or 'none'}  "
                      f"changed: {result.diff['changed'] or 'none'}")
        if result.diff["unified"]:
            console.print(result.diff["unified"], markup=False, highlight=False)
    console.print(f"[bold green]wrote[/] {result.output} and {result.report}; edit it, then `labelloop run {config}`")


@app.command("propose-lfs")
def propose_lfs(config: Path = CONFIG,
                overwrite: bool = typer.Option(False, "--overwrite",
                                               help="write the output file again (it may hold your edits)"),
                progress: bool = typer.Option(True, help="show progress bars"), prefect: bool = PREFECT):
    """The LLM writes keyword and regex labeling functions, scored on the gold dev records (one call per label a round)."""
    from labelloop.flows.project import load_project
    from labelloop.flows.propose_lfs import propose_lfs

    project = _guard(load_project, config, skip_missing_includes=True)  # validate everything before any LLM call
    if prefect if prefect is not None else prefect_configured():
        from labelloop.flows.orchestration import propose_lfs_flow

        result = _guard(propose_lfs_flow, str(config), overwrite=overwrite)
    else:  # no Prefect server to report to: skip starting a temporary one
        result = _guard(propose_lfs, project, overwrite=overwrite, show_progress=progress)
    table = Table(title=f"{len(result.kept)} labeling functions kept of {len(result.candidates)} proposed")
    for col in ("name", "label", "rule", "dev right/matched", "unlabeled matched"):
        table.add_column(col)
    for c in sorted(result.kept, key=lambda c: (c.label, c.name)):
        table.add_row(c.name, c.label, escape(c.describe()), f"{c.dev_correct}/{c.dev_matched}",
                      f"{int(c.pool.sum())}/{result.pool_records}")
    console.print(table)
    if result.rounds:
        last = result.rounds[-1]
        console.print(f"gold dev records: {last['dev_coverage']:.0%} covered, {last['dev_accuracy']:.0%} of those right "
                      f"(majority of the kept rules)")
    console.print(f"LLM calls: {result.llm_calls} ({result.calls_this_run} this run, the rest stored); stopped: "
                  f"{result.stop_reason}", soft_wrap=True)
    from labelloop.flows.config import included_files

    included = result.output.resolve() in [p.resolve() for p in _guard(included_files, config)]
    console.print(f"[bold green]wrote[/] {escape(str(result.output))} and {escape(str(result.report))}", soft_wrap=True)
    if not included:
        console.print(f"use them: add `- {{include: {escape(result.output.name)}}}` to the labelers of {escape(str(config))}",
                      soft_wrap=True)


@app.command()
def predict(model: Path = typer.Argument(..., help="model.skops from a run folder"),
            data: Path = typer.Argument(..., help="CSV, JSONL or Parquet file with a text column"),
            output: Path = typer.Option(..., "--output", "-o", help="where to write predictions (.csv/.jsonl/.parquet)"),
            id_column: str = typer.Option("id", "--id"), text_column: str = typer.Option("text", "--text"),
            threshold: float = typer.Option(None, help="abstain below this confidence (default: the run's, chosen on "
                                                       "dev; 0 never abstains)"),
            chunk_size: int = typer.Option(10_000, "--chunk-size", min=1, help="rows read, labelled and written at a time"),
            progress: bool = typer.Option(True, help="show a progress bar")):
    """Label a file with a trained student, streaming it chunk by chunk; rows without an id or text, and
    repeated ids, are skipped and listed in OUTPUT.skipped.csv. OUTPUT appears only once every row is done."""
    from labelloop.flows.predict_file import predict_file

    def _predict():
        try:
            return predict_file(model, data, output, id_column=id_column, text_column=text_column, threshold=threshold,
                                chunk_size=chunk_size, show_progress=progress)
        except KeyboardInterrupt:  # before _guard's message, which speaks of stored LLM answers
            console.print(f"[bold red]interrupted:[/] nothing was written to {escape(str(output))}")
            raise typer.Exit(130) from None

    summary = _guard(_predict)
    console.print(f"[bold green]wrote[/] {summary['rows_written']:,} predictions to {escape(summary['output'])} "
                  f"({summary['rows_in']:,} rows read, {summary['rows_per_s'] or 0:,.0f} rows/s)", soft_wrap=True)
    if summary["skipped"]:
        reasons = ", ".join(f"{reason} {n:,}" for reason, n in summary["skipped"].items())
        console.print(f"[yellow]skipped[/] {sum(summary['skipped'].values()):,} rows ({reasons}); listed in "
                      f"{escape(summary['skipped_report'])}", soft_wrap=True)


@app.command()
def serve(model: Path = typer.Argument(..., help="a run folder, or the model.skops inside one"),
          host: str = typer.Option("127.0.0.1", help="address to listen on (0.0.0.0: every interface)"),
          port: int = typer.Option(8000, help="port to listen on"),
          max_batch: int = typer.Option(None, min=1, help="most texts in one request  [default: 256]"),
          max_text_chars: int = typer.Option(None, min=1, help="most characters in one text  [default: 20000]"),
          max_body_bytes: int = typer.Option(None, min=1, help="largest request body in bytes  [default: 4 MiB]"),
          workers: int = typer.Option(1, min=1, help="server processes (each loads the model)")):
    """Serve a trained student over HTTP: POST /predict, GET /health, GET /metadata; Ctrl-C stops it."""
    from labelloop.flows.serve import make_app, run_server, server_url

    limits = {name: value for name, value in (("max_batch", max_batch), ("max_text_chars", max_text_chars),
                                               ("max_body_bytes", max_body_bytes)) if value is not None}
    application = _guard(make_app, model, **limits)  # a bad model file stops here, in one line
    url = server_url(host, port)
    console.print(f"[bold green]serving[/] {escape(str(model))} ({application.state.student.task.name}, "
                  f"{len(application.state.student.labels)} labels) on {url}  |  POST {url}/predict", soft_wrap=True)
    console.print(f"  docs: {url}/docs  |  Ctrl-C stops serving", soft_wrap=True)
    _guard(run_server, application, model, host=host, port=port, workers=workers, **limits)


@app.command()
def export(run_dir: Path = typer.Argument(..., help="a run folder, or the model.skops inside one"),
           fmt: str = typer.Option("onnx", "--format", help="onnx (the only format)"),
           output: Path = typer.Option(None, "--output", "-o", help="file to write (default: model.onnx in the run folder)"),
           min_agreement: float = typer.Option(0.99, help="refuse unless the export picks the scikit-learn student's "
                                                          "label on at least this share of the run's dev and test texts"),
           force: bool = typer.Option(False, "--force", help="write the file even below --min-agreement")):
    """Export a run's student (multi-class, features tfidf) to ONNX, checked against the scikit-learn student first."""
    from labelloop.flows.export import export_onnx

    if fmt != "onnx":
        _guard(_refuse, f"--format must be onnx, got {fmt!r}")
    result = _guard(export_onnx, run_dir, output, min_agreement=min_agreement, force=force)
    console.print(f"agreement with the scikit-learn student: {result['agreement']:.2%} of {result['n_texts']} texts, "
                  f"largest probability difference {result['max_abs_diff']:.2g}; {result['docs_per_s_onnx']:,.0f} docs/s "
                  f"in onnxruntime, {result['docs_per_s_sklearn']:,.0f} in scikit-learn", soft_wrap=True)
    if result["agreement"] < min_agreement:
        console.print(f"[bold yellow]warning:[/] below --min-agreement {min_agreement:.2%}; written because of --force")
    console.print(f"[bold green]wrote[/] {escape(result['path'])}", soft_wrap=True)


@app.command()
def init(data: Path = typer.Argument(..., help="data file to label"),
         output: Path = typer.Option(Path("labelloop.yaml"), "--output", "-o"),
         labels: str = typer.Option(..., help="comma-separated label names"),
         text_column: str = typer.Option("text", "--text"), id_column: str = typer.Option("id", "--id")):
    """Scaffold a config and taxonomy for a data file."""
    from labelloop.flows.project import scaffold_project

    n, taxonomy = _guard(scaffold_project, data, output, [x.strip() for x in labels.split(",") if x.strip()],
                         id_column=id_column, text_column=text_column)
    console.print(f"[bold green]wrote[/] {output} and {taxonomy} for {n} records; edit the descriptions and labelers, "
                  f"then `labelloop plan {output}`")


@app.command()
def schedule(config: Path = CONFIG,
             cron: str = typer.Option(None, help='cron string in UTC, e.g. "0 2 * * *" (02:00 daily)'),
             interval: float = typer.Option(None, help="seconds between runs (instead of --cron)"),
             name: str = typer.Option(None, help="deployment name (default: the project's name)"),
             train: bool = typer.Option(True, "--train/--no-train", help="also train the student in each run")):
    """Serve `labelloop run` on a schedule from a Prefect server (PREFECT_API_URL); Ctrl-C stops serving."""
    from labelloop.flows.orchestration import serve_schedule

    def serving(info: dict) -> None:
        console.print(f"[bold green]serving[/] deployment {info['deployment']} ({info['schedule']}) on {info['api_url']}",
                      soft_wrap=True)
        console.print(f"  config: {info['config']}  |  parameters: {info['parameters']}", soft_wrap=True)
        console.print(f"  run now: prefect deployment run '{info['deployment']}'")
        console.print("Ctrl-C stops serving; the schedule stays active on the server (runs due meanwhile start when "
                      "served again)", soft_wrap=True)

    info = _guard(serve_schedule, config, cron=cron, interval=interval, name=name, train=train, on_serving=serving)
    console.print(f"stopped serving {info['deployment']}; its schedule is still active (pause it with "
                  f"`prefect deployment schedule pause '{info['deployment']}' --all`)", soft_wrap=True)


review_app = typer.Typer(help="Send the records most worth checking to a person; read the answers back as gold.",
                         no_args_is_help=True)
app.add_typer(review_app, name="review")


@review_app.command("export")
def review_export(config: Path = CONFIG,
                  budget: int = typer.Option(50, help="records to send for review"),
                  rule: str = typer.Option("likely-wrong", help="likely-wrong (the run's label_issues.csv), disagreement "
                                                                "(label model vs student) or margin (the label model's "
                                                                "smallest top-two margin)"),
                  run_dir: Path = typer.Option(None, "--run", help="run folder (default: the project's newest)"),
                  output: Path = typer.Option(None, "--output", "-o", help="folder to write (default: "
                                                                           "review/RUN-RULE beside the config)"),
                  force: bool = typer.Option(False, "--force", help="overwrite files an earlier export left there")):
    """Pick records for a person to check, spread over the suggested labels; write a CSV, a Label Studio import
    and an Argilla import."""
    from labelloop.flows.project import load_project
    from labelloop.flows.review import export_review

    project = _guard(load_project, config)
    out = _guard(export_review, project, run_dir=run_dir, budget=budget, rule=rule, out_dir=output, force=force)
    spread = ", ".join(f"{escape(k or '(none)')} {v}" for k, v in out["by_suggested_label"].items())
    console.print(f"picked {out['picked']} of {out['candidates']} candidate records by {out['rule']} from "
                  f"{escape(out['run'])} (at most {out['quota']} per suggested label first): {spread}", soft_wrap=True)
    for path in out["files"].values():
        console.print(f"[bold green]wrote[/] {escape(path)}", soft_wrap=True)
    console.print(f"fill the `label` column of the CSV (or label the records in Label Studio or Argilla and export them), "
                  f"then `labelloop review import FILE {escape(str(config))}`", soft_wrap=True)


@review_app.command("import")
def review_import(file: Path = typer.Argument(..., help="the CSV filled in, or a Label Studio / Argilla JSON export"),
                  config: Path = CONFIG):
    """Read a person's answers and merge them into the reviewed-gold file (review.gold); all or nothing."""
    from labelloop.flows.project import load_project
    from labelloop.flows.review import import_review

    project = _guard(load_project, config)
    out = _guard(import_review, file, project)
    console.print(f"imported {out['imported']} answer(s) from {escape(str(file))} ({out['format']}): {out['new']} new, "
                  f"{out['replaced']} replacing an earlier review, {out['corrected']} changing the label shown; "
                  f"{out['total']} reviewed records in all", soft_wrap=True)
    console.print(f"[bold green]wrote[/] {escape(out['path'])}; the next `labelloop run` scores on them, and a labeler "
                  "`reviewed` votes their labels", soft_wrap=True)


def main() -> None:  # pragma: no cover
    """The `labelloop` command: configure the process, then run the command line."""
    import logging

    for name, value in ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    # progress and per-labeler lines for logs: a scheduled run has no terminal for progress bars
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    handler.setLevel(logging.WARNING if sys.stderr.isatty() else logging.INFO)  # a terminal has progress bars
    logger = logging.getLogger("labelloop")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    app(sys.argv[1:])
