import json

import pytest
import yaml

from labelloop.flows.config import ConfigError, DataSpec, load_config
from labelloop.flows.io import atomic_path, read_records, read_taxonomy, write_frame
from labelloop.flows.project import load_project
from labelloop.programs.errors import DataError


def _edit(config_path, **changes):
    raw = yaml.safe_load(config_path.read_text())
    raw.update(changes)
    config_path.write_text(yaml.safe_dump(raw))
    return config_path


def test_example_config_loads_every_labeler_type(example_project):
    project = load_project(example_project)
    types = {spec.type for spec in project.config.labelers}
    assert types == {"zero_shot", "prompt", "keywords", "regex", "python"}
    assert project.config.data.path.is_absolute()
    assert len(project.heuristic_lfs) >= 5


def test_unknown_key_names_the_field(example_project):
    _edit(example_project, lables=[])
    with pytest.raises(ConfigError, match=r"lables: Extra inputs are not permitted"):
        load_config(example_project)


def test_wrong_type_says_what_arrived(example_project):
    _edit(example_project, label_model="bayes")
    with pytest.raises(ConfigError, match=r"label_model.*'snorkel', 'majority' or 'auto'.*got 'bayes'"):
        load_config(example_project)


def test_invalid_yaml(tmp_path):
    bad = tmp_path / "c.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_verbalizer_label_not_in_taxonomy(example_project):
    raw = yaml.safe_load(example_project.read_text())
    raw["labelers"][1]["answers"] = {"yes": "biling", "no": "abstain"}
    example_project.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"maps to 'biling'"):
        load_project(example_project)


def test_keyword_label_not_in_taxonomy(example_project):
    raw = yaml.safe_load(example_project.read_text())
    raw["labelers"][2]["label"] = "money"
    example_project.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"label 'money' is not in the taxonomy"):
        load_project(example_project)


@pytest.mark.parametrize("lines, message", [
    ([{"id": "1", "body": "x"}], r"expected column\(s\) \['text'\], found \['id', 'body'\]"),
    ([{"id": "1", "text": "  "}], r"empty or non-text 'text', e.g. id '1'"),
    ([{"id": "1", "text": "a"}, {"id": "1", "text": "b"}], r"ids must be unique; 1 repeated"),
])
def test_bad_records(tmp_path, lines, message):
    path = tmp_path / "r.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines))
    with pytest.raises(DataError, match=message):
        read_records(DataSpec(path=path))


def test_non_utf8_and_missing_files(tmp_path):
    path = tmp_path / "r.csv"
    path.write_bytes(b"id,text\n1,caf\xe9\n")
    with pytest.raises(DataError, match="not UTF-8"):
        read_records(DataSpec(path=path))
    with pytest.raises(DataError, match="does not exist"):
        read_records(DataSpec(path=tmp_path / "missing.jsonl"))
    with pytest.raises(DataError, match="line 2: expected one JSON object"):
        (tmp_path / "x.jsonl").write_text('{"id": 1, "text": "a"}\n{oops\n')
        read_records(DataSpec(path=tmp_path / "x.jsonl"))


def test_csv_parquet_and_hf_dataset_round_trip(tmp_path):
    import pandas as pd
    from datasets import Dataset

    frame = pd.DataFrame({"id": ["a", "b"], "text": ["one", "two"], "label": ["x", "y"]})
    for name in ("r.csv", "r.parquet", "r.jsonl"):
        write_frame(tmp_path / name, frame)
        assert read_records(DataSpec(path=tmp_path / name))["text"].tolist() == ["one", "two"]
    Dataset.from_pandas(frame).save_to_disk(str(tmp_path / "hf"))
    assert read_records(DataSpec(path=tmp_path / "hf"))["label"].tolist() == ["x", "y"]


