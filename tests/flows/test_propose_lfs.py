"""`labelloop propose-lfs`: the LLM writes keyword and regex labeling functions, checked, scored on gold dev and stored.

The LLM is a recorded-answer engine at the DSPy seam (tests.fakes_lfs.ProposalEngine).
"""

from __future__ import annotations

import json

import dspy
import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from labelloop.flows.cli import app
from labelloop.flows.config import load_config
from labelloop.flows.project import load_project
from labelloop.flows.propose_lfs import propose_lfs
from labelloop.programs.errors import ConfigError, StateError
from labelloop.programs.lf_proposal import RuleProposer, validate_answer
from tests.fakes_lfs import EXAMPLE_ANSWERS, ProposalEngine, rules


def _lm(engine: ProposalEngine) -> dspy.LM:
    return dspy.LM("fake/proposals", engine=engine, cache=False)


def _propose(config, engine, **kwargs):
    return propose_lfs(load_project(config, skip_missing_includes=True), lm=_lm(engine), show_progress=False, **kwargs)


def _with(config, **keys) -> None:
    raw = yaml.safe_load(config.read_text())
    raw.update(keys)
    config.write_text(yaml.safe_dump(raw, sort_keys=False))


def test_kept_rules_are_written_as_labelers_the_config_includes(example_project):
    engine = ProposalEngine()
    result = _propose(example_project, engine)
    out = example_project.parent / "generated_lfs.yaml"
    assert result.output == out and out.is_file() and result.report.is_file()
    assert result.llm_calls == engine.calls > 0 and result.calls_this_run == engine.calls
    text = out.read_text()
    entries = yaml.safe_load(text)
    assert [e["name"] for e in entries] == sorted(c.name for c in result.kept) or len(entries) == len(result.kept)
    assert {e["type"] for e in entries} <= {"keywords", "regex", "similar"} and all(e["origin"].startswith("propose-lfs round")
                                                                          for e in entries)
    assert text.count("# ") >= len(entries) and "dev accuracy" in text  # each rule's scores as a comment
    kept_words = {w for e in entries for w in e.get("words", [])}
    assert {"invoice", "password"} <= kept_words and "charged" not in kept_words  # charged: also "charging" cases
    assert "the" not in kept_words  # matches every label's texts: dev accuracy too low
    # every kept rule is right on gold dev often enough, and ordinary labelers once included
    assert all((c.dev_correct + 1) / (c.dev_matched + 2) >= 0.65 for c in result.kept)
    _with(example_project, labelers=[{"type": "zero_shot"}, {"include": "generated_lfs.yaml"}])
    project = load_project(example_project)
    assert [lf.name for lf in project.heuristic_lfs] == [e["name"] for e in entries]
    report = result.report.read_text()
    assert "below min_accuracy" in report and "kept as" in report
    # a run's LF summary says where each rule came from
    from labelloop.flows.run_project import run_project

    _with(example_project, labelers=[{"include": "generated_lfs.yaml"}], label_model="majority")
    run_dir = run_project(load_project(example_project), train=False, show_progress=False)
    summary = pd.read_csv(run_dir / "lf_summary.csv").set_index("labeler")
    assert set(summary["origin"]) == {e["origin"] for e in entries} and "origin" in (run_dir / "report.md").read_text()


def test_dangerous_and_invalid_regexes_are_dropped_with_the_reason(example_project):
    answers = {"technical_issue": [rules("error", regex=[r"(a+)+$", r"(unclosed", r"(\w+)\1", r"\bfreez(e|es|ing)\b"])]}
    result = _propose(example_project, ProposalEngine(answers))
    report = result.report.read_text()
    patterns = [c.rule.get("pattern") for c in result.candidates]
    assert r"\bfreez(e|es|ing)\b" in patterns
    assert not {r"(a+)+$", r"(unclosed", r"(\w+)\1"} & set(patterns)  # never run on a record
    rules_, dropped = validate_answer([], [], [r"(a+)+$", r"(unclosed", r"(\w+)\1"])
    assert rules_ == [] and len(dropped) == 3
    assert all(d["problem"].startswith("regex") for d in dropped)
    assert "freez" in report


def test_malformed_answers_are_asked_again_then_give_no_rule():
    engine = ProposalEngine({"billing": ["not json at all", rules("refund")]})
    proposal = RuleProposer(max_attempts=2)
    with dspy.context(lm=_lm(engine)):
        got = proposal(labels="- billing\n- shipping", label="billing", examples="1. refund", counter_examples="none",
                       rules_so_far="none")
    assert got.calls == 2 and got.rules == [{"words": ["refund"], "all_of": [], "none_of": []}]
    assert "not the requested JSON" in got.retried_for[0]
    assert "not the requested JSON" in engine.asked[1][1]  # the second ask states the problem

    bad = rules("   ", "a phrase of far too many words to be a keyword", combos=[{"any_of": ["ok"], "none_of": ["ok"]}],
                regex=["(x+)*y"])
    engine = ProposalEngine({"billing": [bad, json.dumps({"keywords": "refund", "combinations": [], "regex_rules": []})]})
    with dspy.context(lm=_lm(engine)):
        got = proposal(labels="-", label="billing", examples="none", counter_examples="none", rules_so_far="none")
    assert got.rules == [] and got.calls == 2
    problems = " ".join(got.retried_for)
    assert "at most 4 words" in problems and "none_of repeats" in problems and "regex" in problems


