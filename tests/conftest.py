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