def test_taxonomy_errors(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("labels:\n  - name: a\n  - name: a\n")
    with pytest.raises(ConfigError, match="unique; repeated: \\['a'\\]"):
        read_taxonomy(path)
    path.write_text("labels: nope\n")
    with pytest.raises(ConfigError, match="expected `labels:` as a list"):
        read_taxonomy(path)


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []


def test_unknown_optimizer_names_the_allowed_one(example_project):
    _edit(example_project, optimize={"optimizer": "mipro"})  # advertised once, never run: removed
    with pytest.raises(ConfigError, match=r"optimize.optimizer: Input should be 'bootstrap_random_search' \(got 'mipro'\)"):
        load_config(example_project)


def test_irr_rank_scores_needs_at_most_26_candidates(example_project):
    raw = yaml.safe_load(example_project.read_text())
    _edit(example_project, labelers=[*raw["labelers"], {"type": "irr", "rank": "scores", "rank_n": 27}])
    with pytest.raises(ConfigError, match=r"labelers\.\d+\.rank: rank: scores .* rank_n must be at most 26; got rank_n 27"):
        load_config(example_project)
    _edit(example_project, labelers=[*raw["labelers"], {"type": "irr", "rank": "scores", "rank_n": 26}])
    assert load_config(example_project).labelers[-1].rank == "scores"


@pytest.mark.parametrize("line, expected", [
    ('[1, 2]', r"line 2: expected one JSON object per line, got a JSON list"),
    ('"just text"', r"line 2: expected one JSON object per line, got a JSON str"),
    ('{"id": "b", "text": "bad \\ud800 text"}', r"lone surrogate \(\\ud800\) at position 4"),
    ('{"id": "b", "text": "nul \\u0000 inside"}', r"NUL character at position 4"),
    ('{"id": "b\\u0000", "text": "fine"}', r"'id' labelloop cannot use, e.g. id 'b\\x00'"),
])
def test_hostile_jsonl_lines_get_a_message_not_a_traceback(tmp_path, line, expected):
    from labelloop.flows.io import read_records

    path = tmp_path / "records.jsonl"
    path.write_text('{"id": "a", "text": "fine"}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=expected):
        read_records(DataSpec(path=path))


def test_a_text_longer_than_the_limit_is_refused(tmp_path):
    from labelloop.flows.io import MAX_TEXT_CHARS, read_records

    path = tmp_path / "records.csv"
    path.write_text("id,text\na,short\nb," + "x" * (MAX_TEXT_CHARS + 1) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"id 'b': it is 200,001 characters long; at most 200,000"):
        read_records(DataSpec(path=path))


def test_outputs_get_the_mode_a_plain_open_gives(tmp_path):
    import os
    import stat

    from labelloop.flows.io import _UMASK, write_text

    path = write_text(tmp_path / "report.md", "hello")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~_UMASK
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"]


@pytest.mark.parametrize("change, expected", [
    ({"student": {"C": 0}}, "student.C"), ({"student": {"max_features": 0}}, "student.max_features"),
    ({"lm": {"model": "local", "temperature": -1}}, "lm.temperature"),
    ({"lm": {"model": "local", "max_tokens": 0}}, "lm.max_tokens"),
    ({"lm": {"model": "local", "n_threads": 0}}, "lm.n_threads"),
])
def test_config_values_out_of_bounds_are_refused_before_any_work(tmp_path, change, expected):
    from tests.conftest import heuristic_config

    with pytest.raises(ConfigError, match=expected.replace(".", r"\.")):
        load_project({**heuristic_config(), **change}, base_dir=tmp_path, data=_records())


def _records():
    import pandas as pd

    return pd.DataFrame({"id": ["a", "b"], "text": ["refund please", "where is my parcel"]})


def test_credentials_in_api_base_are_never_written(tmp_path):
    from labelloop.flows.config import config_to_yaml
    from tests.conftest import heuristic_config

    config = {**heuristic_config(), "lm": {"model": "openai/x", "api_base": "https://bob:hunter2@llm.example/v1?key=k9"}}
    project = load_project(config, base_dir=tmp_path, data=_records())
    snapshot = config_to_yaml(project.config)
    assert "hunter2" not in snapshot and "k9" not in snapshot and "llm.example/v1" in snapshot
    assert "hunter2" not in json.dumps(project.config.lm.key())
