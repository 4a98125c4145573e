"""``llm_budget:`` with the recorded-answer LM: calls counted, unasked pairs abstain, stored answers free, plan and reports."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

import labelloop
from labelloop.flows.budget import PATIENCE
from labelloop.flows.cli import app
from labelloop.flows.label_dataset import label_dataset
from labelloop.flows.plan import plan_budget, plan_calls
from labelloop.flows.project import load_project
from labelloop.flows.run_project import run_project
from labelloop.flows.store import VoteStore
from labelloop.labelers.labels import ABSTAIN
from labelloop.programs.errors import ConfigError
from tests.fakes import rule_lm

TRAIN, GOLD = 160, 40 + 80  # the example project's records; two LLM labelers answer each
LLM = ("zero_shot", "asks_about_money")


def _with(config_path, **keys):
    raw = yaml.safe_load(config_path.read_text())
    raw.update(keys)
    for key, value in keys.items():
        if value is None:
            raw.pop(key)
    config_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return config_path


def _train_answers(result, name):
    return result.splits["train"].answers[name]


def test_the_budget_is_respected_and_unasked_pairs_abstain(example_project):
    lm = rule_lm()
    result = label_dataset(load_project(_with(example_project, llm_budget={"max_calls": 60})), lm=lm, show_progress=False)
    b = result.budget
    assert lm.engine.calls == result.llm_calls == 2 * GOLD + b.llm_calls  # gold splits in full, the rest in budget
    assert 0 < b.spent <= 60 and b.llm_calls == b.spent and b.pairs == 2 * TRAIN
    assert b.unasked == 2 * TRAIN - b.spent and b.reused == 0
    assert sum(r["answers"] for r in b.rounds) == b.spent and all(r["by_score"] > 0 for r in b.rounds)
    for split in ("dev", "test"):
        assert all(a is not None for name in LLM for a in result.splits[split].answers[name])
    train = result.splits["train"]
    asked = [a is not None for a in _train_answers(result, "zero_shot")]
    assert asked == [a is not None for a in _train_answers(result, "asks_about_money")]  # records asked whole
    assert sum(asked) * 2 == b.spent
    votes = np.asarray(train.votes)
    unasked = ~np.array(asked)
    assert (votes[unasked, :2] == ABSTAIN).all()  # the LLM columns of records not asked: abstains
    assert (votes[unasked, 2:] != ABSTAIN).any()  # the heuristic labelers voted everywhere
    assert (votes[~unasked, 0] != ABSTAIN).all()
    assert result.asked == {name: sum(asked) + GOLD for name in LLM}
    with VoteStore(example_project.parent / ".labelloop" / "votes.sqlite") as store:
        assert store.count() == 2 * GOLD + b.spent


def test_no_budget_asks_everything_as_before_and_a_budget_covering_everything_changes_nothing(example_project, tmp_path):
    plain_lm = rule_lm()
    plain = label_dataset(load_project(example_project), lm=plain_lm, show_progress=False)
    assert plain.budget is None and plain_lm.engine.calls == plain.llm_calls == 2 * (TRAIN + GOLD)
    assert all(a is not None for name in LLM for a in _train_answers(plain, name))

    other = tmp_path / "covering"
    shutil.copytree(example_project.parent, other, ignore=shutil.ignore_patterns(".labelloop", "runs"))
    lm = rule_lm()
    covered = label_dataset(load_project(_with(other / "config.yaml", llm_budget={"max_calls": 10_000, "rounds": 1})),
                            lm=lm, show_progress=False)
    assert covered.budget.spent == 2 * TRAIN and covered.budget.unasked == 0 and lm.engine.calls == plain_lm.engine.calls
    assert covered.budget.stopped == "every train record has its answers"
    for split, votes in plain.splits.items():
        assert np.array_equal(votes.votes, covered.splits[split].votes), split
        assert votes.answers == covered.splits[split].answers
    for key in ("llm_calls", "asked", "reused", "invalid", "failed", "truncated", "new_records"):
        assert getattr(plain, key) == getattr(covered, key), key


def test_stored_answers_are_used_free_and_never_paid_for_twice(example_project):
    first_lm = rule_lm()
    first = label_dataset(load_project(_with(example_project, llm_budget={"max_calls": 40})), lm=first_lm,
                          show_progress=False)
    asked_first = {i for i, a in enumerate(_train_answers(first, "zero_shot")) if a is not None}
    lm = rule_lm()
    second = label_dataset(load_project(example_project), lm=lm, show_progress=False)  # same budget again
    b = second.budget
    assert b.reused == first.budget.spent and lm.engine.calls == b.llm_calls == b.spent <= 40  # gold: all stored
    asked_second = {i for i, a in enumerate(_train_answers(second, "zero_shot")) if a is not None}
    assert asked_first < asked_second and len(asked_second) * 2 == first.budget.spent + b.spent
    for i in asked_first:  # the first run's answers, reused as they were
        assert _train_answers(second, "zero_shot")[i] == _train_answers(first, "zero_shot")[i]

    # count_stored: stored answers are charged, for honest experiments on a filled store; still no call
    label_dataset(load_project(_with(example_project, llm_budget=None)), lm=rule_lm(), show_progress=False)
    lm = rule_lm()
    project = load_project(_with(example_project, llm_budget={"fraction": 0.25}))
    honest = label_dataset(project, lm=lm, show_progress=False, count_stored=True)
    assert lm.engine.calls == 0 and honest.llm_calls == 0
    assert honest.budget.count_stored and 0 < honest.budget.spent <= 80 == honest.budget.max_answers
    assert honest.budget.reused == honest.budget.spent and honest.budget.unasked == 2 * TRAIN - honest.budget.spent
    assert sum(a is not None for a in _train_answers(honest, "zero_shot")) * 2 == honest.budget.spent
    free = label_dataset(project, lm=lm, show_progress=False)  # without it every stored answer is used
    assert free.budget.spent == 0 and free.budget.reused == 2 * TRAIN and free.budget.unasked == 0


def test_without_gold_dev_the_rounds_spend_the_budget_and_with_it_a_plateau_stops_them(example_project, monkeypatch):
    _with(example_project, llm_budget={"max_calls": 120, "rounds": PATIENCE + 1})
    monkeypatch.setattr("labelloop.flows.budget.DEV_TOLERANCE", 1.0)  # no gain is ever enough
    stopped = label_dataset(load_project(example_project), lm=rule_lm(), show_progress=False).budget
    assert len(stopped.rounds) == PATIENCE and stopped.stopped.startswith("dev score gained no more than 1.0")
    assert len(stopped.dev_scores) == PATIENCE + 1 and stopped.spent < 120

    no_gold = example_project.parent.parent / "no_gold"
    shutil.copytree(example_project.parent, no_gold, ignore=shutil.ignore_patterns(".labelloop", "runs"))
    spent = label_dataset(load_project(_with(no_gold / "config.yaml", gold=None)), lm=rule_lm(), show_progress=False).budget
    assert spent.dev_scores == [None] * len(spent.dev_scores)
    assert len(spent.rounds) == PATIENCE + 1 and spent.spent == 120 and spent.stopped == "budget spent"
    assert [r["answers"] for r in spent.rounds] == [120 // (PATIENCE + 1)] * (PATIENCE + 1)  # left / rounds left


def test_random_share_one_picks_nothing_by_score(example_project):
    b = label_dataset(load_project(_with(example_project, llm_budget={"max_calls": 50, "random_share": 1.0})),
                      lm=rule_lm(), show_progress=False).budget
    assert all(r["by_score"] == 0 and r["at_random"] > 0 for r in b.rounds)


def test_the_same_seed_asks_the_same_records(example_project, tmp_path):
    picks = []
    for seed in (0, 0, 1):
        folder = tmp_path / f"seed{len(picks)}"
        shutil.copytree(example_project.parent, folder, ignore=shutil.ignore_patterns(".labelloop", "runs"))
        result = label_dataset(load_project(_with(folder / "config.yaml", llm_budget={"max_calls": 50}, seed=seed)),
                               lm=rule_lm(), show_progress=False)
        picks.append({i for i, a in enumerate(_train_answers(result, "zero_shot")) if a is not None})
    assert picks[0] == picks[1] != picks[2]


def test_plan_shows_the_budget_and_the_most_a_run_asks(example_project):
    project = load_project(_with(example_project, llm_budget={"max_calls": 60}))
    budget = plan_budget(project)
    assert budget["max_answers"] == 60 and budget["train_missing"] == 2 * TRAIN and budget["gold_calls"] == 2 * GOLD
    assert budget["train_answers_at_most"] == 60 and budget["llm_calls_at_most"] == 2 * GOLD + 60
    rows = plan_calls(project)
    assert [(r["train_missing"], r["train_calls"]) for r in rows] == [(TRAIN, TRAIN)] * 2
    out = CliRunner().invoke(app, ["plan", str(example_project)])
    assert out.exit_code == 0, out.output
    text = " ".join(out.output.split())
    assert "llm_budget: 60 answers on the train split" in text
    assert f"total: at most {2 * GOLD + 60} LLM calls" in text and f"without the budget: {2 * (TRAIN + GOLD)} LLM calls" in text

    lm = rule_lm()
    label_dataset(project, lm=lm, show_progress=False)
    spent = lm.engine.calls - 2 * GOLD
    after = plan_budget(load_project(example_project))
    assert after["gold_calls"] == 0 and after["train_missing"] == 2 * TRAIN - spent
    assert after["llm_calls_at_most"] == min(60, 2 * TRAIN - spent)

    assert plan_budget(load_project(_with(example_project, llm_budget=None))) is None
    assert all("train_missing" not in r for r in plan_calls(load_project(example_project)))
    plain = " ".join(CliRunner().invoke(app, ["plan", str(example_project)]).output.split())
    assert "llm_budget" not in plain and "total: " in plain


def test_metrics_report_and_train_show_the_budget(example_project):
    lm = rule_lm()
    project = load_project(_with(example_project, llm_budget={"fraction": 0.2}, student={"features": "tfidf"}))
    run_dir = run_project(project, train=False, lm=lm, show_progress=False)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    b = metrics["llm_budget"]
    assert b["max_answers"] == 64 and b["spent"] <= 64 and b["llm_calls"] == lm.engine.calls - 2 * GOLD
    assert 0 < b["drawn_at_random"] <= b["spent"] // 2  # a count of records (two answers each), not their ids
    assert b["unasked"] == 2 * TRAIN - b["spent"] and metrics["llm_calls"] == lm.engine.calls
    report = (run_dir / "report.md").read_text()
    assert f"LLM budget: {b['spent']} of 64 (record, labeler) answers" in report and f"{b['unasked']} of 320 pairs" in report

    # labelloop train: stored answers only, the budget's abstains stay abstains, no call
    calls = lm.engine.calls
    trained = labelloop.train(load_project(example_project))
    again = json.loads((trained / "metrics.json").read_text())
    assert again["llm_calls"] == 0 and lm.engine.calls == calls
    assert again["llm_budget"]["spent"] == 0 and again["llm_budget"]["reused"] == b["spent"]
    assert again["llm_budget"]["stopped"].startswith("stored answers only")
    # the records no labeler voted on (unasked, no rule matched) were labelled by the student itself
    assert metrics["self_trained"] == 0  # no student trained in the first run
    assert again["self_trained"] == round((1 - again["coverage"]) * TRAIN) > 0
    assert f"the student labelled the other {again['self_trained']} itself" in (trained / "report.md").read_text()
    assert f"the student labelled the other {again['self_trained']} itself" in (trained / "model_card.md").read_text()
    out = CliRunner().invoke(app, ["train", str(example_project), "--no-prefect"])
    assert out.exit_code == 0 and "llm_budget: 0 of 64 answers spent" in " ".join(out.output.split()), out.output

    plain = run_project(load_project(_with(example_project, llm_budget=None)), train=False, lm=rule_lm(), show_progress=False)
    assert "llm_budget" not in json.loads((plain / "metrics.json").read_text())
    assert "LLM budget" not in (plain / "report.md").read_text()


def test_gold_answers_missing_still_stop_train(example_project):
    from labelloop.programs.errors import StateError

    project = load_project(_with(example_project, llm_budget={"max_calls": 10}))
    with pytest.raises(StateError, match=f"{2 * GOLD} LLM answers are not stored yet"):
        labelloop.train(project)


def test_label_shards_ask_only_the_gold_splits_under_a_budget(example_project, fake_lm):
    from labelloop.flows.orchestration import label_shard

    _with(example_project, llm_budget={"max_calls": 10})
    log = logging.getLogger("labelloop")
    level = log.level
    try:
        done = [label_shard.fn(str(example_project), name, 0, 1) for name in LLM]  # the task's function, without Prefect
    finally:
        log.setLevel(level)  # the task turns labelloop's INFO lines on for Prefect's logs
    lm = fake_lm
    assert [d["records"] for d in done] == [GOLD, GOLD] and lm.engine.calls == 2 * GOLD


def test_a_multilabel_budget_counts_answers_not_calls(multilabel_project):
    lm = rule_lm()
    project = load_project(_with(multilabel_project, llm_budget={"fraction": 0.25, "rounds": 2}))
    n_train, n_gold = len(project.splits["train"]), len(project.splits["dev"]) + len(project.splits["test"])
    result = label_dataset(project, lm=lm, show_progress=False)
    b = result.budget
    assert b.max_answers == n_train // 4 and 0 < b.spent <= b.max_answers and b.unasked == n_train - b.spent
    assert b.llm_calls > b.spent and lm.engine.calls == result.llm_calls  # IRR: infer, then rank when it found candidates
    assert sum(a is not None for a in _train_answers(result, "irr")) == b.spent
    gold_answers = [a for split in ("dev", "test") for a in result.splits[split].answers["irr"]]
    assert len(gold_answers) == n_gold and all(a is not None for a in gold_answers)


@pytest.mark.parametrize("budget, message", [
    ({"max_calls": 10, "fraction": 0.5}, "give exactly one of max_calls .* got both"),
    ({"rounds": 2}, "give exactly one of max_calls .* got neither"),
    ({"max_calls": 0}, r"llm_budget.max_calls: Input should be greater than or equal to 1 \(got 0\)"),
    ({"max_calls": 2.5}, r"llm_budget.max_calls: Input should be a valid integer \(got 2.5\)"),
    ({"fraction": 0}, r"llm_budget.fraction: Input should be greater than 0 \(got 0\)"),
    ({"fraction": 1.5}, r"llm_budget.fraction: Input should be less than or equal to 1 \(got 1.5\)"),
    ({"fraction": 0.5, "random_share": 2}, "llm_budget.random_share: Input should be less than or equal to 1"),
    ({"fraction": 0.5, "rounds": 0}, "llm_budget.rounds: Input should be greater than or equal to 1"),
    ({"fraction": 0.5, "calls": 3}, "llm_budget.calls: Extra inputs are not permitted"),
])
def test_budget_config_errors_say_what_is_expected(example_project, budget, message):
    with pytest.raises(ConfigError, match=message):
        load_project(_with(example_project, llm_budget=budget))


def test_a_fraction_of_one_and_max_calls_allow_what_they_say(example_project):
    from labelloop.flows.config import LLMBudgetSpec

    assert LLMBudgetSpec(fraction=1).limit(320) == 320 and LLMBudgetSpec(fraction=0.1).limit(7) == 1
    assert LLMBudgetSpec(max_calls=5000).limit(320) == 5000
    project = load_project(_with(example_project, llm_budget={"fraction": 1.0}))
    assert project.config.llm_budget.rounds == 4 and project.config.llm_budget.random_share == 0.5


def test_label_model_auto_is_chosen_on_dev_and_the_run_says_which(example_project):
    project = load_project(_with(example_project, llm_budget={"fraction": 0.2}, label_model="auto",
                                 student={"features": "tfidf"}))
    run_dir = run_project(project, train=False, lm=rule_lm(), show_progress=False)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    choice = metrics["label_model_choice"]
    assert set(choice["dev"]) == {"snorkel", "majority"} and choice["rule"].startswith("auto:")
    best = "majority" if choice["dev"]["majority"] > choice["dev"]["snorkel"] else "snorkel"
    assert metrics["label_model"] == best
    assert metrics["scores"]["dev"]["label_model"]["accuracy"] == pytest.approx(choice["dev"][best], abs=1e-3)
    assert f"label model: {best} (auto: gold dev score" in (run_dir / "report.md").read_text()

    plain = run_project(load_project(_with(example_project, label_model="snorkel")), train=False, lm=rule_lm(),
                        show_progress=False)
    assert "label_model_choice" not in json.loads((plain / "metrics.json").read_text())


def test_the_label_model_learns_from_the_random_draw_only_while_pairs_stay_unasked():
    from labelloop.flows.budget import BudgetUse

    use = BudgetUse(max_answers=10, pairs=20, unasked=6, drawn_at_random=["r1", "r7"])
    assert use.fit_sample() == ["r1", "r7"] and use.to_dict()["drawn_at_random"] == 2
    use.unasked = 0  # every pair answered: learn from every record, as without a budget
    assert use.fit_sample() == []
