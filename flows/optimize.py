"""Optimizing: compile each optimizable LLM labeler (Infer-Retrieve-Rank) on gold dev records and save it.

Saved programs live in the project's ``programs_dir`` (``optimized/<labeler>.json``); later runs
load them, and their hash becomes part of the labeler's version, so their answers are stored apart
from the zero-shot program's.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import dspy

from labelloop.flows.config import ConfigError
from labelloop.flows.io import write_json
from labelloop.flows.project import Project, program_path
from labelloop.programs.lm import model_identity
from labelloop.programs.optimize import compile_program, examples, ranking_metric


def optimize_project(project: Project, labeler: str | None = None, *, lm=None) -> list[dict]:
    """Compile the project's optimizable labelers (or just ``labeler``) on a seeded sample of gold dev records.

    Args:
        project: the loaded project.
        labeler: only this labeler.
        lm: the DSPy LM; built from the config (with DSPy's response cache) when None.

    Returns:
        One summary per labeler: name, saved path, candidate scores (RP@k on the sample), seconds.
    """
    cfg = project.config
    targets = [lf for lf in project.llm_labelers if lf.optimizable and labeler in (None, lf.name)]
    if not targets:
        known = [lf.name for lf in project.llm_labelers if lf.optimizable]
        raise ConfigError(f"nothing to optimize: no optimizable labeler named {labeler!r} (optimizable: {known})"
                          if labeler else "nothing to optimize: the config has no `{type: irr}` labeler")
    dev = project.splits.get("dev")
    if dev is None or not len(dev):
        raise ConfigError("optimize needs gold dev records: set `gold:` in the config")
    sample = dev.sample(n=min(cfg.optimize.train_size, len(dev)), random_state=cfg.seed)
    gold = [v if isinstance(v, list) else [v] for v in sample["label"]]
    trainset = examples(list(zip(sample["text"], gold)))
    # DSPy's response cache: the optimizer repeats identical calls (and a rerun repeats them all)
    lm = lm or cfg.lm.make(cache=True)
    ctx, out = project.context(), []
    for target in targets:
        started = time.time()
        program = target.program(ctx, optimized=False, lm=lm)
        with dspy.context(lm=lm):
            compiled = compile_program(program, trainset, ranking_metric(cfg.optimize.metric_k), optimizer=cfg.optimize.optimizer,
                                       max_demos=cfg.optimize.max_demos, candidates=cfg.optimize.candidates)
        scores = [{"seed": c["seed"], "score": round(float(c["score"]), 2)} for c in getattr(compiled, "candidate_programs", [])]
        path = write_json(program_path(cfg, target.name), {
            "labeler": target.name, "model": model_identity(cfg.lm.model), "optimizer": cfg.optimize.optimizer,
            "metric": f"rp@{cfg.optimize.metric_k}", "train_ids": sample["id"].tolist(), "candidates": scores,
            "created": datetime.now(UTC).isoformat(timespec="seconds"), "state": compiled.dump_state()})
        out.append({"labeler": target.name, "path": path, "candidates": scores, "seconds": round(time.time() - started, 1),
                    "demos": {name: len(p.demos) for name, p in compiled.named_predictors()}})
    return out

