"""Load a project: config, taxonomy, data splits and labelers (the only place user LF modules are imported)."""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from snorkel.labeling import LabelingFunction

from labelloop.flows.config import ConfigError, DataSpec, ProjectConfig, load_config, parse_config, read_yaml
from labelloop.flows.io import check_labels, read_records, read_taxonomy, records_frame
from labelloop.flows.store import label_vectors
from labelloop.labelers.base import LabelingContext, LLMLabeler
from labelloop.labelers.labels import Taxonomy
from labelloop.labelers.tasks import TASKS
from labelloop.programs.errors import DataError


@dataclass
class Project:
    config: ProjectConfig
    config_path: Path | None  # None for a project built from a dict
    taxonomy: Taxonomy
    splits: dict[str, pd.DataFrame]  # "train" always; "dev" and "test" when configured
    llm_labelers: list[LLMLabeler]
    heuristic_lfs: list[LabelingFunction]
    programs: dict[str, dict] = field(default_factory=dict)  # labeler name -> optimized program state
    reviewed: pd.DataFrame | None = None  # reviewed train records (id, text, label; `review.gold`), also in "dev"

    @property
    def task(self):
        """The task object (``labelloop.labelers.tasks``) that the config's ``task:`` names."""
        return TASKS[self.config.task]

    @property
    def labeler_names(self) -> list[str]:
        reviewer = [] if self.reviewed is None else ["reviewed"]  # votes last: labelloop.flows.review
        return [lf.name for lf in self.llm_labelers] + [lf.name for lf in self.heuristic_lfs] + reviewer

    def gold(self, split: str) -> list | None:
        """Gold label ids of a split (a list per record for multi-label projects), or None without it."""
        df = self.splits.get(split)
        return None if df is None else self.task.gold(df["label"], self.taxonomy)

    def context(self) -> LabelingContext:
        """What the LLM labelers' versions and programs depend on besides their settings."""
        names, texts = list(self.taxonomy.names), self.taxonomy.texts()

        def label_index(retriever: str):
            from labelloop.programs.retrieval import LabelIndex

            # embedded once per label set, kept beside the vote store
            vectors = None if retriever == "bm25" else label_vectors(texts, self.config.store.parent / "labels")
            return LabelIndex(names, vectors, retriever=retriever)

        return LabelingContext(self.taxonomy, self.config.lm, label_index, self.programs)


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
    """Every configured labeler, LLM labelers first (they keep the config's order within each group)."""
    built = [labeler for spec in cfg.labelers for labeler in spec.build(taxonomy)]
    llm = [x for x in built if isinstance(x, LLMLabeler)]
    heuristic = [x for x in built if not isinstance(x, LLMLabeler)]
    names = [lf.name for lf in llm] + [lf.name for lf in heuristic]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"labeler names must be unique across config and python modules; repeated: {dupes}")
    return llm, heuristic


def program_path(cfg: ProjectConfig, name: str) -> Path:
    """Where `labelloop optimize` keeps a labeler's compiled program."""
    return cfg.programs_dir / f"{name}.json"


def load_programs(cfg: ProjectConfig, llm: list[LLMLabeler]) -> dict[str, dict]:
    """Optimized program states saved by `labelloop optimize`; their hash becomes part of each labeler's version."""
    programs = {}
    for labeler in llm:
        path = program_path(cfg, labeler.name)
        if labeler.optimizable and path.is_file():
            saved = read_yaml(path, "optimized program")  # JSON is YAML
            if not isinstance(saved, dict) or not isinstance(saved.get("state"), dict):
                raise ConfigError(f"{path}: expected an optimized program written by `labelloop optimize`; "
                                  "delete it to use the zero-shot program")
            programs[labeler.name] = saved["state"]
    return programs


def _taxonomy(cfg: ProjectConfig) -> Taxonomy:
    if isinstance(cfg.taxonomy, Path):
        return read_taxonomy(cfg.taxonomy)
    try:
        return Taxonomy(tuple(x.name for x in cfg.taxonomy), tuple(x.description for x in cfg.taxonomy))
    except ValueError as exc:
        raise ConfigError(f"taxonomy: {exc}") from None


def check_ids_across(splits: dict[str, pd.DataFrame], sources: dict[str, object]) -> None:
    """Refuse an id that names different texts in two files: each record's answers are its own.

    The same record (same id, same text) in two files is allowed: it is one question, asked once.
    """
    seen: dict[str, tuple[str, str]] = {}  # id -> (split, text)
    clashes = []
    for split, df in splits.items():
        for rid, text in zip(df["id"], df["text"]):
            if rid in seen and seen[rid][1] != text:
                clashes.append((rid, seen[rid][0], split))
            seen.setdefault(rid, (split, text))
    if clashes:
        rid, a, b = clashes[0]
        examples = ", ".join(repr(c[0]) for c in clashes[:5])
        raise DataError(f"ids must be unique across the project's files: {len(clashes)} id(s) name different records in "
                        f"{sources[a]} and {sources[b]} (e.g. {examples}); renumber one file or prefix its ids")


