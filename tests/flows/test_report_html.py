"""The HTML run report: one self-contained file with its sections, escaped texts, and Prefect artifacts of names and counts."""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from labelloop.flows import report_html
from labelloop.flows.report_html import ReportInputs, publish_artifacts, refresh_issues, render_html_report
from tests.conftest import EXAMPLE, heuristic_config

SECTIONS = ("run", "scores", "labelers", "accuracy", "balance", "confusion", "calibration")
HOSTILE = "<script>alert('x')</script> & a <b>bold</b> refund request"


def _external(page: str) -> list[str]:
    """What would make a browser fetch something: any http(s) address, scripts, stylesheets, images, CSS urls."""
    patterns = (r"https?://", r"<script", r"<link\b", r"<img\b", r"<iframe", r"@import", r"url\(", r"\bsrc=")
    return [p for p in patterns if re.search(p, page, re.I)]


def _records(multiclass_gold: bool = True) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    records = pd.read_json(EXAMPLE / "records.jsonl", lines=True)
    gold = {}
    for split in ("dev", "test"):
        gold[split] = frame = pd.read_json(EXAMPLE / f"{split}.jsonl", lines=True)
        frame["label"] = frame["label"].where(frame["label"].isin(["billing", "shipping"]), "other_topics")
    return records, gold


