"""The project config: one YAML file, validated by pydantic. Relative paths resolve against its folder."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import ClassVar, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from labelloop.labelers import heuristics, irr, llm  # noqa: F401  (their config specs register themselves)
from labelloop.labelers.base import LABELER_TYPES, LabelerSpec, register_labeler
from labelloop.labelers.labels import Taxonomy
from labelloop.labelers.student import FEATURES
from labelloop.programs.errors import ConfigError
from labelloop.programs.lm import LMSpec
from labelloop.programs.optimize import OPTIMIZERS

__all__ = ["ConfigError", "LLMBudgetSpec", "LMSpec", "LabelerSpec", "ProjectConfig", "ProposeLFsSpec", "load_config",
           "parse_config", "register_labeler"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataSpec(_Strict):
    path: Path | None = None  # None: the caller passes the records as a DataFrame
    id: str = "id"
    text: str = "text"
    label: str = "label"
    label_sep: str = "|"  # multilabel gold in CSV: "billing|shipping"; JSONL and Parquet may hold lists


@register_labeler
class PythonLF(LabelerSpec):
    type: Literal["python"]
    module: Path
    names: list[str] | None = None  # default: every Snorkel LF in the module
    paths: ClassVar[tuple[str, ...]] = ("module",)

    def build(self, taxonomy: Taxonomy) -> list:
        from labelloop.flows.project import load_python_lfs

        return load_python_lfs(self.module, self.names)


class TaxonomyLabel(_Strict):
    name: str
    description: str = ""


class AbstainSpec(_Strict):
    """`student.abstain:` the student answers only when sure enough; the threshold is chosen on the gold dev records.

    Exactly one of ``precision`` (the answered dev records reach it) and ``coverage`` (that share of
    them is answered). Multi-label students tune one threshold per label on dev instead.
    """

    precision: float | None = Field(None, gt=0, le=1)
    coverage: float | None = Field(None, gt=0, le=1)

    @model_validator(mode="after")
    def _one_target(self):
        if (self.precision is None) == (self.coverage is None):
            raise ValueError("give exactly one of precision (e.g. 0.95) and coverage (e.g. 0.9)")
        return self


class StudentSpec(_Strict):
    features: Literal[FEATURES] = "tfidf+embeddings"
    calibrate: bool = True  # fit a temperature on the gold dev records when it lowers their log-loss
    abstain: AbstainSpec | None = None  # None: always answer
    max_features: int = Field(50_000, ge=1, le=10_000_000)
    C: float = Field(4.0, gt=0, le=1e6)
    min_confidence: float = Field(0.0, ge=0, le=1)
    # "always" trains a new student every run; "on_change" keeps the last one unless at least
    # retrain_new_fraction of the training records are new or changed since it was trained, or the
    # weak label distribution moved by at least retrain_shift (total variation distance)
    retrain: Literal["always", "on_change"] = "always"
    retrain_new_fraction: float = Field(0.1, ge=0, le=1)
    retrain_shift: float = Field(0.05, ge=0, le=1)
    # rank the train records by how likely their label is wrong (label_issues.csv): five TF-IDF student fits
    # out of fold, whatever `features` is; skipped above 200,000 covered records
    rank_label_issues: bool = True
    # records no labeler voted on: labelled by a first student, then a second one learns from every record
    self_train: bool = True


class ReviewSpec(_Strict):
    """`review:` where `labelloop review import` keeps the reviewed records (JSONL), read by every run."""

    gold: Path = Path("reviewed.jsonl")

    @field_validator("gold")
    @classmethod
    def _jsonl(cls, v):
        if Path(v).suffix.lower() != ".jsonl":
            raise ValueError(f"expected a .jsonl file, got {str(v)!r}")
        return v


class OptimizeSpec(_Strict):
    """`labelloop optimize`: compile the IRR programs on gold dev records."""

    optimizer: Literal[OPTIMIZERS] = "bootstrap_random_search"
    train_size: int = Field(10, ge=1)
    candidates: int = Field(1, ge=0, le=16)
    max_demos: int = Field(2, ge=1, le=8)
    metric_k: int = Field(10, ge=1)
class LLMBudgetSpec(_Strict):
    """`llm_budget:` how many (record, LLM labeler) answers on the unlabeled train split a run may ask for.

    Exactly one of ``max_calls`` (answers) and ``fraction`` (of the train split's records x LLM
    labelers). Gold splits are always answered in full, and answers already stored are free.
    """

    max_calls: int | None = Field(None, ge=1, strict=True)
    fraction: float | None = Field(None, gt=0, le=1, strict=True)
    rounds: int = Field(4, ge=1, le=100, strict=True)  # label-model refits between which the budget is spent
    random_share: float = Field(0.5, ge=0, le=1)  # of each round's budget, drawn at random: the label model learns from these

    @model_validator(mode="after")
    def _one_limit(self):
        if (self.max_calls is None) == (self.fraction is None):
            given = "both" if self.max_calls is not None else "neither"
            raise ValueError(f"give exactly one of max_calls (answers, e.g. 200) and fraction (of the train records' "
                             f"answers, in (0, 1]), got {given}")
        return self

    def limit(self, pairs: int) -> int:
        """The answers this budget allows on a train split of ``pairs`` (record, LLM labeler) pairs.

        >>> LLMBudgetSpec(fraction=0.3).limit(900), LLMBudgetSpec(max_calls=200).limit(900)
        (270, 200)
        """
        if self.max_calls is not None:
            return self.max_calls
        return math.ceil(round(self.fraction * pairs, 9))


class ProposeLFsSpec(_Strict):
    """`labelloop propose-lfs`: the LLM writes keyword, regex and similar labeling functions, scored on the gold dev
    records."""

    output: Path = Path("generated_lfs.yaml")  # the labelers file the config includes (`{include: generated_lfs.yaml}`)
    rounds: int = Field(3, ge=1, le=20)
    max_calls: int | None = Field(None, ge=1)  # LLM calls in all, stored ones included; default (rounds + 1) x labels x samples
    examples: int = Field(8, ge=1, le=50)  # gold dev texts of the label (and as many of others) shown per proposal
    samples: int = Field(1, ge=1, le=10)  # proposals per label and round, each shown another seeded sample of texts
    word_forms: bool = True  # proposed words also match their common inflections (refund: refunds, refunded)
    similar: bool = True  # also ask, once per label, for example texts: a `similar` rule (embedding similarity) each
    min_dev_matches: int = Field(1, ge=0)  # rules matching fewer gold dev records are dropped (0: the label model judges them)
    min_accuracy: float = Field(0.65, ge=0, le=1)  # dev accuracy with one right and one wrong match added
    min_coverage: float = Field(0.002, ge=0, le=1)  # share of the unlabeled records a rule must match
    max_conflict: float = Field(0.5, ge=0, le=1)  # share of its matches that kept rules of other labels may match
    duplicate_overlap: float = Field(0.9, gt=0, le=1)  # shared matches (Jaccard) at which two rules of a label are one
    max_lfs: int = Field(50, ge=1)
    max_attempts: int = Field(2, ge=1, le=10)  # LLM calls per proposal when an answer holds no usable rule
    sample_size: int = Field(50_000, ge=10)  # unlabeled records the rules are scored on (a seeded sample)
    seed: int | None = None  # default: the project seed


class BootstrapSpec(_Strict):
    """`labelloop bootstrap`: propose a taxonomy from a seeded sample of the records."""

    use_case: str = "Find the main topics or intents of these texts, to label each text with exactly one of them."
    sample_size: int = Field(48, ge=2)
    minibatch_size: int = Field(16, ge=2)
    group_summaries: bool = True  # first taxonomy: cluster the sample (MiniLM, k-means, max_labels groups), name each group
    group_by: Literal["text", "summary"] = "text"  # what the clustering embeds; "summary" for texts longer than ~200 words
    summary_words: int = Field(25, ge=5, le=100)
    max_labels: int = Field(8, ge=2, le=100)
    max_name_words: int = Field(3, ge=1, le=10)
    max_description_chars: int = Field(200, ge=20)
    exclusive: bool = True
    allow_catch_all: bool = False
    max_attempts: int = Field(3, ge=1, le=10)
    examples_per_label: int = Field(3, ge=0, le=20)
    context_tokens: int = Field(4096, ge=1024)  # llama.cpp context for local models: fits a minibatch prompt
    seed: int | None = None  # default: the project seed
    output: Path | None = None  # default: the config's `taxonomy:` path


class ProjectConfig(_Strict):
    name: str
    task: Literal["multiclass", "multilabel"] = "multiclass"
    data: DataSpec
    gold: DataSpec | None = None
    test: DataSpec | None = None
    taxonomy: Path | list[TaxonomyLabel]  # a YAML file, or the labels inline
    lm: LMSpec = LMSpec()
    labelers: list[SerializeAsAny[LabelerSpec]]
    label_model: Literal["snorkel", "majority", "auto"] = "auto"  # auto: chosen on the gold dev records
    student: StudentSpec = StudentSpec()
    optimize: OptimizeSpec = OptimizeSpec()
    seed: int = 0
    max_attempts: int = Field(3, ge=1)  # failed asks after which a record is not asked again and abstains
    runs_dir: Path = Path("runs")
    store: Path = Path(".labelloop/votes.sqlite")
    programs_dir: Path = Path("optimized")  # optimized DSPy programs, one JSON file per labeler
    bootstrap: BootstrapSpec | None = None
    propose_lfs: ProposeLFsSpec = ProposeLFsSpec()  # labelloop propose-lfs
    llm_budget: LLMBudgetSpec | None = None  # None: every LLM labeler answers every record
    review: ReviewSpec = ReviewSpec()  # reviewed records: gold, and a labeler `reviewed` (labelloop review import)

    @field_validator("name")
    @classmethod
    def _file_name(cls, v):
        """The name starts every run folder's name: one plain file name, not a path."""
        if not v.strip() or v.strip(".") == "" or "/" in v or "\\" in v:
            raise ValueError(f"expected a name usable in a file name (no slash or backslash, not blank), got {v!r}")
        return v

    @model_validator(mode="before")
    @classmethod
    def _labeler_types(cls, raw):
        """Each ``labelers`` entry as the spec class its ``type`` names (see ``register_labeler``)."""
        if isinstance(raw, dict) and isinstance(raw.get("labelers"), list):
            specs, problems = [], []
            for i, item in enumerate(raw["labelers"]):
                kind = item.get("type") if isinstance(item, dict) else None
                kind = kind if isinstance(kind, str) else None if kind is None else repr(kind)  # a list is no type name
                if isinstance(item, LabelerSpec):
                    specs.append(item)
                elif kind not in LABELER_TYPES:
                    problems.append(f"labelers.{i}.type: expected one of {sorted(LABELER_TYPES)}, got {kind!r}")
                else:
                    try:
                        specs.append(LABELER_TYPES[kind].model_validate(item))
                    except ValidationError as exc:
                        problems += [f"labelers.{i}.{line.strip()}" for line in _format_errors(exc).splitlines()]
            if problems:
                raise ValueError("; ".join(problems))
            raw = {**raw, "labelers": specs}
        return raw

    @model_validator(mode="before")
    @classmethod
    def _plain_text(cls, raw):
        """(Runs before ``_labeler_types``, on the raw mapping.) Refuse NUL characters and lone
        surrogates anywhere: they end up in paths, prompts and file names."""
        where = _bad_text(raw)
        if where is not None:  # a key holding the surrogate is named with it escaped: pydantic cannot render it
            where = where.encode("utf-8", "backslashreplace").decode("utf-8")
            raise PydanticCustomError("bad_text", "{where}", {"where": where})
        return raw

    @field_validator("labelers")
    @classmethod
    def _some_labeler(cls, v, info: ValidationInfo):
        """At least one labeler; none is allowed only while the include file that will hold them is still missing."""
        if not v and not (info.context or {}).get("skip_missing_includes"):
            raise ValueError("give at least one labeler (e.g. {type: zero_shot})")
        return v

    @field_validator("labelers")
    @classmethod
    def _unique_names(cls, v):
        names = [lf.name for lf in v if hasattr(lf, "name")]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"labeler names must be unique; repeated: {dupes}")
        return v

    @model_validator(mode="after")
    def _student_fits_task(self):
        if self.task == "multilabel" and self.student.features == "finetune":
            raise ValueError("student.features: finetune trains a multi-class student only; a multilabel task needs "
                             "tfidf, embeddings or tfidf+embeddings")
        return self