def load_project(config: Path | str | dict, *, base_dir: Path | None = None, data: pd.DataFrame | None = None,
                 gold: pd.DataFrame | None = None, test: pd.DataFrame | None = None,
                 skip_missing_includes: bool = False) -> Project:
    """Load and validate a whole project before anything runs.

    Args:
        config: a config YAML path, or the same keys as a dict.
        base_dir: what relative paths in a dict config resolve against (default: the working folder).
        data, gold, test: records as DataFrames, in place of the config's file paths (a dict config
            may then leave out ``data``); columns as the config's ``data`` block names them.
        skip_missing_includes: an ``{include: FILE}`` labelers entry whose file does not exist adds no labeler
            (``propose-lfs`` writes that file) instead of stopping.

    Returns:
        The project: config, taxonomy, splits and built labelers.
    """
    if isinstance(config, dict):
        raw = dict(config)
        if data is not None:
            raw.setdefault("data", {})
        cfg, config_path = parse_config(raw, base_dir or Path.cwd(), skip_missing_includes=skip_missing_includes), None
    else:
        cfg, config_path = load_config(Path(config), skip_missing_includes=skip_missing_includes), Path(config)
    taxonomy = _taxonomy(cfg)
    multilabel = cfg.task == "multilabel"
    frames = {"train": data, "dev": gold, "test": test}
    specs = {"train": cfg.data, "dev": cfg.gold, "test": cfg.test}
    splits = {}
    for split, spec in specs.items():
        if frames[split] is None and (spec is None or spec.path is None):
            if split == "train":
                raise ConfigError("data: give the records' file as `data: {path: ...}`, or pass them as a DataFrame")
            continue
        spec = spec or DataSpec()
        required = split != "train"
        df = read_records(spec, require_label=required, multilabel=multilabel) if frames[split] is None else \
            records_frame(frames[split], spec, f"the {split} DataFrame", require_label=required, multilabel=multilabel)
        if required:
            check_labels(df, taxonomy, spec.path or f"the {split} DataFrame")
        splits[split] = df
    check_ids_across(splits, {split: (spec.path if spec and spec.path else f"the {split} DataFrame")
                              for split, spec in specs.items()})
    llm, heuristic = build_labelers(cfg, taxonomy)
    from labelloop.flows.review import load_reviewed, merge_into_dev

    reviewed = load_reviewed(cfg, splits, taxonomy, [lf.name for lf in llm + heuristic])
    if reviewed is not None:  # reviewed records are gold too: scores, class balance, calibration
        splits["dev"] = merge_into_dev(splits.get("dev"), reviewed)
    return Project(cfg, config_path, taxonomy, splits, llm, heuristic, load_programs(cfg, llm), reviewed)


def scaffold_project(data: Path, output: Path, labels: list[str], *, id_column: str = "id",
                     text_column: str = "text") -> tuple[int, Path]:
    """Write a starter config and taxonomy for a data file (``labelloop init``); refuses to overwrite.

    Returns:
        The number of records read and the taxonomy file written.
    """
    import os

    import yaml

    from labelloop.flows.io import write_text
    from labelloop.labelers.llm import starter_labelers
    from labelloop.programs.errors import StateError

    data, output = Path(data), Path(output)
    taxonomy = output.parent / f"{output.stem}_taxonomy.yaml"
    for path in (output, taxonomy):  # an edited taxonomy is work: never write over it either
        if path.exists():
            raise StateError(f"{path} already exists; refusing to overwrite it (choose another --output)")
    df = read_records(DataSpec(path=data, id=id_column, text=text_column))
    if len(labels) < 2:
        raise ConfigError(f"--labels needs at least two names, got {labels}")
    write_text(taxonomy, yaml.safe_dump({"labels": [{"name": n, "description": f"TODO: describe {n}"} for n in labels]},
                                        sort_keys=False))
    cfg = {"name": output.stem, "task": "multiclass",
           "data": {"path": os.path.relpath(data, output.parent), "id": id_column, "text": text_column},
           "taxonomy": taxonomy.name, "lm": {"model": "local"},
           "labelers": starter_labelers(labels[0]),
           "label_model": "auto"}
    write_text(output, yaml.safe_dump(cfg, sort_keys=False))
    return len(df), taxonomy
