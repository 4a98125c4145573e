"""Every kind of labelloop error reaches a command-line user as one line and exit code 2, never a traceback."""

from __future__ import annotations

import pytest
import yaml
from typer.testing import CliRunner

from labelloop.flows.cli import app
from labelloop.programs import errors


def _config(path, **changes):
    cfg = yaml.safe_load(path.read_text())
    cfg.update(changes)
    path.write_text(yaml.safe_dump(cfg))
    return path


def _fails_in_one_line(args, expected: str):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and not isinstance(result.exception, errors.LabelloopError)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert expected in lines[0], lines[0]


def test_config_error(example_project):
    _config(example_project, label_model="bayes", lables=1)
    _fails_in_one_line(["plan", example_project], "is not a valid labelloop config: label_model:")


def test_data_error(example_project):
    (example_project.parent / "records.jsonl").write_text('{"id": "1", "body": "no text column"}\n')
    _fails_in_one_line(["plan", example_project], "expected column(s) ['text'], found ['id', 'body']")


def test_model_not_available(example_project, tmp_path):
    _config(example_project, lm={"model": str(tmp_path / "missing.gguf")})
    _fails_in_one_line(["label", example_project, "--no-progress"], "missing.gguf, which does not exist")


def test_state_error(example_project):
    _fails_in_one_line(["train", example_project], "LLM answers are not stored yet; run `labelloop label")


def test_not_enough_votes(example_project):
    _config(example_project, labelers=[{"type": "keywords", "name": "kw", "label": "billing", "words": ["zzzz"]}])
    _fails_in_one_line(["run", example_project, "--no-progress"], "record(s) got any vote; add labelers or data")


def test_taxonomy_error(example_project, monkeypatch):
    from tests.fakes_taxonomy import taxonomy_lm

    broken = taxonomy_lm(script={"name": ["not json"] * 99})  # every group name stays malformed
    monkeypatch.setattr("labelloop.programs.lm.make_lm", lambda *a, **k: broken)
    _config(example_project, taxonomy="new_taxonomy.yaml", bootstrap={"sample_size": 8, "max_labels": 2})
    _fails_in_one_line(["bootstrap", example_project, "--no-progress"], "taxonomy step 'name' gave no valid answer")


@pytest.mark.parametrize("kind", [errors.ConfigError, errors.DataError, errors.ModelNotAvailable, errors.NotEnoughVotes,
                                  errors.StateError])
def test_every_kind_is_a_labelloop_error(kind):
    assert issubclass(kind, errors.LabelloopError) and issubclass(errors.TaxonomyError, errors.LabelloopError)


def test_init_writes_a_config_and_taxonomy_and_never_overwrites_either(tmp_path):
    from tests.conftest import EXAMPLE

    config = tmp_path / "project.yaml"
    args = ["init", EXAMPLE / "records.jsonl", "--labels", "billing,shipping", "-o", config]
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    taxonomy = tmp_path / "project_taxonomy.yaml"
    written = yaml.safe_load(config.read_text())
    assert written["taxonomy"] == taxonomy.name and written["label_model"] == "auto"
    taxonomy.write_text("labels:\n- {name: billing, description: money I paid}\n- {name: shipping, description: parcels}\n")
    _fails_in_one_line(args, "project.yaml already exists; refusing to overwrite it")
    config.unlink()  # the config is gone, the edited taxonomy is not: still refused
    _fails_in_one_line(args, "project_taxonomy.yaml already exists; refusing to overwrite it")
    assert "money I paid" in taxonomy.read_text() and not config.exists()