def test_a_run_writes_one_self_contained_report_with_every_section(trained_run):
    page = (trained_run / "report.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert _external(page) == []
    for anchor in SECTIONS:
        assert f'<section id="{anchor}">' in page, anchor
    assert page.count("<svg") >= 3  # labeler chart, labeler accuracy, class balance, reliability diagram
    metrics = json.loads((trained_run / "metrics.json").read_text())
    ece = metrics["calibration"]["test"]["ece"]
    assert f"<b>{ece:.3f}</b>" in page  # the reliability diagram's ECE is the one in metrics.json
    for name in ("kw_money", "re_parcel", "kw_app", "billing", "shipping", "other_topics", "majority_vote"):
        assert name in page
    assert ('<section id="issues">' in page) == (trained_run / "label_issues.csv").is_file()  # the run's ranking
    assert (trained_run / "report.md").is_file()  # the Markdown report is still written
    # the gold labels the run's models disagree with: read from gold_issues.csv, flagged first, then the lowest scores
    gold = pd.read_csv(trained_run / "gold_issues.csv", dtype={"id": str})
    first = gold.sort_values(["flagged", "score"], ascending=[False, True], kind="stable").iloc[0]
    section = page[page.index('<section id="gold-issues">'):]
    section = section[:section.index("</section>")]
    assert "Likely errors in your gold labels" in section and 'href="#gold-issues"' in page
    assert section.index(f"<td>{first['id']}</td>") < section.index("</tr>", section.index("<tbody>"))  # first row
    assert f"dev: <b>{metrics['gold_quality']['dev']['flagged']}</b> of 40 flagged" in section


def test_record_texts_are_escaped_in_the_likely_wrong_labels(tmp_path):
    import labelloop

    records, gold = _records()
    records.loc[0, "text"] = HOSTILE
    project = labelloop.load_project(heuristic_config(), base_dir=tmp_path, data=records, gold=gold["dev"], test=gold["test"])
    run_dir = labelloop.run(project, show_progress=False)
    page = (run_dir / "report.html").read_text(encoding="utf-8")
    assert "<script" not in page  # the run's own likely-wrong section holds the text escaped
    (run_dir / "label_issues.csv").unlink(missing_ok=True)  # replaced by the file below
    issues = pd.DataFrame({"id": [records.loc[0, "id"], records.loc[1, "id"]], "text": [HOSTILE, "x" * 1000],
                           "given_label": ["billing", "shipping"], "suggested_label": ["other_topics", "billing"],
                           "score": [0.91, 0.5]})
    issues.to_csv(run_dir / "label_issues.csv", index=False)
    assert refresh_issues(run_dir) and refresh_issues(run_dir)  # a second refresh replaces, never duplicates
    page = (run_dir / "report.html").read_text(encoding="utf-8")
    assert page.count('<section id="issues">') == 1 and page.count('href="#issues"') == 1
    assert "<script" not in page and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; a &lt;b&gt;" in page
    assert "x" * (report_html.MAX_TEXT - 1) + "…" in page and "x" * report_html.MAX_TEXT not in page
    assert "suggested_label" in page.replace("<wbr>", "") and "0.910" in page and _external(page) == []
    # a report rendered while the file is there shows it from the start
    summary = pd.read_csv(run_dir / "lf_summary.csv").set_index("labeler")
    fresh = render_html_report("deploy", json.loads((run_dir / "metrics.json").read_text()), summary,
                               issues=report_html.read_issues(run_dir))
    assert '<section id="issues">' in fresh and "<script" not in fresh


def _gold_issues() -> tuple[pd.DataFrame, dict]:
    """gold_issues.csv rows as the run writes them (by split, then score) and their metrics["gold_quality"]."""
    frame = pd.DataFrame({"split": ["dev", "dev", "dev", "test", "test"], "id": ["d1", "d2", "d3", "t1", "t2"],
                          "text": ["fine", "ok", "meh", HOSTILE, "y" * 1000],
                          "gold_label": ["billing", "billing", "shipping", "<billing>", "shipping"],
                          "suggested_label": ["billing", "shipping", "shipping", "shipping", ""],
                          "score": [0.05, 0.3, 0.9, 0.2, np.nan], "ranked": [1, 2, 3, 1, np.nan],
                          "flagged": [False, False, False, True, False],
                          "source": ["student", "student", "student", "student", ""]})
    quality = {"dev": {"n": 3, "scored": 3, "flagged": 0}, "test": {"n": 2, "scored": 1, "flagged": 1},
               "rule": "confident learning over the <dev> and test records"}
    return frame, quality


def _section_of(page: str, anchor: str) -> str:
    section = page[page.index(f'<section id="{anchor}">'):]
    return section[:section.index("</section>")]


def test_gold_issues_are_shown_flagged_first_then_lowest_scores(tmp_path):
    metrics, summary, _ = _multilabel_inputs()
    frame, quality = _gold_issues()
    frame.to_csv(tmp_path / "gold_issues.csv", index=False)  # text, read back as the run's report does
    for gold in (frame, report_html.read_issues(tmp_path, limit=None, file="gold_issues.csv")):
        page = render_html_report("mc", {**metrics, "gold_quality": quality}, summary, gold_issues=gold)
        section = _section_of(page, "gold-issues")
        assert "Likely errors in your gold labels" in section and 'href="#gold-issues"' in page
        body = section[section.index("<tbody>"):]
        rows = body.split("</tr>")[:-1]
        assert [re.search(r"<td>([dt]\d)</td>", row).group(1) for row in rows] == ["t1", "d1", "d2", "d3", "t2"]
        assert "&lt;billing&gt;" in rows[0] and "True" in rows[0] and "0.200" in rows[0]  # gold label, flag, score
        assert "<script" not in page and "&lt;script&gt;" in rows[0] and "y" * report_html.MAX_TEXT not in page
        assert "confident learning over the &lt;dev&gt; and test records" in section
        assert "dev: <b>0</b> of 3 flagged (3 scored); test: <b>1</b> of 2 flagged (1 scored)" in section
        head = section[section.index("<thead>"):section.index("</thead>")].replace("_<wbr>", "_")
        assert re.findall(r"<th>(.*?)</th>", head) == report_html.GOLD_ISSUE_COLUMNS  # no ranked, no source
        assert _external(page) == []
    # write_html_report finds gold_issues.csv in the run folder
    assert report_html.write_html_report(tmp_path, "mc", {**metrics, "gold_quality": quality}, summary) is not None
    assert "<td>t1</td>" in _section_of((tmp_path / "report.html").read_text(encoding="utf-8"), "gold-issues")
    # at most MAX_ISSUES rows
    many = pd.concat([frame] * 10, ignore_index=True)
    page = render_html_report("mc", {**metrics, "gold_quality": quality}, summary, gold_issues=many)
    body = _section_of(page, "gold-issues").split("<tbody>")[1]
    assert body.count("<tr>") == report_html.MAX_ISSUES and f"first {report_html.MAX_ISSUES} of 50 rows" in page
    # no flag could be computed: the metrics say why, and the page does too
    page = render_html_report("mc", {**metrics, "gold_quality": {**quality, "flags": "none: at least 2 classes"}},
                              summary, gold_issues=frame)
    assert "Flags: none: at least 2 classes." in _section_of(page, "gold-issues")


def test_without_gold_the_gold_issues_section_says_so_or_is_left_out():
    metrics, summary, _ = _multilabel_inputs()
    page = render_html_report("ml", {**metrics, "gold_quality": {"skipped": "no gold dev or test records"}}, summary)
    section = _section_of(page, "gold-issues")
    assert "Gold labels were not checked: no gold dev or test records." in section and "<table" not in section
    page = render_html_report("ml", metrics, summary)  # an older run: no gold_quality, no gold_issues.csv
    assert 'id="gold-issues"' not in page and 'href="#gold-issues"' not in page


def _multilabel_inputs(n: int = 60, k: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    Y = rng.random((n, k)) < 0.3
    P = np.clip(Y * 0.7 + rng.random((n, k)) * 0.4, 0, 1)
    labels = ["billing", "shipping", "<technical>", "returns"]
    summary = pd.DataFrame({"coverage": [0.6, 0.3], "labels_per_record": [1.2, 1.0], "overlaps": [0.2, 0.2],
                            "conflicts": [0.05, 0.0], "dev_coverage": [0.5, 0.4], "dev_precision": [0.8, np.nan],
                            "dev_recall": [0.6, np.nan]}, index=["irr", "kw_money"])
    metrics = {"name": "ml", "task": "multilabel", "labels": labels, "model": "local", "label_model": "snorkel",
               "labels_with_snorkel": 1, "features": "tfidf", "n_train": 100, "coverage": 0.8, "llm_calls": 12,
               "wall_s": 3.2, "scores": {"test": {"student": {"n": n, "micro_f1": 0.71, "macro_f1": 0.6, "rp5": 0.9,
                                                             "rp10": 0.95, "labels_per_record": 1.1}}},
               "calibration": {"thresholds": [0.5, 0.4, 0.6, 0.5], "target": "best F1 per label on dev"}}
    inputs = ReportInputs(labels=labels, multilabel=True, estimated_accuracy={"irr": 0.82, "kw_money": 0.9},
                          gold_split="test", gold=Y, student_proba=P, thresholds=[0.5, 0.4, 0.6, 0.5])
    return metrics, summary, inputs


def test_a_multilabel_report_shows_per_label_f1_instead_of_the_confusion_matrix():
    metrics, summary, inputs = _multilabel_inputs()
    page = render_html_report("ml", metrics, summary, inputs, run_name="ml-20260101-000000")
    for anchor in ("run", "scores", "labelers", "accuracy", "per-label", "calibration"):
        assert f'<section id="{anchor}">' in page, anchor
    assert 'id="confusion"' not in page and 'id="balance"' not in page
    assert "&lt;technical&gt;" in page and "<technical>" not in page
    assert "dev precision on gold" in page and "estimated by the label model" in page
    assert "micro_f1" in page.replace("<wbr>", "") and _external(page) == []


def test_a_plot_that_raises_is_left_out_and_the_page_still_renders(monkeypatch, caplog, tmp_path):
    metrics, summary, inputs = _multilabel_inputs()

    def broken(*args, **kwargs):
        raise RuntimeError("no ink")

    monkeypatch.setattr(report_html, "reliability", broken)
    with caplog.at_level(logging.WARNING, logger="labelloop"):
        page = render_html_report("ml", metrics, summary, inputs)
    assert "reliability diagram left out (RuntimeError: no ink)" in caplog.text
    assert '<section id="calibration">' in page and '<section id="per-label">' in page and page.count("<svg") >= 2
    monkeypatch.setattr(report_html, "render_html_report", broken)  # even a page that fails never raises into the run
    assert report_html.write_html_report(tmp_path, "ml", metrics, summary, inputs) is None
    assert not (tmp_path / "report.html").exists() and "report.html not written" in caplog.text


def _config_on_disk(tmp_path: Path) -> Path:
    records, gold = _records()
    for name, frame in (("records", records), ("dev", gold["dev"]), ("test", gold["test"])):
        frame.to_json(tmp_path / f"{name}.jsonl", orient="records", lines=True)
    config = {**heuristic_config(), "name": "artifacts", "data": "records.jsonl", "gold": "dev.jsonl", "test": "test.jsonl"}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    return tmp_path / "config.yaml"


def _artifacts(since: datetime) -> list:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return [a for a in client.read_artifacts() if a.created >= since]


@pytest.mark.usefixtures("prefect_harness")
def test_a_flow_run_publishes_scores_and_labelers_as_artifacts_without_record_texts(tmp_path):
    from labelloop.flows.orchestration import run_project_flow

    config = _config_on_disk(tmp_path)
    since = datetime.now(UTC)
    run_dir = run_project_flow(config)
    found = {a.key: a for a in _artifacts(since)}
    assert set(found) == {"artifacts-scores", "artifacts-labelers", "artifacts-report"}
    assert found["artifacts-scores"].type == found["artifacts-labelers"].type == "table"
    assert all(a.flow_run_id is not None for a in found.values())
    labelers = json.loads(found["artifacts-labelers"].data)
    assert [row["labeler"] for row in labelers] == ["kw_money", "re_parcel", "kw_app"]
    assert 0 < labelers[0]["coverage"] <= 1 and "polarity" not in labelers[0]
    scores = json.loads(found["artifacts-scores"].data)
    assert {(row["split"], row["method"]) for row in scores} >= {("test", "student"), ("dev", "label_model")}
    assert str(run_dir.resolve() / "report.html") in found["artifacts-report"].data
    stored = "\n".join(str(a.data) + str(a.description) for a in found.values())
    texts = [t for name in ("records", "dev", "test") for t in pd.read_json(tmp_path / f"{name}.jsonl", lines=True)["text"]]
    assert [t for t in texts if t in stored] == []
    # outside a flow run: nothing
    since = datetime.now(UTC)
    assert publish_artifacts(run_dir) == [] and _artifacts(since) == []