def test_duplicates_are_proposed_once_and_near_duplicates_merged(example_project):
    answers = {"billing": [rules("refund", "refund", combos=[["refund", "invoice"], ["invoice", "refund"],
                                                             ["invoice", "refund", "refunded"]])]}
    result = _propose(example_project, ProposalEngine(answers, default={}))
    billing = [c for c in result.candidates if c.label == "billing" and "words" in c.rule]
    assert len(billing) == 3  # a repeated keyword, and the same words in another order, are one rule
    statuses = [c.status for c in billing if "invoice" in c.rule["words"]]
    assert sorted(statuses)[0] == "kept" and sorted(statuses)[1].startswith("merged into any of [")


def test_an_interrupted_run_resumes_paying_only_for_missing_proposals(example_project, tmp_path):
    full = ProposalEngine()
    reference = _propose(example_project, full)
    expected = reference.output.read_text()
    reference.output.unlink()
    (example_project.parent / ".labelloop").rename(tmp_path / "store_of_full_run")

    killed = ProposalEngine(fail_after=2)
    with pytest.raises(KeyboardInterrupt):
        _propose(example_project, killed)
    assert not reference.output.exists()  # nothing half-written
    resumed = ProposalEngine()
    result = _propose(example_project, resumed)
    assert resumed.calls == full.calls - 2 and result.calls_this_run == full.calls - 2
    assert result.llm_calls == full.calls and result.output.read_text() == expected
    with pytest.raises(StateError, match="--overwrite"):  # the file may hold a person's edits
        _propose(example_project, ProposalEngine())
    again = ProposalEngine()
    assert _propose(example_project, again, overwrite=True).calls_this_run == 0 and again.calls == 0


def test_the_budget_bounds_the_calls(example_project):
    _with(example_project, propose_lfs={"max_calls": 3})
    engine = ProposalEngine()
    result = _propose(example_project, engine)
    assert engine.calls == result.llm_calls == 3 and "budget" in result.stop_reason


def test_several_samples_per_label_see_other_texts(example_project):
    _with(example_project, propose_lfs={"samples": 2, "rounds": 1})
    engine = ProposalEngine()
    result = _propose(example_project, engine)
    assert engine.calls == result.llm_calls == 15  # 5 labels x 2 samples, and example texts once per label
    assert sorted(engine.examples_asked) == sorted(EXAMPLE_ANSWERS)
    billing = [content for label, content in engine.asked if label == "billing"]
    assert len(billing) == 2 and billing[0] != billing[1]


def test_later_rounds_show_the_misses_and_stop_when_nothing_improves(example_project):
    _with(example_project, propose_lfs={"similar": False})  # keyword rules only: their misses drive the rounds
    answers = {label: [answer, rules("zzz never matches")] for label, answer in EXAMPLE_ANSWERS.items()}
    engine = ProposalEngine(answers)
    result = _propose(example_project, engine)
    assert [r["round"] for r in result.rounds] == [1, 2] and "no more gold dev records right" in result.stop_reason
    second = [content for label, content in engine.asked[5:]]
    assert second and all("[[ ## rules_so_far ## ]]" in c for c in second)
    assert any("any of [invoice]" in c for c in second)  # the kept rules are shown, so it proposes others


