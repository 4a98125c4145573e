"""Errors in the user's gold labels: ranked by the run's models (gold_issues.csv) and audited by the LLM (audit-gold)."""

from __future__ import annotations

import json

import dspy
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

import labelloop
from labelloop.flows.cli import app
from tests.conftest import EXAMPLE, heuristic_config
from tests.fakes import RuleEngine

WRONG = "d028"  # "You refunded the wrong amount, I paid 249 and got 199 back." (billing), relabelled shipping


def _gold(flip: bool = True) -> dict[str, pd.DataFrame]:
    """The example's dev and test records on heuristic_config's three labels, with one dev label made wrong."""
    gold = {}
    for split in ("dev", "test"):
        gold[split] = frame = pd.read_json(EXAMPLE / f"{split}.jsonl", lines=True)
        frame["label"] = frame["label"].where(frame["label"].isin(["billing", "shipping"]), "other_topics")
    if flip:
        assert gold["dev"].loc[gold["dev"]["id"] == WRONG, "label"].item() == "billing"
        gold["dev"].loc[gold["dev"]["id"] == WRONG, "label"] = "shipping"
    return gold


def test_run_ranks_a_wrong_gold_label_near_the_top(tmp_path):
    gold = _gold()
    records = pd.read_json(EXAMPLE / "records.jsonl", lines=True)
    project = labelloop.load_project(heuristic_config(), base_dir=tmp_path, data=records, gold=gold["dev"],
                                     test=gold["test"])
    run_dir = labelloop.run(project, show_progress=False)

    issues = pd.read_csv(run_dir / "gold_issues.csv", dtype={"id": str})
    assert list(issues.columns) == ["split", "id", "text", "gold_label", "suggested_label", "score", "ranked", "flagged",
                                    "source"]
    assert len(issues) == len(gold["dev"]) + len(gold["test"])
    wrong = issues[issues["id"] == WRONG].iloc[0]
    assert wrong["split"] == "dev" and wrong["gold_label"] == "shipping" and wrong["suggested_label"] == "billing"
    assert wrong["ranked"] <= 3 and wrong["flagged"], issues.head(5).to_string()
    dev = issues[issues["split"] == "dev"]
    assert dev["ranked"].tolist() == list(range(1, len(dev) + 1))  # most likely wrong first
    assert dev["score"].is_monotonic_increasing and dev["score"].between(0, 1).all()

    quality = json.loads((run_dir / "metrics.json").read_text())["gold_quality"]
    assert quality["dev"]["n"] == 40 and quality["test"]["n"] == 80 and quality["dev"]["scored"] == 40
    assert quality["dev"]["flagged"] == int(dev["flagged"].sum()) >= 1
    assert "find_label_issues" in quality["rule"]


def test_label_only_run_scores_gold_by_the_label_model(tmp_path):
    gold = _gold()
    records = pd.read_json(EXAMPLE / "records.jsonl", lines=True)
    project = labelloop.load_project(heuristic_config(), base_dir=tmp_path, data=records, gold=gold["dev"],
                                     test=gold["test"])
    from labelloop.flows.run_project import run_project

    run_dir = run_project(project, train=False, show_progress=False)
    issues = pd.read_csv(run_dir / "gold_issues.csv", dtype={"id": str}, keep_default_na=False)
    assert set(issues["source"]) <= {"label_model", ""}
    unscored = issues[issues["source"] == ""]  # no vote and no student: nothing to score them by
    assert (unscored["score"] == "").all() and (unscored["ranked"] == "").all()
    quality = json.loads((run_dir / "metrics.json").read_text())["gold_quality"]
    assert quality["dev"]["scored"] == int(((issues["split"] == "dev") & (issues["source"] != "")).sum()) < 40


