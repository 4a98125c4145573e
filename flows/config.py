"""The project config: one YAML file, validated by pydantic. Relative paths resolve against its folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from labelers.llm import CALIBRATIONS
from labelers.student import FEATURES
from programs.optimize import OPTIMIZERS
from programs.retrieval import RETRIEVERS


class ConfigError(ValueError):
    """A config or data file is invalid; the message says what was expected and what arrived."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataSpec(_Strict):
    path: Path
    id: str = "id"
    text: str = "text"
    label: str = "label"
    label_sep: str = "|"  # multilabel gold in CSV: "billing|shipping"; JSONL and Parquet may hold lists


class LMSpec(_Strict):
    model: str = "local"
    api_base: str | None = None
    temperature: float = 0.0
    max_tokens: int = 256
    max_concurrency: int = Field(1, ge=1, le=64)
    n_threads: int | None = None


class _LLMLabelerSpec(_Strict):
    threshold: float = Field(0.0, ge=0, le=1)
    calibration: Literal[CALIBRATIONS] = "batch"


class ZeroShotLF(_LLMLabelerSpec):
    type: Literal["zero_shot"]
    name: str = "zero_shot"


class PromptLF(_LLMLabelerSpec):
    type: Literal["prompt"]
    name: str
    question: str
    answers: dict[str, str]

    @field_validator("answers")
    @classmethod
    def _two_answers(cls, v):
        if len(v) < 2:
            raise ValueError(f"needs at least two answers (e.g. yes/no), got {list(v)}")
        return v


class IRRLF(_Strict):
    """Infer-Retrieve-Rank over the taxonomy: for large label spaces and multi-label tasks."""

    type: Literal["irr"]
    name: str = "irr"
    infer_k: int = Field(8, ge=1, le=50)
    rank_n: int = Field(30, ge=1, le=200)
    rank_k: int = Field(5, ge=1, le=50)
    chunk_words: int = Field(200, ge=20)
    hint: str = ""
    retriever: Literal[RETRIEVERS] = "embeddings"


class KeywordLF(_Strict):
    type: Literal["keywords"]
    name: str
    label: str
    words: list[str] = Field(min_length=1)


class RegexLF(_Strict):
    type: Literal["regex"]
    name: str
    label: str
    pattern: str


class PythonLF(_Strict):
    type: Literal["python"]
    module: Path
    names: list[str] | None = None  # default: every Snorkel LF in the module


LabelerSpec = Annotated[Union[ZeroShotLF, PromptLF, IRRLF, KeywordLF, RegexLF, PythonLF], Field(discriminator="type")]


class StudentSpec(_Strict):
    features: Literal[FEATURES] = "tfidf+embeddings"
    max_features: int = 50_000
    C: float = 4.0
    min_confidence: float = Field(0.0, ge=0, le=1)


class OptimizeSpec(_Strict):
    """`labelloop optimize`: compile the IRR programs on gold dev records."""

    optimizer: Literal[OPTIMIZERS] = "bootstrap_random_search"
    train_size: int = Field(10, ge=1)
    candidates: int = Field(1, ge=0, le=16)
    max_demos: int = Field(2, ge=1, le=8)
    metric_k: int = Field(10, ge=1)
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
    taxonomy: Path
    lm: LMSpec = LMSpec()
    labelers: list[LabelerSpec] = Field(min_length=1)
    label_model: Literal["snorkel", "majority"] = "snorkel"
    student: StudentSpec = StudentSpec()
    optimize: OptimizeSpec = OptimizeSpec()
    seed: int = 0
    runs_dir: Path = Path("runs")
    store: Path = Path(".labelloop/votes.sqlite")
    programs_dir: Path = Path("optimized")  # optimized DSPy programs, one JSON file per labeler
    bootstrap: BootstrapSpec | None = None

    @field_validator("labelers")
    @classmethod
    def _unique_names(cls, v):
        names = [lf.name for lf in v if hasattr(lf, "name")]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"labeler names must be unique; repeated: {dupes}")
        return v


def _coerce_paths(raw: dict) -> dict:
    for key in ("data", "gold", "test"):
        if isinstance(raw.get(key), str):
            raw[key] = {"path": raw[key]}
    return raw


def _resolve(cfg: ProjectConfig, base: Path) -> ProjectConfig:
    def at(p: Path) -> Path:
        return p if p.is_absolute() else (base / p)

    for spec in (cfg.data, cfg.gold, cfg.test):
        if spec is not None:
            spec.path = at(spec.path)
    cfg.taxonomy = at(cfg.taxonomy)
    cfg.runs_dir = at(cfg.runs_dir)
    cfg.store = at(cfg.store)
    cfg.programs_dir = at(cfg.programs_dir)
    if cfg.bootstrap is not None and cfg.bootstrap.output is not None:
        cfg.bootstrap.output = at(cfg.bootstrap.output)
    for lf in cfg.labelers:
        if isinstance(lf, PythonLF):
            lf.module = at(lf.module)
    return cfg


def _format_errors(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"])
        got = err.get("input")
        got = f" (got {got!r})" if not isinstance(got, dict) and got is not None else ""
        lines.append(f"  {where}: {err['msg']}{got}")
    return "\n".join(lines)


def read_yaml(path: Path, what: str, hint: str = ""):
    """Parse a YAML file, or raise ConfigError saying which file is missing or malformed."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} file {path} does not exist{hint}")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None


def load_config(path: Path) -> ProjectConfig:
    """Read and validate a project config; errors name the field, what was expected and what arrived."""
    path = Path(path)
    raw = read_yaml(path, "config")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a mapping of config keys, got {type(raw).__name__}")
    try:
        cfg = ProjectConfig.model_validate(_coerce_paths(raw))
    except ValidationError as exc:
        raise ConfigError(f"{path} is not a valid labelloop config:\n{_format_errors(exc)}") from None
    return _resolve(cfg, path.parent)


def config_to_yaml(cfg: ProjectConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
