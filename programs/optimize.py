"""Compile a program on a few gold examples with a DSPy optimizer.

Optimizers copy the program and reset the LMs of its predictors; programs here keep their LMs on
the module (see ``programs.irr``), so a compiled copy answers with the same models.
"""

from __future__ import annotations

import contextlib
import io

import dspy

from labelloop.programs.metrics import rp_at_k

OPTIMIZERS = ("bootstrap_random_search",)  # the tested ones; a config naming another is refused


def ranking_metric(k: int = 10):
    """A DSPy metric: RP@k of the prediction's ``ranking`` against the example's ``gold`` labels."""

    def metric(example, pred, trace=None) -> float:
        return rp_at_k(getattr(pred, "ranking", None) or [], example.gold, k)

    metric.__name__ = f"rp_at_{k}"
    return metric


def examples(records: list[tuple[str, list[str]]]) -> list[dspy.Example]:
    """(text, gold labels) pairs as DSPy examples with ``text`` as the input."""
    return [dspy.Example(text=text, gold=list(gold)).with_inputs("text") for text, gold in records]


def compile_program(program: dspy.Module, trainset: list[dspy.Example], metric, *, optimizer: str = "bootstrap_random_search",
                    max_demos: int = 2, candidates: int = 1, valset: list[dspy.Example] | None = None,
                    quiet: bool = True) -> dspy.Module:
    """Return an optimized copy of ``program``.

    Args:
        program: the program to compile (left unchanged).
        trainset: gold examples to bootstrap demonstrations from (about ten is enough).
        metric: ``metric(example, prediction, trace=None) -> float``.
        optimizer: ``bootstrap_random_search`` (DSPy's BootstrapFewShotWithRandomSearch: few-shot
            demonstrations, zero-shot kept as a candidate, so the result is never worse on ``valset``
            than the input), the only one in ``OPTIMIZERS``.
        max_demos: bootstrapped demonstrations per predictor.
        candidates: random demonstration sets tried beyond the zero-shot and the first-found set.
        valset: examples to choose the best candidate on; the trainset when omitted.
        quiet: hide the optimizer's own prints.
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    if not trainset:
        raise ValueError("optimizing needs at least one gold example")
    out = io.StringIO() if quiet else None
    with contextlib.redirect_stdout(out) if quiet else contextlib.nullcontext():
        opt = dspy.BootstrapFewShotWithRandomSearch(
            metric=metric, max_bootstrapped_demos=max_demos, max_labeled_demos=0,
            num_candidate_programs=candidates, num_threads=1)
        # -2 ("labels only") equals zero-shot when no labelled demos are allowed: skip it
        return opt.compile(program, trainset=trainset, valset=valset, restrict=[-3, -1, *range(candidates)])
