"""The Python API: `import labelloop`, a project from a path or a dict, run, predict; a new labeler type; stored keys."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import pytest

import labelloop
from labelloop.labelers.base import LABELER_TYPES, LabelerSpec, LabelingContext, LLMLabeler
from labelloop.labelers.labels import ABSTAIN
from tests.conftest import EXAMPLE, ROOT
from tests.fakes import rule_lm

TEXTS = ["I was charged twice, please refund me", "My parcel never arrived", "The app crashes on start"]


def test_the_readme_example_runs_as_written(tmp_path, monkeypatch, capsys):
    """The code block under "Using it from Python" in README.md, run from a copy of the repository's data/."""
    readme = (ROOT / "README.md").read_text()
    code = readme.split("## Using it from Python", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    shutil.copytree(EXAMPLE, tmp_path / "data" / "example", ignore=shutil.ignore_patterns("runs", ".labelloop"))
    monkeypatch.chdir(tmp_path)
    lm = rule_lm()
    monkeypatch.setattr("labelloop.programs.lm.make_lm", lambda *a, **k: lm)
    exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "zero_shot 0 280" in out and "asks_about_money 0 280" in out
    assert "billing" in out and "shipping" in out and lm.engine.calls == 560


def test_the_example_project_from_python(example_project):
    lm = rule_lm()
    project = labelloop.load_project(example_project)
    assert sum(row["llm_calls"] for row in labelloop.plan(project)) == 560
    run_dir = labelloop.run(project, lm=lm)
    assert json.loads((run_dir / "metrics.json").read_text())["llm_calls"] == lm.engine.calls == 560
    predictions = labelloop.predict(run_dir, TEXTS)
    assert predictions["label"].tolist() == ["billing", "shipping", "technical_issue"]
    assert predictions["confidence"].between(0, 1).all()
    assert labelloop.plan(project)[0]["llm_calls"] == 0  # every answer is stored now
    again = labelloop.train(project)  # from stored answers only
    assert json.loads((again / "metrics.json").read_text())["llm_calls"] == 0


def test_a_project_from_a_dict_and_dataframes(tmp_path):
    records = pd.read_json(EXAMPLE / "records.jsonl", lines=True)
    dev = pd.read_json(EXAMPLE / "dev.jsonl", lines=True)
    config = {"name": "from-python", "taxonomy": [{"name": "billing", "description": "money"},
                                                  {"name": "shipping", "description": "parcels"},
                                                  {"name": "other_topics", "description": "anything else"}],
              "labelers": [{"type": "keywords", "name": "kw_money", "label": "billing", "words": ["refund", "charged"]},
                           {"type": "regex", "name": "re_parcel", "label": "shipping", "pattern": r"\bparcel"},
                           {"type": "keywords", "name": "kw_app", "label": "other_topics", "words": ["app", "login"]}],
              "label_model": "majority", "student": {"features": "tfidf"}}
    dev = dev[dev["label"].isin(["billing", "shipping"])]
    project = labelloop.load_project(config, base_dir=tmp_path, data=records, gold=dev)
    assert project.config_path is None and len(project.splits["train"]) == len(records)
    run_dir = labelloop.run(project)  # no LLM labeler: no LM is built
    assert run_dir.parent == tmp_path / "runs"
    frame = pd.DataFrame({"doc": ["a", "b"], "body": ["refund my order", "where is the parcel"]})
    out = labelloop.predict(run_dir / "model.skops", frame, id_column="doc", text_column="body")
    assert out["id"].tolist() == ["a", "b"] and out["label"].tolist() == ["billing", "shipping"]
    with pytest.raises(labelloop.DataError, match=r"expected column\(s\) \['text'\]"):
        labelloop.load_project(config, base_dir=tmp_path, data=records.rename(columns={"text": "body"}))
    with pytest.raises(labelloop.ConfigError, match="data: Field required"):
        labelloop.load_project(config, base_dir=tmp_path)
    with pytest.raises(labelloop.ConfigError, match="give the records' file"):
        labelloop.load_project({**config, "data": {"text": "body"}}, base_dir=tmp_path)


def test_a_fresh_folder_with_its_own_flows_and_programs_packages(example_project, tmp_path):
    """A user's own `flows/` and `programs/` (every Prefect project has a `flows/`) never shadow labelloop's."""
    labelloop.label(labelloop.load_project(example_project), lm=rule_lm())  # answers stored; the script pays for none
    user = tmp_path / "user"
    for package in ("flows", "programs", "labelers"):
        (user / package).mkdir(parents=True)
        (user / package / "__init__.py").write_text(f"MINE = {package!r}\n")
    (user / "script.py").write_text(textwrap.dedent(f"""
        import flows, programs
        import labelloop

        assert flows.MINE == "flows" and programs.MINE == "programs"
        assert labelloop.flows.__name__ == "labelloop.flows" and "user" not in labelloop.flows.__file__
        project = labelloop.load_project({str(example_project)!r})
        run_dir = labelloop.train(project)
        print(labelloop.predict(run_dir, {TEXTS!r})["label"].tolist())
    """))
    done = subprocess.run([sys.executable, "script.py"], cwd=user, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "['billing', 'shipping', 'technical_issue']"


@dataclass
class ShortlistLabeler(LLMLabeler):
    """A new LLM labeler type: the LLM picks one of a few labels, or "neither" (an abstain)."""

    name: str
    labels: list[str]

    def version(self, ctx: LabelingContext) -> str:
        return f"shortlist-{'-'.join(self.labels)}-{ctx.lm.key()[0]}"

    def program(self, ctx, *, optimized=True, lm=None):
        from labelloop.programs.choice import ClosedChoice
        from labelloop.programs.signatures import classify_signature

        options = [*self.labels, "neither"]
        return ClosedChoice(classify_signature(options, [""] * len(options)), "label", options)

    def votes(self, answers, taxonomy) -> np.ndarray:
        return np.array([taxonomy.id(a["answer"]) if a and a.get("answer") in self.labels else ABSTAIN for a in answers])


class ShortlistSpec(LabelerSpec):
    type: Literal["shortlist"]
    name: str
    labels: list[str]

    def build(self, taxonomy):
        return [ShortlistLabeler(self.name, [taxonomy.names[self.label_id(taxonomy, x)] for x in self.labels])]


def test_a_new_llm_labeler_type_is_one_class_and_one_spec(example_project, monkeypatch):
    monkeypatch.setitem(LABELER_TYPES, "shortlist", ShortlistSpec)
    import yaml

    cfg = yaml.safe_load(example_project.read_text())
    cfg["labelers"].append({"type": "shortlist", "name": "money_or_parcel", "labels": ["billing", "shipping"]})
    example_project.write_text(yaml.safe_dump(cfg))
    lm = rule_lm()
    project = labelloop.load_project(example_project)
    assert [lf.name for lf in project.llm_labelers] == ["zero_shot", "asks_about_money", "money_or_parcel"]
    assert labelloop.plan(project)[2] == {"labeler": "money_or_parcel", "records": 280, "stored": 0, "failed": 0,
                                          "retrying": 0, "llm_calls": 280,
                                          "prompt_tokens": labelloop.plan(project)[2]["prompt_tokens"]}
    run_dir = labelloop.run(project, lm=lm)
    summary = pd.read_csv(run_dir / "lf_summary.csv").set_index("labeler")
    assert summary.loc["money_or_parcel", "polarity"] == "[0, 1]"  # voted billing and shipping, abstained elsewhere
    assert 0 < summary.loc["money_or_parcel", "coverage"] < 1
    votes = pd.read_parquet(run_dir / "votes_train.parquet")
    assert set(votes["money_or_parcel"]) == {"billing", "shipping", ""}
    assert lm.engine.calls == 560 + 280
    with pytest.raises(labelloop.ConfigError, match="label 'refunds' is not in the taxonomy"):
        cfg["labelers"][-1]["labels"] = ["refunds", "shipping"]
        example_project.write_text(yaml.safe_dump(cfg))
        labelloop.load_project(example_project)


def test_stored_answers_keep_their_keys():
    """Labeler versions as stores written before labelloop was one package hold them: no answer is paid for twice."""
    from labelloop.flows.config import BootstrapSpec
    from labelloop.flows.store import lm_key, step_key
    from labelloop.programs.taxonomy import prompt_version
    from labelloop.programs.taxonomy_rules import Constraints

    assert [prompt_version(step, Constraints()) for step in ("name", "update", "review")] == [
        "a97f1902adf43a7f", "3e319ccc7fb333d3", "66e019a4cbc629b5"]
    project = labelloop.load_project(EXAMPLE / "config.yaml")
    ctx = project.context()
    # PROMPT_FORMAT compact-json-2 (the closed-choice prompt without DSPy's scaffolding) re-keyed these on purpose
    assert {lf.name: lf.version(ctx) for lf in project.llm_labelers} == {"zero_shot": "57c0dc7e16b3ce41",
                                                                          "asks_about_money": "6514e0324b16cea1"}
    multilabel = labelloop.load_project(EXAMPLE.parent / "example_multilabel" / "config.yaml")
    assert multilabel.llm_labelers[0].version(multilabel.context()) == "caafdeca7b7ba27e"
    spec = BootstrapSpec()
    key = step_key("summarise", prompt_version("summarise"), spec.use_case, spec.summary_words, lm_key(project.config.lm))
    assert key == "a82d9b7f4794adf2"


def test_bootstrap_steps_in_an_older_store_are_found_and_moved(tmp_path):
    from labelloop.flows.store import StepCache, VoteStore

    path = tmp_path / "votes.sqlite"
    with VoteStore(path) as store:  # as bootstrap wrote steps before they had a table of their own
        store.put_many("v1", [("generate", '{"inputs": 1}', {"labels": ["a", "b"]})])
    with StepCache(path) as steps:
        assert steps.get_many("v1", [("generate", '{"inputs": 1}')]) == {"generate": {"labels": ["a", "b"]}}
        assert steps.count() == 1
    with VoteStore(path) as store:
        assert store.count() == 0  # moved, not copied


def test_a_student_file_written_before_the_package_rename_still_loads(tmp_path):
    import zipfile

    from labelloop.flows.predict import load_student, save_student
    from labelloop.labelers.student import fit_student, make_student

    texts = ["refund please", "parcel late", "money back", "where is my box"]
    student = fit_student(texts, np.eye(2)[[0, 1, 0, 1]], student=make_student("tfidf+embeddings"))
    new, old = tmp_path / "new.skops", tmp_path / "old.skops"
    save_student(student, new)
    with zipfile.ZipFile(new) as src, zipfile.ZipFile(old, "w") as dst:  # the module names older files hold
        for item in src.infolist():
            data = src.read(item.filename)
            dst.writestr(item, data.replace(b'"labelloop.labelers.student"', b'"labelers.student"'))
    assert b'"labelers.student"' in zipfile.ZipFile(old).read("schema.json")
    loaded = load_student(old)
    assert np.allclose(loaded.predict_proba(texts), student.predict_proba(texts))


def test_the_library_sets_no_environment_variable_on_import():
    code = "import os; before = dict(os.environ); import labelloop; print(sorted(set(os.environ) - set(before)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={k: v for k, v in __import__("os").environ.items()
                               if not k.startswith(("PREFECT_", "LITELLM_", "HF_HUB"))})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"