_BAD_CHARACTER = re.compile("[\x00\ud800-\udfff]")


def _bad_text(value, where: str = "", depth: int = 0) -> str | None:
    """Where a config holds a NUL character or a lone surrogate (``labelers.0.name: ...``), or None."""
    if isinstance(value, str):
        found = _BAD_CHARACTER.search(value)
        if found is None:
            return None
        c = found.group()
        what = "a NUL character" if c == "\x00" else f"a lone surrogate (\\u{ord(c):04x}), not valid Unicode"
        return f"{where or 'the config'}: holds {what} at position {found.start()}"
    if depth > 50:  # validation refuses such nesting anyway
        return None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, (list, tuple)) else ()
    for key, item in items:
        name = f"{where}.{key}" if where else str(key)
        found = _bad_text(key, f"{name} (the key)", depth + 1) or _bad_text(item, name, depth + 1)
        if found:
            return found
    return None


def _coerce_paths(raw: dict) -> dict:
    for key in ("data", "gold", "test"):
        if isinstance(raw.get(key), str):
            raw[key] = {"path": raw[key]}
    return raw


def _resolve(cfg: ProjectConfig, base: Path) -> ProjectConfig:
    def at(p: Path) -> Path:
        return p if p.is_absolute() else (base / p)

    for spec in (cfg.data, cfg.gold, cfg.test):
        if spec is not None and spec.path is not None:
            spec.path = at(spec.path)
    if isinstance(cfg.taxonomy, Path):
        cfg.taxonomy = at(cfg.taxonomy)
    cfg.runs_dir = at(cfg.runs_dir)
    cfg.store = at(cfg.store)
    if cfg.lm.model.endswith(".gguf"):  # a model file of the user's, beside the config
        cfg.lm.model = str(at(Path(cfg.lm.model)))
    cfg.programs_dir = at(cfg.programs_dir)
    cfg.review.gold = at(cfg.review.gold)
    if cfg.bootstrap is not None and cfg.bootstrap.output is not None:
        cfg.bootstrap.output = at(cfg.bootstrap.output)
    cfg.propose_lfs.output = at(cfg.propose_lfs.output)
    for lf in cfg.labelers:
        for name in getattr(lf, "paths", ()):
            setattr(lf, name, at(getattr(lf, name)))
    return cfg