def test_gold_of_one_class_is_scored_and_the_missing_flags_are_explained(tmp_path):
    # a small gold set of one label only (not the taxonomy's first): cleanlab's find_label_issues refuses it
    # ("Labels must contain at least 2 classes"); the run used to crash there
    gold = {s: f[f["label"] == "shipping"] for s, f in _gold(flip=False).items()}
    records = pd.read_json(EXAMPLE / "records.jsonl", lines=True)
    project = labelloop.load_project(heuristic_config(), base_dir=tmp_path, data=records, gold=gold["dev"],
                                     test=gold["test"])
    run_dir = labelloop.run(project, show_progress=False)

    issues = pd.read_csv(run_dir / "gold_issues.csv", dtype={"id": str})
    assert len(issues) == len(gold["dev"]) + len(gold["test"])
    assert (issues["gold_label"] == "shipping").all() and not issues["flagged"].any()
    assert issues["score"].between(0, 1).all()  # the quality scores are still there, only the flags are not
    quality = json.loads((run_dir / "metrics.json").read_text())["gold_quality"]
    assert quality["dev"] == {"n": len(gold["dev"]), "scored": len(gold["dev"]), "flagged": 0}
    assert quality["test"]["n"] == len(gold["test"]) and quality["test"]["flagged"] == 0
    assert quality["flags"].startswith("none: ") and "2 classes" in quality["flags"]  # says why nothing is flagged


def test_multilabel_gold_is_skipped_with_a_note(multilabel_project):
    from labelloop.flows.audit import gold_quality

    project = labelloop.load_project(multilabel_project)
    frame, quality = gold_quality(project, None, None, None)
    assert frame is None and "multi-label" in quality["skipped"]


# -- audit-gold ------------------------------------------------------------------------------------------------------


def _truth(text: str) -> str:
    text = text.lower()
    if any(w in text for w in ("refund", "charged", "invoice", "payment", "paid", "price")):
        return "billing"
    if any(w in text for w in ("parcel", "package", "deliver", "tracking", "shipped")):
        return "shipping"
    return "other_topics"


class AuditEngine(RuleEngine):
    """Knows each text's true label (``_truth``) and judges the label a question names by it."""

    def __init__(self):
        super().__init__(answer_for=self.judge)
        self.prompt = ""

    def complete(self, request):
        self.prompt = "\n".join(m.text or "" for m in request.messages)
        return super().complete(request)

    def judge(self, field, options, text):
        truth = _truth(text)
        if field == "label":  # the best-label phrasing: the zero-shot classifier
            return truth
        asked = next(label for label in ("billing", "shipping", "other_topics") if f'"{label}"' in self.prompt)
        agree = asked == truth
        negated = "wrong label" in self.prompt
        return "yes" if agree != negated else "no"


def _audit_project(tmp_path, *, gold: bool = True) -> tuple:
    """A YAML project on a few example records: dev with one wrong label, test all right (or no gold at all)."""
    frames = _gold()
    dev = frames["dev"].iloc[:12]
    dev = pd.concat([dev, frames["dev"][frames["dev"]["id"] == WRONG]]).drop_duplicates("id")
    test = frames["test"].iloc[:8].copy()
    # the fake's truth agrees with every gold label but the wrong one
    for frame in (dev, test):
        frame.loc[frame["id"] != WRONG, "label"] = [_truth(t) for t in frame.loc[frame["id"] != WRONG, "text"]]
    pd.read_json(EXAMPLE / "records.jsonl", lines=True).to_json(tmp_path / "records.jsonl", orient="records", lines=True)
    cfg = {**heuristic_config(), "name": "audit", "data": {"path": "records.jsonl"}}
    if gold:
        dev.to_json(tmp_path / "dev.jsonl", orient="records", lines=True)
        test.to_json(tmp_path / "test.jsonl", orient="records", lines=True)
        cfg.update(gold="dev.jsonl", test="test.jsonl")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    return tmp_path / "config.yaml", len(dev) + len(test)


@pytest.fixture
def audit_engine(monkeypatch):
    engine = AuditEngine()
    monkeypatch.setattr("labelloop.programs.lm.make_lm",
                        lambda *a, **k: dspy.LM("fake/rule", engine=engine, cache=False))
    return engine


