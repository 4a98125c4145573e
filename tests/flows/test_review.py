"""The review loop: label_issues.csv in a run, `labelloop review export` in three formats, and `labelloop review
import` of each format back as gold that the next run scores on and votes with (heuristic projects, no LLM)."""

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from labelloop.flows.cli import app
from labelloop.flows.label_dataset import label_dataset
from labelloop.flows.project import load_project
from labelloop.flows.review import export_review, import_review
from labelloop.flows.run_project import run_project
from labelloop.programs.errors import ConfigError, DataError, StateError
from tests.conftest import EXAMPLE, ROOT, heuristic_config

LABELS = ["billing", "shipping", "other_topics"]


def write_project(folder, **config) -> Path:
    """The example records with the three-label gold of ``heuristic_config``, as files and a config YAML."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(EXAMPLE / "records.jsonl", folder / "records.jsonl")
    for split in ("dev", "test"):
        frame = pd.read_json(EXAMPLE / f"{split}.jsonl", lines=True)
        frame["label"] = frame["label"].where(frame["label"].isin(LABELS[:2]), "other_topics")
        frame.to_json(folder / f"{split}.jsonl", orient="records", lines=True, force_ascii=False)
    raw = {**heuristic_config(), "data": "records.jsonl", "gold": "dev.jsonl", "test": "test.jsonl", **config}
    (folder / "config.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return folder / "config.yaml"


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    """A project folder with one run in it (shared: tests copy it before changing anything)."""
    config = write_project(tmp_path_factory.mktemp("review") / "project")
    run_project(load_project(config), show_progress=False)
    return config


@pytest.fixture
def project_copy(first_run, tmp_path):
    shutil.copytree(first_run.parent, tmp_path / "project")
    return tmp_path / "project" / "config.yaml"


def cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def only_run(config):
    runs = sorted((config.parent / "runs").iterdir())
    return runs[-1]


def test_run_ranks_train_labels_and_reports_them(first_run):
    run = only_run(first_run)
    issues = pd.read_csv(run / "label_issues.csv", dtype={"id": str}, keep_default_na=False)
    assert list(issues.columns) == ["id", "text", "given_label", "suggested_label", "label_model_confidence", "score",
                                    "flagged"]
    assert issues["score"].is_monotonic_decreasing and issues["score"].between(0, 1).all()
    assert set(issues["given_label"]) <= set(LABELS) and set(issues["suggested_label"]) <= set(LABELS)
    probs = pd.read_parquet(run / "probabilistic_labels.parquet")
    covered = set(probs.loc[probs["label"] != "", "id"])
    assert set(issues["id"]) == covered  # every covered train record, and nothing else
    quality = json.loads((run / "metrics.json").read_text())["label_quality"]
    assert quality["n_ranked"] == len(issues) and quality["flagged"] == int(issues["flagged"].sum())
    report = (run / "report.md").read_text()
    assert "## Likely-wrong labels (train)" in report and issues["id"].iloc[0] in report


def test_ranking_can_be_switched_off(tmp_path, trained_run):
    assert (trained_run / "label_issues.csv").is_file()  # the shared deployment run ranks too
    config = write_project(tmp_path / "p", student={"features": "tfidf", "rank_label_issues": False})
    run = run_project(load_project(config), show_progress=False)
    assert not (run / "label_issues.csv").exists()
    assert json.loads((run / "metrics.json").read_text())["label_quality"]["skipped"] == "student.rank_label_issues is false"
    with pytest.raises(StateError, match="no label_issues.csv"):
        export_review(load_project(config), rule="likely-wrong")
    assert export_review(load_project(config), rule="margin", budget=3)["picked"] == 3


@pytest.mark.parametrize("rule", ["likely-wrong", "disagreement", "margin"])
def test_export_writes_csv_label_studio_and_argilla(project_copy, rule):
    out = project_copy.parent / "out"
    result = cli("review", "export", project_copy, "--budget", 6, "--rule", rule, "-o", out)
    assert result.exit_code == 0, result.output
    csv = pd.read_csv(out / "review.csv", dtype=str, keep_default_na=False)
    assert list(csv.columns) == ["id", "text", "given_label", "suggested_label", "score", "label"]
    assert 0 < len(csv) <= 6 and (csv["label"] == "").all() and csv["text"].is_unique
    project = load_project(project_copy)
    assert set(csv["id"]) <= set(project.splits["train"]["id"])
    if rule != "disagreement":  # at most ceil(6 / 3) per suggested label while others are left
        assert len(csv) == 6 and csv["suggested_label"].value_counts().max() <= 2
    else:
        assert (csv["given_label"] != csv["suggested_label"]).all()
    tasks = json.loads((out / "label_studio.json").read_text())
    assert [t["data"]["id"] for t in tasks] == csv["id"].tolist()
    assert all(t["data"]["text"] and t["predictions"][0]["result"][0]["value"]["choices"] == [t["data"]["given_label"]]
               for t in tasks)
    assert '<Choices name="label" toName="text" choice="single"' in (out / "label_studio_config.xml").read_text()
    records = json.loads((out / "argilla.json").read_text())
    assert [r["id"] for r in records] == csv["id"].tolist()
    assert all(set(r) == {"id", "fields", "metadata", "suggestions", "responses", "vectors", "_server_id"}
               for r in records)
    assert all(r["suggestions"]["label"]["value"] == r["metadata"]["given_label"] for r in records)
    again = cli("review", "export", project_copy, "--rule", rule, "-o", out)
    assert again.exit_code == 2 and "--force" in again.output  # never overwrites a half-filled review silently


def answers_for(export_dir, fmt: str, pick) -> Path:
    """The exported file filled in as a person would, in ``fmt``: ``pick(row)`` is the answer for each record."""
    csv = pd.read_csv(export_dir / "review.csv", dtype=str, keep_default_na=False)
    if fmt == "csv":
        csv["label"] = [pick(row) for row in csv.to_dict("records")]
        path = export_dir / "filled.csv"
        csv.to_csv(path, index=False)
        return path
    answers = dict(zip(csv["id"], (pick(row) for row in csv.to_dict("records"))))
    if fmt == "label_studio":  # what Label Studio's JSON export holds: the tasks, their annotations and more
        tasks = json.loads((export_dir / "label_studio.json").read_text())
        for n, task in enumerate(tasks, 1):
            task |= {"id": 100 + n, "total_annotations": 1, "cancelled_annotations": 0, "project": 1}
            task["annotations"] = [{"id": n, "completed_by": 1, "was_cancelled": False, "ground_truth": False,
                                    "result": [{"id": "x", "from_name": "label", "to_name": "text", "type": "choices",
                                                "origin": "manual", "value": {"choices": [answers[task["data"]["id"]]]}}]}]
        path = export_dir / "label_studio_export.json"
        path.write_text(json.dumps(tasks))
        return path
    records = json.loads((export_dir / "argilla.json").read_text())  # rg.Record.to_dict() with responses
    for record in records:
        record["responses"] = {"label": [{"value": answers[record["id"]], "user_id": "7f0c", "status": "submitted"}]}
        record["_server_id"] = "0b3e"
    path = export_dir / "argilla_export.json"
    path.write_text(json.dumps(records))
    return path


@pytest.mark.parametrize("fmt", ["csv", "label_studio", "argilla"])
def test_round_trip_reviewed_records_become_gold_and_votes(project_copy, fmt):
    out = project_copy.parent / "out"
    export_review(load_project(project_copy), budget=5, out_dir=out)
    answer = {"billing": "shipping", "shipping": "other_topics", "other_topics": "billing"}
    path = answers_for(out, fmt, lambda row: answer[row["given_label"]])  # every label corrected
    result = cli("review", "import", path, project_copy)
    assert result.exit_code == 0, result.output
    assert "imported 5 answer(s)" in result.output and "5 changing the label shown" in result.output
    reviewed = pd.read_json(project_copy.parent / "reviewed.jsonl", lines=True, dtype={"id": str})
    exported = pd.read_csv(out / "review.csv", dtype=str, keep_default_na=False)
    expected = {rid: answer[g] for rid, g in zip(exported["id"], exported["given_label"])}
    assert dict(zip(reviewed["id"], reviewed["label"])) == expected
    assert reviewed["source"].str.startswith(fmt).all()

    project = load_project(project_copy)
    dev = project.splits["dev"].set_index("id")["label"]
    assert all(dev[rid] == label for rid, label in expected.items())  # gold now
    assert len(dev) == 40 + 5
    assert project.labeler_names[-1] == "reviewed"
    run = run_project(project, show_progress=False)
    votes = pd.read_parquet(run / "votes_train.parquet").set_index("id")["reviewed"]
    assert votes[votes != ""].to_dict() == expected  # the `reviewed` labeler votes on exactly those records
    assert (pd.read_parquet(run / "votes_dev.parquet")["reviewed"] == "").all()  # and never on gold it is scored on
    probs = pd.read_parquet(run / "probabilistic_labels.parquet").set_index("id")
    assert probs.loc[list(expected), "label"].to_dict() == expected
    assert (probs.loc[list(expected), "confidence"] == 1.0).all()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["review"] == {"file": str(project_copy.parent / "reviewed.jsonl"), "records": 5,
                                 "train_records_voted": 5, "in_dev": 5}
    assert metrics["scores"]["dev"]["label_model"]["n"] == 45
    issues = pd.read_csv(run / "label_issues.csv", dtype={"id": str})
    assert not set(issues["id"]) & set(expected)  # checked by a person: not ranked again
    summary = pd.read_csv(run / "lf_summary.csv").set_index("labeler")
    assert summary.loc["reviewed", "coverage"] == pytest.approx(5 / 160)

    # a second review of the same records replaces the first; a new export skips reviewed records
    again = export_review(load_project(project_copy), budget=5, out_dir=project_copy.parent / "out2")
    assert not set(pd.read_csv(again["files"]["csv"], dtype=str)["id"]) & set(expected)
    summary = import_review(answers_for(out, fmt, lambda row: row["given_label"]), load_project(project_copy))
    assert (summary["new"], summary["replaced"], summary["corrected"], summary["total"]) == (0, 5, 0, 5)


def test_unanswered_records_are_skipped(project_copy):
    out = project_copy.parent / "out"
    export_review(load_project(project_copy), budget=4, out_dir=out)
    csv = pd.read_csv(out / "review.csv", dtype=str, keep_default_na=False)
    csv.loc[0, "label"] = " Billing "  # case and spaces aside
    csv.to_csv(out / "one.csv", index=False)
    summary = import_review(out / "one.csv", load_project(project_copy))
    assert summary["imported"] == 1
    assert json.loads((project_copy.parent / "reviewed.jsonl").read_text())["label"] == "billing"


def valid_import(project_copy):
    """Import two answers, so a failed import can be shown to leave the gold file exactly as it was."""
    out = project_copy.parent / "out"
    export_review(load_project(project_copy), budget=6, out_dir=out)
    csv = pd.read_csv(out / "review.csv", dtype=str, keep_default_na=False)
    csv.loc[:1, "label"] = csv.loc[:1, "given_label"]
    csv.to_csv(out / "first.csv", index=False)
    import_review(out / "first.csv", load_project(project_copy))
    return out, (project_copy.parent / "reviewed.jsonl").read_bytes()


def _csv(out, change):
    csv = pd.read_csv(out / "review.csv", dtype=str, keep_default_na=False)
    csv["label"] = csv["given_label"]
    change(csv)
    path = out / "bad.csv"
    csv.to_csv(path, index=False)
    return path


def _json(out, name, change):
    rows = json.loads((out / name).read_text())
    change(rows)
    path = out / f"bad_{name}"
    path.write_text(json.dumps(rows))
    return path


def _ls_answer(task, choices):
    task["annotations"] = [{"was_cancelled": False, "result": [{"from_name": "label", "to_name": "text",
                                                                "type": "choices", "value": {"choices": choices}}]}]


def _ls(out, change):
    def fill(tasks):
        for task in tasks:
            _ls_answer(task, [task["data"]["given_label"]])
        change(tasks)

    return _json(out, "label_studio.json", fill)


def _ag(out, change):
    def fill(records):
        for r in records:
            r["responses"] = {"label": [{"value": r["metadata"]["given_label"], "user_id": "u"}]}
        change(records)

    return _json(out, "argilla.json", fill)


def _set(frame, row, column, value):
    frame.loc[row, column] = value


MALFORMED = {
    "csv unknown label": (lambda out: _csv(out, lambda c: _set(c, 2, "label", "refunds")),
                          r"row 3 \(line 4\) \(id '[^']+'\): field 'label': 'refunds' is not a label"),
    "csv missing id": (lambda out: _csv(out, lambda c: _set(c, 1, "id", "")), r"row 2 \(line 3\): field 'id' is missing"),
    "csv id not in project": (lambda out: _csv(out, lambda c: _set(c, 0, "id", "nope")),
                              r"row 1 \(line 2\) \(id 'nope'\): field 'id' is not a train record"),
    "csv duplicate id": (lambda out: _csv(out, lambda c: _set(c, 3, "id", c.loc[0, "id"])),
                         r"row 4 \(line 5\) \(id '[^']+'\): field 'id' repeats row 1"),
    "csv changed text": (lambda out: _csv(out, lambda c: _set(c, 1, "text", "something else")),
                         r"row 2 \(line 3\) \(id '[^']+'\): field 'text' differs"),
    "csv no label column": (lambda out: _csv(out, lambda c: c.pop("label")),
                            r"header: column\(s\) \['label'\] missing"),
    "label studio malformed json": (lambda out: _write(out / "bad.json", '[{"data": {"id": "r1"'),
                                    r"bad.json: not valid JSON, line 1 column"),
    "label studio unknown label": (lambda out: _ls(out, lambda t: _ls_answer(t[1], ["refunds"])),
                                   r"task 2 \(id '[^']+'\): field 'annotations\[0\].result\[0\].value.choices': "
                                   r"'refunds' is not a label"),
    "label studio two labels": (lambda out: _ls(out, lambda t: _ls_answer(t[0], ["billing", "shipping"])),
                                r"task 1: field 'annotations\[0\].result\[0\].value.choices': expected one label"),
    "label studio missing id": (lambda out: _ls(out, lambda t: t[2]["data"].pop("id")),
                                r"task 3: field 'id' is missing"),
    "argilla malformed jsonl": (lambda out: _write(out / "bad.jsonl", '{"id": "r0001", "fields": {}}\n{"id": \n'),
                                r"bad.jsonl, line 2: not valid JSON"),
    "argilla unknown label": (lambda out: _ag(out, lambda r: r[4]["responses"]["label"][0].update(value="refunds")),
                              r"record 5 \(id '[^']+'\): field 'responses.label\[\].value': 'refunds' is not a label"),
    "argilla duplicate id": (lambda out: _ag(out, lambda r: r[1].update(id=r[0]["id"])),
                             r"record 2 \(id '[^']+'\): field 'id' repeats record 1"),
    "argilla response without value": (lambda out: _ag(out, lambda r: r[0]["responses"]["label"][0].pop("value")),
                                       r"record 1: field 'responses.label\[0\].value' is missing"),
    "argilla reviewers disagree": (lambda out: _ag(out, lambda r: r[0]["responses"]["label"].append(
        {"value": "billing" if r[0]["metadata"]["given_label"] != "billing" else "shipping", "user_id": "v"})),
                                   r"record 1 \(id '[^']+'\): field 'responses.label\[\].value': reviewers disagree"),
}


def _write(path, text):
    path.write_text(text)
    return path


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_imports_name_row_and_field_and_change_nothing(project_copy, case):
    out, before = valid_import(project_copy)
    make, message = MALFORMED[case]
    path = make(out)
    with pytest.raises(DataError, match=message):
        import_review(path, load_project(project_copy))
    assert (project_copy.parent / "reviewed.jsonl").read_bytes() == before
    result = cli("review", "import", path, project_copy)
    assert result.exit_code == 2 and "error:" in result.output
    assert (project_copy.parent / "reviewed.jsonl").read_bytes() == before


def test_refusals(project_copy, tmp_path):
    project = load_project(project_copy)
    with pytest.raises(ConfigError, match="--rule must be one of"):
        export_review(project, rule="loudest")
    with pytest.raises(DataError, match="does not exist"):
        import_review(tmp_path / "none.csv", project)
    (tmp_path / "x.txt").write_text("id,label\n")
    with pytest.raises(DataError, match="expected a .csv"):
        import_review(tmp_path / "x.txt", project)
    (tmp_path / "other.json").write_text('[{"text": "hi", "label": "billing"}]')
    with pytest.raises(DataError, match="not a Label Studio task"):
        import_review(tmp_path / "other.json", project)
    empty = write_project(tmp_path / "fresh")
    with pytest.raises(StateError, match="no run folder"):
        export_review(load_project(empty))
    (project_copy.parent / "reviewed.jsonl").write_text(json.dumps({"id": "r0001", "text": "x", "label": "billing"}) + "\n")
    assert load_project(project_copy).reviewed is None  # a reviewed record whose text changed is ignored


def test_labeler_named_reviewed_is_refused(project_copy):
    raw = yaml.safe_load(project_copy.read_text())
    raw["labelers"][0]["name"] = "reviewed"
    project_copy.write_text(yaml.safe_dump(raw))
    (project_copy.parent / "reviewed.jsonl").write_text(
        json.dumps({"id": "r0001", "text": json.loads((project_copy.parent / "records.jsonl").open().readline())["text"],
                    "label": "billing"}) + "\n")
    with pytest.raises(ConfigError, match="a labeler is named 'reviewed'"):
        load_project(project_copy)


def test_multilabel_round_trip(tmp_path):
    src = ROOT / "data" / "example_multilabel"
    folder = tmp_path / "ml"
    folder.mkdir()
    for name in ("records.jsonl", "dev.jsonl", "test.jsonl", "taxonomy.yaml"):
        shutil.copyfile(src / name, folder / name)
    config = {"name": "ml", "task": "multilabel", "data": "records.jsonl", "gold": "dev.jsonl", "test": "test.jsonl",
              "taxonomy": "taxonomy.yaml", "label_model": "majority", "student": {"features": "tfidf"},
              "labelers": [{"type": "keywords", "name": "kw_billing", "label": "billing",
                            "words": ["refund", "invoice", "charged", "payment", "money"]},
                           {"type": "regex", "name": "re_delivery", "label": "shipping",
                            "pattern": r"\b(deliver\w*|parcel|package|courier|shipp\w*|arriv\w*)"},
                           {"type": "keywords", "name": "kw_tech", "label": "technical_issue",
                            "words": ["error", "crash", "won't", "broken", "charge"]},
                           {"type": "keywords", "name": "kw_account", "label": "account_access",
                            "words": ["password", "login", "log in", "account"]},
                           {"type": "keywords", "name": "kw_product", "label": "product_question",
                            "words": ["compatible", "does it", "fit", "support"]}]}
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    run = run_project(load_project(folder / "config.yaml"), show_progress=False)
    issues = pd.read_csv(run / "label_issues.csv", dtype=str, keep_default_na=False)
    assert list(issues.columns)[:4] == ["id", "text", "given_labels", "suggested_labels"]
    out = folder / "out"
    export_review(load_project(folder / "config.yaml"), budget=4, out_dir=out)
    csv = pd.read_csv(out / "review.csv", dtype=str, keep_default_na=False)
    assert list(csv.columns) == ["id", "text", "given_labels", "suggested_labels", "score", "label"]
    assert '<Choices name="label" toName="text" choice="multiple"' in (out / "label_studio_config.xml").read_text()
    csv["label"] = ["billing|shipping", "account_access", "billing", "product_question|technical_issue"][:len(csv)]
    csv.to_csv(out / "filled.csv", index=False)
    assert import_review(out / "filled.csv", load_project(folder / "config.yaml"))["imported"] == len(csv)
    project = load_project(folder / "config.yaml")
    result = label_dataset(project, show_progress=False)
    assert result.names[-1] == "reviewed"
    reviewed = result.splits["train"].votes[-1]
    row = result.splits["train"].ids.index(csv["id"][0])
    assert reviewed[row].toarray().tolist() == [[1, 1, -1, -1, -1]]  # billing, shipping yes; the rest no
    assert abs(reviewed).sum() == 5 * len(csv)
    dev = project.splits["dev"].set_index("id")["label"]
    assert dev[csv["id"][0]] == ["billing", "shipping"]
    records = json.loads((out / "argilla.json").read_text())
    for r in records:
        r["responses"] = {"label": [{"value": ["billing"], "user_id": "u", "status": "submitted"}]}
    (out / "ag.json").write_text(json.dumps(records))
    assert import_review(out / "ag.json", project)["replaced"] == len(csv)


def test_cli_run_points_at_label_issues(project_copy):
    result = cli("run", project_copy, "--no-progress", "--no-prefect")
    assert result.exit_code == 0, result.output
    assert "likely-wrong train labels:" in result.output and "label_issues.csv" in result.output
