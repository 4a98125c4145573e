"""The `optimize` flow: compile each Infer-Retrieve-Rank labeler on gold dev records and save it.

Saved programs live in the project's ``programs_dir`` (``optimized/<labeler>.json``); later runs
load them, and their hash becomes part of the labeler's version, so their answers are stored apart
from the zero-shot program's.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone

import dspy
from prefect import flow

from flows.config import ConfigError
from flows.io import write_json
from flows.label_dataset import program_for
from flows.project import Project, program_path
from labelers.irr import IRRLabeler
from programs.lm import make_lm, model_identity
from programs.optimize import compile_program, examples, ranking_metric


@flow(name="optimize")
def optimize_project(project: Project, labeler: str | None = None) -> list[dict]:
    """Compile the project's IRR labelers (or just ``labeler``) on a seeded sample of gold dev records.

    Returns:
        One summary per labeler: name, saved path, candidate scores (RP@k on the sample), seconds.
    """
    cfg = project.config
    targets = [lf for lf in project.llm_labelers if isinstance(lf, IRRLabeler) and labeler in (None, lf.name)]
    if not targets:
        known = [lf.name for lf in project.llm_labelers if isinstance(lf, IRRLabeler)]
        raise ConfigError(f"nothing to optimize: no irr labeler named {labeler!r} (irr labelers: {known})" if labeler else
                          "nothing to optimize: the config has no `{type: irr}` labeler")
    dev = project.splits.get("dev")
    if dev is None or not len(dev):
        raise ConfigError("optimize needs gold dev records: set `gold:` in the config")
    sample = dev.sample(n=min(cfg.optimize.train_size, len(dev)), random_state=cfg.seed)
    gold = [v if isinstance(v, list) else [v] for v in sample["label"]]
    trainset = examples(list(zip(sample["text"], gold)))
    # DSPy's response cache: the optimizer repeats identical calls (and a rerun repeats them all)
    lm = make_lm(cfg.lm.model, api_base=cfg.lm.api_base, temperature=cfg.lm.temperature, max_tokens=cfg.lm.max_tokens,
                 n_threads=cfg.lm.n_threads, cache=True)
    out = []
    for target in targets:
        started = time.time()
        program = program_for(project, target, optimized=False)
        program.infer_lm = program.rank_lm = lm
        with dspy.context(lm=lm):
            compiled = compile_program(program, trainset, ranking_metric(cfg.optimize.metric_k), optimizer=cfg.optimize.optimizer,
                                       max_demos=cfg.optimize.max_demos, candidates=cfg.optimize.candidates, seed=cfg.seed)
        scores = [{"seed": c["seed"], "score": round(float(c["score"]), 2)} for c in getattr(compiled, "candidate_programs", [])]
        path = write_json(program_path(cfg, target.name), {
            "labeler": target.name, "model": model_identity(cfg.lm.model), "optimizer": cfg.optimize.optimizer,
            "metric": f"rp@{cfg.optimize.metric_k}", "train_ids": sample["id"].tolist(), "candidates": scores,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "state": compiled.dump_state()})
        out.append({"labeler": target.name, "path": path, "candidates": scores, "seconds": round(time.time() - started, 1),
                    "demos": {name: len(p.demos) for name, p in compiled.named_predictors()}})
    return out