def _format_errors(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"])
        got = err.get("input")
        got = f" (got {got!r})" if not isinstance(got, (dict, list)) and got is not None else ""
        lines.append(f"  {where + ': ' if where else ''}{err['msg']}{got}")  # a whole-config check has no field
    return "\n".join(lines)


def read_yaml(path: Path, what: str, hint: str = ""):
    """Parse a YAML file, or raise ConfigError saying which file is missing or malformed."""
    path = Path(path)
    try:
        found = path.is_file()
    except OSError as exc:  # a name too long for the file system
        raise ConfigError(f"{what} file {path} cannot be read: {exc.strerror or exc}") from None
    if not found:
        raise ConfigError(f"{what} file {path} does not exist{hint}")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{path} is not valid YAML for labelloop: it nests lists or mappings too deeply") from None
    except ValueError as exc:  # an integer of more than 4,300 digits
        raise ConfigError(f"{path} is not valid YAML for labelloop: {exc}") from None
    except OSError as exc:  # a path too long, a file that cannot be read
        raise ConfigError(f"{what} file {path} cannot be read: {exc.strerror or exc}") from None


INCLUDABLE = ("keywords", "regex", "similar")  # declarative labelers: data only, no code runs from an included file


def _listed(names: tuple[str, ...]) -> str:
    """``a, b and c``.

    >>> _listed(("keywords", "regex", "similar")), _listed(("keywords",))
    ('keywords, regex and similar', 'keywords')
    """
    return " and ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else list(names))


def included_labelers(item: dict, where: str, base: Path, skip_missing: bool) -> list[LabelerSpec]:
    """The labelers of a ``{include: FILE}`` entry: a YAML list of keywords, regex and similar labelers (no code runs
    from it)."""
    if set(item) != {"include"} or not isinstance(item["include"], str) or not item["include"].strip():
        raise ConfigError(f"{where}: an include entry is `{{include: FILE}}` with a YAML file name and nothing else, got "
                          f"{item!r}")
    path = Path(item["include"])
    path = path if path.is_absolute() else base / path
    if skip_missing and not path.exists():
        return []
    entries = read_yaml(path, f"{where}: included labelers", " (`labelloop propose-lfs CONFIG` writes it)")
    entries = [] if entries is None else entries
    if not isinstance(entries, list):
        raise ConfigError(f"{path}: expected a YAML list of labelers, got {type(entries).__name__}")
    specs = []
    for j, entry in enumerate(entries):
        problem = _bad_text(entry, f"entry {j}")
        if problem:
            raise ConfigError(f"{path}: {problem}")
        kind = entry.get("type") if isinstance(entry, dict) else None
        if kind not in INCLUDABLE:
            raise ConfigError(f"{path}: entry {j}: an included file holds only {_listed(INCLUDABLE)} labelers, got "
                              f"{'type ' + repr(kind) if isinstance(entry, dict) else type(entry).__name__}")
        try:
            specs.append(LABELER_TYPES[kind].model_validate(entry))
        except ValidationError as exc:
            raise ConfigError(f"{path}: entry {j} ({entry.get('name', 'no name')!r}) is not a valid labeler:\n"
                              f"{_format_errors(exc)}") from None
    return specs


def _expand_includes(raw: dict, base: Path, skip_missing: bool) -> dict:
    """``labelers:`` with each ``{include: FILE}`` entry replaced by the file's labelers (paths resolve against ``base``)."""
    labelers = raw.get("labelers")
    if not isinstance(labelers, list) or not any(isinstance(x, dict) and "include" in x for x in labelers):
        return raw
    expanded = []
    for i, item in enumerate(labelers):
        if isinstance(item, dict) and "include" in item:
            expanded += included_labelers(item, f"labelers.{i}", base, skip_missing)
        else:
            expanded.append(item)
    return {**raw, "labelers": expanded}


def included_files(path: Path) -> list[Path]:
    """The files a config's ``labelers:`` include (``{include: FILE}``), resolved against its folder."""
    raw = read_yaml(Path(path), "config")
    labelers = raw.get("labelers") if isinstance(raw, dict) else None
    return [Path(path).parent / x["include"] for x in labelers or []
            if isinstance(x, dict) and isinstance(x.get("include"), str)]


def parse_config(raw, base_dir: Path = Path("."), source: str = "the config", *,
                 skip_missing_includes: bool = False) -> ProjectConfig:
    """Validate a config mapping (as read from YAML); relative paths resolve against ``base_dir``.

    ``skip_missing_includes``: an ``{include: FILE}`` labelers entry whose file does not exist yet adds
    no labeler instead of stopping (``propose-lfs`` writes that file).
    """
    if not isinstance(raw, dict):
        raise ConfigError(f"{source} must hold a mapping of config keys, got {type(raw).__name__}")
    raw = _expand_includes(dict(raw), Path(base_dir), skip_missing_includes)
    try:
        cfg = ProjectConfig.model_validate(_coerce_paths(dict(raw)), context={"skip_missing_includes": skip_missing_includes})
    except ValidationError as exc:
        raise ConfigError(f"{source} is not a valid labelloop config:\n{_format_errors(exc)}") from None
    return _resolve(cfg, Path(base_dir))


def load_config(path: Path, *, skip_missing_includes: bool = False) -> ProjectConfig:
    """Read and validate a project config; errors name the field, what was expected and what arrived."""
    path = Path(path)
    return parse_config(read_yaml(path, "config"), path.parent, str(path), skip_missing_includes=skip_missing_includes)


def config_to_yaml(cfg: ProjectConfig) -> str:
    """The config as YAML, for a run folder's snapshot; credentials in ``lm.api_base`` are redacted."""
    from labelloop.programs.lm import redact_url

    data = cfg.model_dump(mode="json")
    data["lm"]["api_base"] = redact_url(data["lm"].get("api_base"))
    return yaml.safe_dump(data, sort_keys=False)
