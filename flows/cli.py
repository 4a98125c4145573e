"""The `labelloop` command line: a thin layer that parses arguments and prints results."""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import typer  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

app = typer.Typer(help="Turn unlabeled text into a trained classifier with an LLM in the loop.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
console = Console()
CONFIG = typer.Argument(..., help="project config YAML", exists=False)


def _fail(exc: Exception) -> None:
    console.print(f"[bold red]error:[/] {exc}", soft_wrap=True)
    raise typer.Exit(2)


def _guard(fn, *args, **kwargs):
    from flows.config import ConfigError
    from programs.lm import ModelNotAvailable
    from programs.taxonomy import TaxonomyError

    try:
        return fn(*args, **kwargs)
    except (ConfigError, ModelNotAvailable, TaxonomyError) as exc:
        _fail(exc)


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
    console.print(f"[bold green]outputs:[/] {run_dir}")
    for name in sorted(p.name for p in run_dir.iterdir()):
        console.print(f"  {name}")


def _run(config: Path, *, train: bool, stored_only: bool = False, progress: bool = True) -> None:
    from flows.project import load_project
    from flows.run_project import require_stored, run_project

    project = _guard(load_project, config)  # validate everything before a flow starts
    if stored_only:
        _guard(require_stored, project)
    _print_run(_guard(run_project, project, train=train, show_progress=progress))


@app.command()
def run(config: Path = CONFIG, progress: bool = typer.Option(True, help="show progress bars")):
    """Label, denoise, train the student, evaluate and write a report (one run folder)."""
    _run(config, train=True, progress=progress)


@app.command()
def label(config: Path = CONFIG, progress: bool = typer.Option(True, help="show progress bars")):
    """Run every labeler and the label model; write votes, probabilistic labels and the LF summary."""
    _run(config, train=False, progress=progress)


@app.command()
def train(config: Path = CONFIG):
    """Train and evaluate the student from stored LLM answers only (no LLM call is made)."""
    _run(config, train=True, stored_only=True, progress=False)


@app.command()
def plan(config: Path = CONFIG):
    """Count the LLM calls and prompt tokens a run would make, before making any."""
    from flows.plan import estimate_cost, plan_calls
    from flows.project import load_project
    from programs.lm import is_local

    project = _guard(load_project, config)
    rows = _guard(plan_calls, project)
    table = Table(title="LLM work for this run")
    for col in ("labeler", "records", "stored", "llm_calls", "prompt_tokens"):
        table.add_column(col, justify="right" if col != "labeler" else "left")
    for row in rows:
        table.add_row(*(str(row[c]) for c in ("labeler", "records", "stored", "llm_calls", "prompt_tokens")))
    console.print(table)
    calls, tokens = sum(r["llm_calls"] for r in rows), sum(r["prompt_tokens"] for r in rows)
    console.print(f"total: {calls} LLM calls, ~{tokens} prompt tokens")
    model = project.config.lm.model
    cost = estimate_cost(model, calls, tokens)
    if cost is not None:
        console.print(f"estimated cost on {model}: ${cost:.4f} (list prices; the shared prompt prefix may be cached for less)")
    elif is_local(model):
        console.print(f"runs locally, no API cost; about {calls / 60:.0f} min on 2 CPU cores at ~1 s per call")


@app.command()
def optimize(config: Path = CONFIG, labeler: str = typer.Option(None, help="only this irr labeler")):
    """Compile the Infer-Retrieve-Rank labelers on the gold dev records; later runs use the result."""
    from flows.optimize import optimize_project
    from flows.project import load_project

    project = _guard(load_project, config)
    for row in _guard(optimize_project, project, labeler):
        scores = ", ".join(f"{'zero-shot' if c['seed'] == -3 else 'seed ' + str(c['seed'])}: {c['score']}" for c in row["candidates"])
        console.print(f"{row['labeler']}: demos {row['demos']}; candidates (RP@k % on the dev sample) {scores or 'n/a'}; "
                      f"{row['seconds']:.0f} s")
        console.print(f"[bold green]saved[/] {row['path']}: `labelloop run` now uses it (its answers are stored "
                      "apart from the zero-shot program's; `labelloop plan` shows the calls)")


@app.command()
def bootstrap(config: Path = CONFIG,
              update: bool = typer.Option(False, "--update", help="refine the existing taxonomy on new records, keeping your edits"),
              progress: bool = typer.Option(True, help="show progress bars")):
    """Propose a taxonomy from a sample of the records (summarise, generate, update, review, coverage check)."""
    from flows.bootstrap import bootstrap_taxonomy
    from flows.config import load_config

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


@app.command()
def predict(model: Path = typer.Argument(..., help="model.skops from a run folder"),
            data: Path = typer.Argument(..., help="CSV, JSONL or Parquet file with a text column"),
            output: Path = typer.Option(..., "--output", "-o", help="where to write predictions (.csv/.jsonl/.parquet)"),
            id_column: str = typer.Option("id", "--id"), text_column: str = typer.Option("text", "--text")):
    """Label a file with a trained student."""
    import json

    import numpy as np

    from flows.config import ConfigError, DataSpec
    from flows.io import read_records, write_frame
    from flows.train_student import load_student

    def _predict():
        student = load_student(model)
        metrics = model.parent / "metrics.json"
        if not metrics.is_file():
            raise ConfigError(f"{metrics} is missing: predict needs the run folder the model was written to")
        info = json.loads(metrics.read_text())
        names = info["labels"]
        df = read_records(DataSpec(path=data, id=id_column, text=text_column))
        proba = student.predict_proba(df["text"].tolist())
        if info.get("task") == "multilabel":
            df["labels"] = [[names[j] for j in np.flatnonzero(row >= 0.5)] for row in proba]
            df["top_label"] = [names[j] for j in proba.argmax(axis=1)]
        else:
            df["label"] = [names[i] for i in student.classes_[proba.argmax(axis=1)]]
        df["confidence"] = proba.max(axis=1)
        return write_frame(output, df)

    out = _guard(_predict)
    console.print(f"[bold green]wrote[/] {out}")


@app.command()
def init(data: Path = typer.Argument(..., help="data file to label"),
         output: Path = typer.Option(Path("labelloop.yaml"), "--output", "-o"),
         labels: str = typer.Option(..., help="comma-separated label names"),
         text_column: str = typer.Option("text", "--text"), id_column: str = typer.Option("id", "--id")):
    """Scaffold a config and taxonomy for a data file."""
    import yaml

    from flows.config import ConfigError, DataSpec
    from flows.io import read_records, write_text

    def _init():
        if output.exists():
            raise ConfigError(f"{output} already exists; refusing to overwrite it")
        df = read_records(DataSpec(path=data, id=id_column, text=text_column))
        names = [x.strip() for x in labels.split(",") if x.strip()]
        if len(names) < 2:
            raise ConfigError(f"--labels needs at least two names, got {names}")
        taxonomy = output.parent / f"{output.stem}_taxonomy.yaml"
        write_text(taxonomy, yaml.safe_dump({"labels": [{"name": n, "description": f"TODO: describe {n}"} for n in names]},
                                            sort_keys=False))
        cfg = {"name": output.stem, "task": "multiclass",
               "data": {"path": os.path.relpath(data, output.parent), "id": id_column, "text": text_column},
               "taxonomy": taxonomy.name, "lm": {"model": "local"},
               "labelers": [{"type": "zero_shot"},
                            {"type": "keywords", "name": f"kw_{names[0]}", "label": names[0], "words": ["TODO"]}],
               "label_model": "snorkel"}
        write_text(output, yaml.safe_dump(cfg, sort_keys=False))
        return len(df), taxonomy

    n, taxonomy = _guard(_init)
    console.print(f"[bold green]wrote[/] {output} and {taxonomy} for {n} records; edit the descriptions and labelers, "
                  f"then `labelloop plan {output}`")


def main() -> None:  # pragma: no cover
    app(sys.argv[1:])
