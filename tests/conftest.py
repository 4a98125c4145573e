"""Shared fixtures. The LLM is faked at the DSPy seam; tests marked llm_call run the embedded model."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "labelloop")  # as the command line sets it

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "data" / "example"
DATASETS = ROOT.parent / "shared" / "datasets"


def pytest_addoption(parser):
    parser.addoption("--llm_call", action="store_true", default=False, help="run tests that call the embedded model")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--llm_call"):
        return
    skip = pytest.mark.skip(reason="needs --llm_call (runs the embedded model)")
    for item in items:
        if "llm_call" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def prefect_harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture
def example_project(tmp_path) -> Path:
    """A copy of the example project in a temporary folder; returns its config path."""
    shutil.copytree(EXAMPLE, tmp_path / "example", ignore=shutil.ignore_patterns("runs", ".labelloop"))
    return tmp_path / "example" / "config.yaml"


@pytest.fixture
def multilabel_project(tmp_path) -> Path:
    """A copy of the multi-label example (and the example it borrows Python LFs from); returns its config path."""
    ignore = shutil.ignore_patterns("runs", ".labelloop", "optimized")
    shutil.copytree(EXAMPLE, tmp_path / "example", ignore=ignore)
    shutil.copytree(ROOT / "data" / "example_multilabel", tmp_path / "example_multilabel", ignore=ignore)
    return tmp_path / "example_multilabel" / "config.yaml"


@pytest.fixture
def fake_lm(monkeypatch):
    """Patch the flows' LM factory with a DummyLM whose answers follow a keyword rule."""
    from tests.fakes import rule_lm

    lm = rule_lm()
    monkeypatch.setattr("labelloop.programs.lm.make_lm", lambda *a, **k: lm)
    return lm


def heuristic_config(**student) -> dict:
    """The example project's records labelled by keyword and regex labelers only (no LLM): trains in seconds."""
    return {"name": "deploy", "taxonomy": [{"name": "billing", "description": "money"},
                                           {"name": "shipping", "description": "parcels"},
                                           {"name": "other_topics", "description": "anything else"}],
            "labelers": [{"type": "keywords", "name": "kw_money", "label": "billing",
                          "words": ["refund", "charged", "invoice", "payment"]},
                         {"type": "regex", "name": "re_parcel", "label": "shipping",
                          "pattern": r"\b(parcel|package|deliver\w*)"},
                         {"type": "keywords", "name": "kw_app", "label": "other_topics",
                          "words": ["app", "login", "password", "screen"]}],
            "label_model": "majority", "student": {"features": "tfidf", **student}}


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """A run folder with a TF-IDF student that abstains below 90% dev precision (shared by the deployment tests)."""
    import pandas as pd

    import labelloop

    base = tmp_path_factory.mktemp("deploy")
    records = pd.read_json(EXAMPLE / "records.jsonl", lines=True)
    gold = {}
    for split in ("dev", "test"):
        gold[split] = frame = pd.read_json(EXAMPLE / f"{split}.jsonl", lines=True)
        frame["label"] = frame["label"].where(frame["label"].isin(["billing", "shipping"]), "other_topics")
    project = labelloop.load_project(heuristic_config(abstain={"precision": 0.9}), base_dir=base, data=records,
                                     gold=gold["dev"], test=gold["test"])
    return labelloop.run(project, show_progress=False)
