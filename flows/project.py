"""Load a project: config, taxonomy, data splits and labelers (the only place user LF modules are imported)."""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from snorkel.labeling import LabelingFunction

from flows.config import (
    IRRLF,
    ConfigError,
    KeywordLF,
    ProjectConfig,
    PromptLF,
    PythonLF,
    RegexLF,
    ZeroShotLF,
    load_config,
    read_yaml,
)
from flows.io import check_labels, read_records, read_taxonomy
from labelers.heuristics import make_keyword_lf, make_regex_lf
from labelers.irr import IRRLabeler, state_hash
from labelers.labels import Taxonomy
from labelers.llm import LLMLabeler, prompt_labeler, zero_shot_labeler


@dataclass
class Project:
    config: ProjectConfig
    config_path: Path
    taxonomy: Taxonomy
    splits: dict[str, pd.DataFrame]  # "train" always; "dev" and "test" when configured
    llm_labelers: list[LLMLabeler | IRRLabeler]
    heuristic_lfs: list[LabelingFunction]
    programs: dict[str, dict] = field(default_factory=dict)  # labeler name -> optimized program state

    @property
    def multilabel(self) -> bool:
        return self.config.task == "multilabel"

    @property
    def labeler_names(self) -> list[str]:
        return [lf.name for lf in self.llm_labelers] + [lf.name for lf in self.heuristic_lfs]


def _label_id(taxonomy: Taxonomy, spec) -> int:
    if spec.label not in taxonomy.names:
        raise ConfigError(f"labeler {spec.name!r}: label {spec.label!r} is not in the taxonomy {list(taxonomy.names)}")
    return taxonomy.id(spec.label)


def load_python_lfs(path: Path, names: list[str] | None = None) -> list[LabelingFunction]:
    """Import a user module and collect its Snorkel labeling functions (in definition order)."""
    if not Path(path).is_file():
        raise ConfigError(f"python labeler module {path} does not exist")
    spec = importlib.util.spec_from_file_location(f"labelloop_user_lfs_{Path(path).stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # the user's code: report it, don't hide it
        raise ConfigError(f"python labeler module {path} failed to import: {type(exc).__name__}: {exc}") from exc
    found = {obj.name: obj for obj in vars(module).values() if isinstance(obj, LabelingFunction)}
    if names:
        missing = [n for n in names if n not in found]
        if missing:
            raise ConfigError(f"{path}: labeling functions {missing} not found; it defines {sorted(found)}")
        return [found[n] for n in names]
    if not found:
        raise ConfigError(f"{path} defines no @labeling_function")
    return list(found.values())


def build_labelers(cfg: ProjectConfig, taxonomy: Taxonomy) -> tuple[list[LLMLabeler], list[LabelingFunction]]:
    llm, heuristic = [], []
    for spec in cfg.labelers:
        if isinstance(spec, ZeroShotLF):
            llm.append(zero_shot_labeler(taxonomy, spec.name, threshold=spec.threshold, calibration=spec.calibration))
        elif isinstance(spec, PromptLF):
            try:
                llm.append(prompt_labeler(spec.name, spec.question, spec.answers, taxonomy,
                                          threshold=spec.threshold, calibration=spec.calibration))
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        elif isinstance(spec, IRRLF):
            llm.append(IRRLabeler(spec.name, infer_k=spec.infer_k, rank_n=spec.rank_n, rank_k=spec.rank_k,
                                  chunk_words=spec.chunk_words, hint=spec.hint, retriever=spec.retriever))
        elif isinstance(spec, KeywordLF):
            heuristic.append(make_keyword_lf(spec.name, spec.words, _label_id(taxonomy, spec)))
        elif isinstance(spec, RegexLF):
            try:
                heuristic.append(make_regex_lf(spec.name, spec.pattern, _label_id(taxonomy, spec)))
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        elif isinstance(spec, PythonLF):
            heuristic.extend(load_python_lfs(spec.module, spec.names))
    names = [lf.name for lf in llm] + [lf.name for lf in heuristic]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"labeler names must be unique across config and python modules; repeated: {dupes}")
    return llm, heuristic


def program_path(cfg: ProjectConfig, name: str) -> Path:
    """Where `labelloop optimize` keeps a labeler's compiled program."""
    return cfg.programs_dir / f"{name}.json"


def load_programs(cfg: ProjectConfig, llm: list) -> dict[str, dict]:
    """Optimized program states saved by `labelloop optimize`; their hash becomes part of each labeler's version."""
    programs = {}
    for labeler in llm:
        path = program_path(cfg, labeler.name)
        if isinstance(labeler, IRRLabeler) and path.is_file():
            saved = read_yaml(path, "optimized program")  # JSON is YAML
            if not isinstance(saved, dict) or not isinstance(saved.get("state"), dict):
                raise ConfigError(f"{path}: expected an optimized program written by `labelloop optimize`; "
                                  "delete it to use the zero-shot program")
            programs[labeler.name] = saved["state"]
            labeler.program_state = state_hash(saved["state"])
    return programs


def load_project(config_path: Path) -> Project:
    cfg = load_config(config_path)
    taxonomy = read_taxonomy(cfg.taxonomy)
    multilabel = cfg.task == "multilabel"
    splits = {"train": read_records(cfg.data, multilabel=multilabel)}
    for split, spec in (("dev", cfg.gold), ("test", cfg.test)):
        if spec is not None:
            splits[split] = read_records(spec, require_label=True, multilabel=multilabel)
            check_labels(splits[split], taxonomy, spec.path)
    llm, heuristic = build_labelers(cfg, taxonomy)
    return Project(cfg, Path(config_path), taxonomy, splits, llm, heuristic, load_programs(cfg, llm))