def test_example_texts_become_similar_rules_with_a_threshold_chosen_on_dev(example_project):
    from labelloop.flows.propose_lfs import THRESHOLDS
    from labelloop.labelers.heuristics import SimilarityLF, max_similarity, reaches
    from labelloop.programs.embeddings import embed
    from tests.fakes_lfs import EXAMPLE_TEXTS

    # billing's first answer is not JSON and its second holds too few usable texts: asked again, within max_attempts 3
    _with(example_project, propose_lfs={"max_attempts": 3})
    engine = ProposalEngine(texts={"billing": ["not json", {"texts": ["refund", "refund"]}]})
    result = _propose(example_project, engine)
    assert engine.examples_asked.count("billing") == 3 and all(engine.examples_asked.count(x) == 1
                                                                for x in EXAMPLE_TEXTS if x != "billing")
    similar = {c.label: c for c in result.candidates if "similar_to" in c.rule}
    assert set(similar) == set(EXAMPLE_TEXTS) and all(c.rule["similar_to"] == EXAMPLE_TEXTS[c.label]
                                                      for c in similar.values())
    project = load_project(example_project, skip_missing_includes=True)
    dev = project.splits["dev"]
    embedded, gold = embed(list(dev["text"])), list(dev["label"])
    for c in similar.values():  # the threshold has the most right minus wrong dev matches of the grid
        sims = max_similarity(embedded, c.rule["similar_to"])
        mine = np.array([g == c.label for g in gold])
        gain = {t: int((reaches(sims, t) & mine).sum()) - int((reaches(sims, t) & ~mine).sum()) for t in THRESHOLDS}
        assert c.rule["threshold"] in THRESHOLDS and gain[c.rule["threshold"]] == max(gain.values())
        assert c.dev_correct == int((reaches(sims, c.rule["threshold"]) & mine).sum())
    entries = [e for e in yaml.safe_load(result.output.read_text()) if e["type"] == "similar"]
    kept = {c.name: c for c in result.kept if "similar_to" in c.rule}
    assert entries and {e["name"] for e in entries} == set(kept)
    assert all(e["examples"] == kept[e["name"]].rule["similar_to"] and e["threshold"] == kept[e["name"]].rule["threshold"]
               for e in entries)
    # included, each is an ordinary labeler that votes where its rule matched the unlabeled records
    _with(example_project, labelers=[{"include": "generated_lfs.yaml"}])
    project = load_project(example_project)
    lfs = {lf.name: lf for lf in project.heuristic_lfs if isinstance(lf, SimilarityLF)}
    assert set(lfs) == set(kept)
    from labelloop.flows.label_dataset import apply_heuristics

    texts = list(project.splits["train"]["text"])
    votes = apply_heuristics(list(lfs.values()), texts)
    for j, (name, lf) in enumerate(lfs.items()):
        expected = reaches(max_similarity(embed(texts), kept[name].rule["similar_to"]), kept[name].rule["threshold"])
        assert ((votes[:, j] == lf.label) == expected).all()  # same texts, same rule, same comparison

    plain = ProposalEngine()  # similar: false asks for no example texts
    _with(example_project, propose_lfs={"similar": False}, labelers=[{"type": "zero_shot"}])
    assert not any("similar_to" in c.rule for c in _propose(example_project, plain, overwrite=True).candidates)
    assert plain.examples_asked == []


def test_include_files_are_checked(example_project):
    folder = example_project.parent
    _with(example_project, labelers=[{"include": "generated_lfs.yaml"}])
    with pytest.raises(ConfigError, match="propose-lfs"):
        load_config(example_project)
    assert load_config(example_project, skip_missing_includes=True).labelers == []
    (folder / "generated_lfs.yaml").write_text(yaml.safe_dump(
        [{"type": "keywords", "name": "gen_x", "label": "refunds", "words": ["refund"]}]))
    with pytest.raises(ConfigError, match="'refunds' is not in the taxonomy"):
        load_project(example_project)
    (folder / "generated_lfs.yaml").write_text(yaml.safe_dump([{"type": "python", "module": "lfs.py"}]))
    with pytest.raises(ConfigError, match="only keywords, regex and similar labelers"):
        load_config(example_project)
    (folder / "generated_lfs.yaml").write_text("type: keywords\n")
    with pytest.raises(ConfigError, match="expected a YAML list"):
        load_config(example_project)
    _with(example_project, labelers=[{"include": "generated_lfs.yaml", "type": "keywords"}])
    with pytest.raises(ConfigError, match="nothing else"):
        load_config(example_project)


def test_combined_rules_in_a_config(example_project):
    _with(example_project, labelers=[{"type": "keywords", "name": "refund_not_shipping", "label": "billing",
                                      "words": ["refund"], "none_of": ["parcel"], "all_of": ["order"]}])
    (lf,) = load_project(example_project).heuristic_lfs
    from types import SimpleNamespace

    votes = [lf(SimpleNamespace(text=t)) for t in ("refund my order", "refund the parcel order", "refund please")]
    assert votes == [0, -1, -1]


def test_needs_gold_dev_and_a_multiclass_task(example_project):
    _with(example_project, gold=None)
    with pytest.raises(ConfigError, match="gold dev records"):
        _propose(example_project, ProposalEngine())


def test_command_line(example_project, monkeypatch):
    engine = ProposalEngine()
    monkeypatch.setattr("labelloop.programs.lm.make_lm", lambda *a, **k: _lm(engine))
    result = CliRunner().invoke(app, ["propose-lfs", str(example_project), "--no-progress", "--no-prefect"])
    assert result.exit_code == 0, result.output
    assert "labeling functions kept" in result.output and "include: generated_lfs.yaml" in result.output
    again = CliRunner().invoke(app, ["propose-lfs", str(example_project), "--no-prefect"])
    assert again.exit_code == 2 and "--overwrite" in again.output


@pytest.mark.usefixtures("prefect_harness")
def test_runs_as_a_prefect_flow(example_project, monkeypatch):
    from labelloop.flows.orchestration import propose_lfs_flow

    engine = ProposalEngine()
    monkeypatch.setattr("labelloop.programs.lm.make_lm", lambda *a, **k: _lm(engine))
    result = propose_lfs_flow(str(example_project))
    assert result.kept and engine.calls == result.llm_calls