def test_audit_gold_flags_the_wrong_label_and_a_rerun_pays_nothing(tmp_path, audit_engine):
    config, n = _audit_project(tmp_path)
    result = CliRunner().invoke(app, ["audit-gold", str(config), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert audit_engine.calls == 3 * n  # three phrasings, one call per gold record each
    assert WRONG in result.output and f"1 of {n} gold labels flagged" in result.output
    assert f"LLM calls this audit: {3 * n}" in result.output

    audit = pd.read_csv(tmp_path / "gold_audit.csv", dtype={"id": str})
    assert audit[audit["flagged"]]["id"].tolist() == [WRONG]
    top = audit.iloc[0]
    assert top["id"] == WRONG and top["suggested_label"] == "billing" and top["answered"] == 3
    # yes/no phrasings: P(no) = 0.8; best label: 1 - P(shipping) = 1 - 0.2 / 2 (the other two labels share 0.2)
    assert top["disagreement"] == pytest.approx((0.8 + 0.9 + 0.8) / 3, abs=1e-4)
    assert audit.loc[1:, "disagreement"].max() == pytest.approx(0.2)
    assert {"disagree_label_fits", "disagree_best_label", "disagree_expert"} <= set(audit.columns)

    again = CliRunner().invoke(app, ["audit-gold", str(config), "--no-progress"])
    assert again.exit_code == 0, again.output
    assert audit_engine.calls == 3 * n  # every answer came from the vote store
    assert "LLM calls this audit: 0" in again.output and f"reused from the vote store: {3 * n}" in again.output


def test_audit_gold_more_phrasings_ask_only_the_new_one(tmp_path, audit_engine):
    from labelloop.flows.audit import audit_gold

    config, n = _audit_project(tmp_path)
    project = labelloop.load_project(config)
    first = audit_gold(project, phrasings=2, split="dev", show_progress=False)
    assert first.calls == 2 * 13 and first.frame["split"].eq("dev").all()
    fourth = audit_gold(project, phrasings=4, threshold=0.7, output=tmp_path / "out" / "audit.csv", show_progress=False)
    assert fourth.calls == 2 * n + 2 * (n - 13)  # the first two phrasings were stored for dev
    assert fourth.per_phrasing["label_fits"]["reused"] == 13
    assert fourth.flagged["id"].tolist() == [WRONG] and (tmp_path / "out" / "audit.csv").is_file()


def test_audit_gold_refuses_without_gold(tmp_path, audit_engine):
    config, _ = _audit_project(tmp_path, gold=False)
    result = CliRunner().invoke(app, ["audit-gold", str(config), "--no-progress"])
    assert result.exit_code == 2, result.output
    assert "error:" in result.output and "audit-gold needs gold labels" in result.output
    assert audit_engine.calls == 0 and not (tmp_path / "gold_audit.csv").exists()


def test_audit_gold_refuses_bad_options(tmp_path, audit_engine):
    config, _ = _audit_project(tmp_path)
    for args, expected in ((["--phrasings", "9"], "--phrasings must be between 1 and 4"),
                           (["--threshold", "1.5"], "--threshold must be in [0, 1)"),
                           (["--split", "train"], "--split must be dev, test or both")):
        result = CliRunner().invoke(app, ["audit-gold", str(config), "--no-progress", *args])
        assert result.exit_code == 2 and expected in result.output, result.output
    assert audit_engine.calls == 0


def test_best_label_phrasing_reuses_the_zero_shot_labelers_answers(example_project):
    from labelloop.flows.audit import phrasing_version
    from labelloop.programs.audit import PHRASINGS

    project = labelloop.load_project(example_project)
    zero_shot = next(lf for lf in project.llm_labelers if lf.name == "zero_shot")
    assert phrasing_version(PHRASINGS[1], None, project) == zero_shot.version(project.context())
    versions = {phrasing_version(p, label, project) for p in PHRASINGS if p.per_label for label in project.taxonomy.names}
    assert len(versions) == 3 * len(project.taxonomy.names)  # one version per (phrasing, gold label)


def test_audit_gold_refuses_multilabel(multilabel_project):
    from labelloop.flows.audit import audit_gold
    from labelloop.programs.errors import ConfigError

    with pytest.raises(ConfigError, match="multi-class gold labels"):
        audit_gold(labelloop.load_project(multilabel_project), show_progress=False)


def test_cli_run_points_at_gold_issues(tmp_path):
    config, _ = _audit_project(tmp_path)
    result = CliRunner().invoke(app, ["run", str(config), "--no-progress", "--no-prefect"])
    assert result.exit_code == 0, result.output
    assert "the run's models disagree with" in result.output and "gold_issues.csv" in result.output
    run_dir = next((tmp_path / "runs").iterdir())
    issues = pd.read_csv(run_dir / "gold_issues.csv", dtype={"id": str})
    # among the first two: a gold label of other_topics, a class no labeler of this project votes, ranks about as low
    assert WRONG in issues[issues["split"] == "dev"].iloc[:2]["id"].tolist()
