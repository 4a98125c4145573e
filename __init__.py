"""labelloop: turn unlabeled text into a trained, deployable classifier with an LLM in the loop.

The Python API, for notebooks and other programs: plain functions, no Prefect server needed.

    import labelloop
    project = labelloop.load_project("data/example/config.yaml")   # or a dict, with DataFrames
    labelloop.plan(project)                    # LLM calls still to pay for, per labeler
    run_dir = labelloop.run(project)           # label + denoise + train + evaluate -> run folder
    labelloop.predict(run_dir, ["Where is my parcel?"])

(see README.md, "Using it from Python"). The command line (``labelloop ...``) and the Prefect
flows (``labelloop.flows``) are thin layers over these functions.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from labelloop.programs.errors import (
    ConfigError,
    DataError,
    LabelloopError,
    LLMUnavailable,
    ModelNotAvailable,
    NotEnoughVotes,
    StateError,
    TaxonomyError,
)

# name -> (module, attribute): imported on first use, so `import labelloop` (and every command
# line start) does not pay for torch, Snorkel and DSPy before it needs them
_LAZY = {
    "LabelingResult": ("labelloop.flows.label_dataset", "LabelingResult"),
    "label_dataset": ("labelloop.flows.label_dataset", "label_dataset"),
    "plan": ("labelloop.flows.plan", "plan_calls"),
    "load_model": ("labelloop.flows.predict", "load_model"),
    "load_student": ("labelloop.flows.predict", "load_student"),
    "predict": ("labelloop.flows.predict", "predict"),
    "predict_file": ("labelloop.flows.predict_file", "predict_file"),
    "Student": ("labelloop.flows.predict", "Student"),
    "Project": ("labelloop.flows.project", "Project"),
    "load_project": ("labelloop.flows.project", "load_project"),
    "LabelingContext": ("labelloop.labelers.base", "LabelingContext"),
    "LLMLabeler": ("labelloop.labelers.base", "LLMLabeler"),
    "make_keyword_lf": ("labelloop.labelers.heuristics", "make_keyword_lf"),
    "make_regex_lf": ("labelloop.labelers.heuristics", "make_regex_lf"),
    "IRRLabeler": ("labelloop.labelers.irr", "IRRLabeler"),
    "LabelModelWrapper": ("labelloop.labelers.label_model", "LabelModelWrapper"),
    "MajorityVote": ("labelloop.labelers.label_model", "MajorityVote"),
    "make_label_model": ("labelloop.labelers.label_model", "make_label_model"),
    "prompt_labeler": ("labelloop.labelers.llm", "prompt_labeler"),
    "zero_shot_labeler": ("labelloop.labelers.llm", "zero_shot_labeler"),
    "MultiLabelModel": ("labelloop.labelers.multilabel", "MultiLabelModel"),
    "LMSpec": ("labelloop.programs.lm", "LMSpec"),
    "make_lm": ("labelloop.programs.lm", "make_lm"),
}

if TYPE_CHECKING:  # what the names are, for type checkers and editors
    from labelloop.flows.label_dataset import LabelingResult, label_dataset
    from labelloop.flows.plan import plan_calls as plan
    from labelloop.flows.predict import Student, load_model, load_student, predict
    from labelloop.flows.predict_file import predict_file
    from labelloop.flows.project import Project, load_project
    from labelloop.labelers.base import LabelingContext, LLMLabeler
    from labelloop.labelers.heuristics import make_keyword_lf, make_regex_lf
    from labelloop.labelers.irr import IRRLabeler
    from labelloop.labelers.label_model import LabelModelWrapper, MajorityVote, make_label_model
    from labelloop.labelers.llm import prompt_labeler, zero_shot_labeler
    from labelloop.labelers.multilabel import MultiLabelModel
    from labelloop.programs.lm import LMSpec, make_lm


def __getattr__(name: str):
    if name in ("flows", "labelers", "programs"):  # the subpackages, as attributes like any imported one
        return importlib.import_module(f"labelloop.{name}")
    if name not in _LAZY:
        raise AttributeError(f"module 'labelloop' has no attribute {name!r}")
    module, attribute = _LAZY[name]
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "ConfigError", "DataError", "IRRLabeler", "LLMLabeler", "LLMUnavailable", "LMSpec", "LabelModelWrapper",
    "LabelingContext", "LabelingResult", "LabelloopError", "MajorityVote", "ModelNotAvailable", "MultiLabelModel",
    "NotEnoughVotes", "Project", "StateError", "Student", "TaxonomyError", "label", "label_dataset", "load_model",
    "load_project", "load_student", "make_keyword_lf", "make_label_model", "make_lm", "make_regex_lf", "plan", "predict",
    "predict_file", "prompt_labeler", "run", "train", "zero_shot_labeler",
]


def label(project: Project, *, lm=None, show_progress: bool = False):
    """Run every labeler and the label model; returns the run folder (votes, probabilistic labels, LF summary)."""
    from labelloop.flows.run_project import run_project

    return run_project(project, train=False, lm=lm, show_progress=show_progress)


def train(project: Project, *, show_progress: bool = False):
    """Label model and student from stored LLM answers only (never calls the LLM); returns the run folder."""
    from labelloop.flows.run_project import require_stored, run_project

    require_stored(project)
    return run_project(project, train=True, show_progress=show_progress, stored_only=True)


def run(project: Project, *, lm=None, show_progress: bool = False):
    """Label, denoise, train the student, evaluate and report; returns the run folder."""
    from labelloop.flows.run_project import run_project

    return run_project(project, train=True, lm=lm, show_progress=show_progress)
