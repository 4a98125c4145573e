"""The `bootstrap` flow: propose a taxonomy from a seeded sample of the records (TnT-LLM style).

Sample -> summarise each record for the use case -> generate a first taxonomy (by default: cluster
the sample and name each cluster from its typical words and summaries, one call per cluster;
otherwise from the first minibatch of summaries in one call) -> update it on each following
minibatch and review it, both by a few typed edits -> assign every sampled record to a label or
"none of these" (coverage) -> write ``taxonomy.yaml`` and a report.

Every validated answer is kept beside the project's vote store, keyed by a hash of (step, inputs,
model, prompt version): per-record summaries and assignments in the vote table, step answers and
markers in a step cache of their own. A re-run after a crash pays only for the calls that are
missing. An existing output file is never overwritten without ``--update``, which starts from the
file as a person left it and keeps their edits. ``bootstrap_taxonomy`` is a plain function;
``labelloop.flows.orchestration.bootstrap_flow`` runs it as a Prefect flow.
"""

from __future__ import annotations

import difflib
import json
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path

import dspy
import yaml

from labelloop.flows.config import BootstrapSpec, ProjectConfig
from labelloop.flows.io import read_records, read_taxonomy, write_text
from labelloop.flows.store import StepCache, VoteStore, lm_key, progress_bar, step_key, stored_or_asked
from labelloop.programs.choice import PROMPT_FORMAT
from labelloop.programs.clustering import group_records
from labelloop.programs.errors import StateError, TaxonomyError
from labelloop.programs.taxonomy import Summariser, TaxonomyStep, assignment_program, prompt_version
from labelloop.programs.taxonomy_rules import NONE_OF_THESE, Constraints, carry_edits, format_summaries, normalise

logger = logging.getLogger("labelloop")


@dataclass
class BootstrapResult:
    output: Path
    report: Path
    labels: list[dict]
    coverage: float
    llm_calls: int
    sample_ids: list[str]
    counts: dict[str, int]
    examples: dict[str, list[str]] = field(default_factory=dict)
    steps: list[dict] = field(default_factory=list)
    diff: dict | None = None  # --update: added, removed, changed label names and a unified diff
    notes: list[str] = field(default_factory=list)


def constraints_of(spec: BootstrapSpec) -> Constraints:
    return Constraints(max_labels=spec.max_labels, max_name_words=spec.max_name_words,
                       max_description_chars=spec.max_description_chars, exclusive=spec.exclusive,
                       allow_catch_all=spec.allow_catch_all)


def output_path(cfg: ProjectConfig) -> Path:
    spec = cfg.bootstrap or BootstrapSpec()
    return Path(spec.output or cfg.taxonomy)


def minibatches(items: list, size: int) -> list[list]:
    """Consecutive batches of ``size``; a last batch under half the size joins the one before.

    >>> [len(b) for b in minibatches(list(range(35)), 16)]
    [16, 19]
    """
    batches = [items[i:i + size] for i in range(0, len(items), size)]
    if len(batches) > 1 and len(batches[-1]) < size / 2:
        batches[-2].extend(batches.pop())
    return batches


def summarise(records: list[tuple[str, str]], spec: BootstrapSpec, lm, store: VoteStore, key: list,
              show_progress: bool) -> tuple[dict[str, dict], int]:
    """A summary per record: stored ones from the store, the rest from the LM (committed one by one)."""
    version = step_key("summarise", prompt_version("summarise"), spec.use_case, spec.summary_words, key)
    program = Summariser(spec.use_case, spec.summary_words, spec.max_attempts)

    def ask(text: str) -> tuple[dict, int]:
        with dspy.context(lm=lm):
            pred = program(text=text)
        return {"summary": pred.summary, "ok": pred.ok}, pred.calls

    got = stored_or_asked(store, version, records, ask, name="summarise", show_progress=show_progress, tolerate_errors=False)
    return got.answers, got.calls


def taxonomy_step(step: str, inputs: dict, spec: BootstrapSpec, lm, cache: StepCache, key: list,
                  current: list[dict] | None = None) -> dict:
    """One validated name / generate / update / review answer, from the step cache when this exact step ran before.

    ``current`` is the taxonomy an update or review edits. Returns the StepResult as a dict, with
    ``cached`` and (on failure after every attempt) ``error``.
    """
    constraints = constraints_of(spec)
    version = step_key(step, prompt_version(step, constraints), spec.max_attempts, key)
    item = [(step, json.dumps({**inputs, "current": current}, sort_keys=True))]
    program = TaxonomyStep(step, constraints, spec.max_attempts, current=current)

    def ask(_text: str) -> tuple[dict, int]:
        with dspy.context(lm=lm):
            result = program(**inputs).to_dict()
        return result, result["calls"]

    try:
        got = stored_or_asked(cache, version, item, ask, name=step, show_progress=False, tolerate_errors=False)
    except TaxonomyError as exc:
        return {"labels": None, "calls": exc.attempts, "cached": False, "error": str(exc), "problems": exc.problems}
    return {**got.answers[step], "calls": got.calls, "cached": got.calls == 0}


def assign(records: list[tuple[str, str]], labels: list[dict], lm, store: VoteStore, key: list,
           show_progress: bool) -> tuple[dict[str, dict], int]:
    """Each record's label among ``labels`` or none_of_these, with probabilities (cached per record)."""
    version = step_key("assign", PROMPT_FORMAT, labels, key)
    program = assignment_program(labels)

    def ask(text: str) -> tuple[dict, int]:
        with dspy.context(lm=lm):
            pred = program(text=text)
        return {"answer": pred.answer, "probs": pred.probs, "raw": pred.raw}, 1

    got = stored_or_asked(store, version, records, ask, name="coverage check", show_progress=show_progress,
                          tolerate_errors=False)
    return got.answers, got.calls


def name_groups(records: list[tuple[str, str]], summaries: dict[str, dict], spec: BootstrapSpec, lm, cache: StepCache,
                key: list, seed: int, show_progress: bool) -> tuple[list[dict], list[dict], int, list[str]]:
    """The first taxonomy: one label per cluster of the sampled records. Returns labels, steps, calls, notes.

    A group whose name stays invalid is left out, and groups given the same name share one label;
    both are noted. Fewer than two labels left is a ``TaxonomyError``.
    """
    groups = group_records([summaries[rid]["summary"] for rid, _ in records], [text for _, text in records],
                           spec.max_labels, seed=seed, by=spec.group_by)
    labels, steps, calls, notes, problems = [], [], 0, [], []
    with progress_bar(show_progress) as progress:
        bar = progress.add_task("name groups", total=len(groups))
        results = []
        for group in groups:
            results.append(taxonomy_step("name", group.inputs(), spec, lm, cache, key))
            progress.advance(bar)
    for i, (group, res) in enumerate(zip(groups, results), 1):
        steps.append({**res, "step": f"name group {i}", "n_summaries": group.size, "keywords": group.keywords})
        calls += res["calls"]
        about = f"group {i} ({group.size} records: {', '.join(group.keywords[:4])})"
        if res["labels"] is None:
            notes.append(f"{about} got no valid name and has no label: {res['error']}")
            problems += res["problems"]
        elif res["labels"][0]["name"] in {x["name"] for x in labels}:
            notes.append(f'{about} was named "{res["labels"][0]["name"]}" like a larger group; they share that label')
        else:
            labels.append(res["labels"][0])
    if len(labels) < 2:
        raise TaxonomyError("name", problems or [f"the {len(groups)} groups got {len(labels)} distinct name(s)"], calls)
    return labels, steps, calls, notes


def _read_existing(path: Path) -> list[dict]:
    taxonomy = read_taxonomy(path)  # validates, with a clear error
    return normalise({"name": n, "description": d} for n, d in zip(taxonomy.names, taxonomy.descriptions))


def taxonomy_yaml(labels: list[dict], examples: dict[str, list[str]], header: str) -> str:
    body = {"labels": [{**label, "examples": examples.get(label["name"], [])} for label in labels]}
    return header + yaml.safe_dump(body, sort_keys=False, allow_unicode=True, width=100, default_flow_style=None)


def taxonomy_diff(old: list[dict], new: list[dict], old_text: str, new_text: str, path: Path) -> dict:
    before, after = {x["name"]: x["description"] for x in old}, {x["name"]: x["description"] for x in new}
    unified = "".join(difflib.unified_diff(old_text.splitlines(True), new_text.splitlines(True),
                                           fromfile=f"{path.name} (before)", tofile=f"{path.name} (after)"))
    return {"added": [n for n in after if n not in before], "removed": [n for n in before if n not in after],
            "changed": [n for n in after if n in before and after[n] != before[n]], "unified": unified}


def render_report(spec: BootstrapSpec, result: BootstrapResult, n_records: int, update: bool,
                  summaries_failed: int, invalid: int) -> str:
    lines = [f"# Taxonomy bootstrap{' (update)' if update else ''}", "",
             f"- use case: {spec.use_case}",
             f"- records: {n_records}; sampled: {len(result.sample_ids)} (seeded); minibatch size: {spec.minibatch_size}",
             f"- LLM calls this run: {result.llm_calls}",
             f"- coverage: {result.coverage:.1%} of sampled records fit a label "
             f"({result.counts.get(NONE_OF_THESE, 0)} fit none of them, {invalid} gave no valid answer)",
             f"- summaries that fell back to the text's first words: {summaries_failed}", "",
             "## Labels", "", "| label | sampled records | examples | description |", "|---|---|---|---|"]
    for label in result.labels:
        ex = ", ".join(result.examples.get(label["name"], []))
        lines.append(f"| {label['name']} | {result.counts.get(label['name'], 0)} | {ex} | {label['description']} |")
    lines += ["", "## Steps", "", "| step | summaries | LLM calls | from store | result |", "|---|---|---|---|---|"]
    for s in result.steps:
        named = f"{s['labels'][0]['name']} (keywords: {', '.join(s['keywords'])})" if s.get("keywords") and s["labels"] else None
        edits = "; ".join(s["edits"]) if s.get("edits") else ("no edits" if s.get("edits") is not None else "")
        outcome = s.get("error") or named or ", ".join(x for x in [
            f"{len(s['labels'])} labels", f"rating {s['rating']}" if s.get("rating") else "", edits,
            f"retried for: {'; '.join(s['retried_for'])}" if s.get("retried_for") else ""] if x)
        cached = "yes" if s["cached"] else "no"
        lines.append(f"| {s['step']} | {s.get('n_summaries', '')} | {s['calls']} | {cached} | {outcome} |")
    if result.notes:
        lines += ["", "## Notes", ""] + [f"- {x}" for x in result.notes]
    if result.diff is not None:
        lines += ["", "## Changes to the taxonomy", "", f"- added: {result.diff['added'] or 'none'}",
                  f"- removed: {result.diff['removed'] or 'none'}", f"- changed: {result.diff['changed'] or 'none'}"]
        if result.diff["unified"]:
            lines += ["", "```diff", result.diff["unified"].rstrip(), "```"]
    return "\n".join(lines) + "\n"


def bootstrap_taxonomy(cfg: ProjectConfig, *, update: bool = False, lm=None, show_progress: bool = True) -> BootstrapResult:
    """Propose (or with ``update`` refine) the project's taxonomy and write it with a report.

    Args:
        cfg: the loaded config (``flows.config.load_config``); its taxonomy file need not exist.
        update: start from the existing output file and refine it on records not seen before.
        lm: the DSPy LM that answers; built from the config's ``lm:`` when None.
        show_progress: rich progress bars for the per-record passes.

    Returns:
        What was written, the coverage, the LLM calls made and, for an update, the diff.
    """
    spec = cfg.bootstrap or BootstrapSpec()
    out = output_path(cfg)
    report_path = out.with_name(f"{out.stem}_report.md")
    if out.exists() and not update:
        raise StateError(f"{out} already exists and may hold your edits, so bootstrap leaves it alone; refine it on new "
                          f"records with `labelloop bootstrap --update`, or delete it to start over")
    if update and not out.exists():
        raise StateError(f"--update refines an existing taxonomy, but {out} does not exist; run `labelloop bootstrap` first")
    current = _read_existing(out) if update else None
    old_text = out.read_text(encoding="utf-8") if update else ""

    df = read_records(cfg.data)
    texts = dict(zip(df["id"], df["text"]))
    store, steps_cache = VoteStore(cfg.store), StepCache(cfg.store)
    key = lm_key(cfg.lm)
    seen_version = step_key("bootstrap-seen", str(out))
    written_version = step_key("bootstrap-written", str(out))
    seed = cfg.seed if spec.seed is None else spec.seed
    notes: list[str] = []
    try:
        seen = steps_cache.get_many(seen_version, list(texts.items())) if update else {}
        pool = [rid for rid in df["id"] if rid not in seen]
        if update and not pool:
            notes.append("every record was sampled before; this update resamples from all records")
            pool = list(df["id"])
        rounds = 1 + max((s["round"] for s in seen.values()), default=-1) if update else 0
        sample = random.Random(seed + rounds).sample(pool, min(spec.sample_size, len(pool)))
        records = [(rid, texts[rid]) for rid in sample]

        lm = lm or cfg.lm.make(**({"n_ctx": spec.context_tokens} if cfg.lm.local else {}))
        summaries, calls = summarise(records, spec, lm, store, key, show_progress)
        summaries_failed = sum(1 for rid in sample if not summaries[rid]["ok"])
        logger.info("summaries: %d LLM calls (%d reused)", calls, len(sample) - calls)

        steps, labels = [], current
        named = labels is None and spec.group_summaries
        if named:  # named clusters of the whole sample take the place of generate on the first minibatch
            labels, steps, n, named_notes = name_groups(records, summaries, spec, lm, steps_cache, key, seed, show_progress)
            calls += n
            notes += named_notes
        for i, batch in enumerate(minibatches(sample, spec.minibatch_size)):
            if named and i == 0:
                continue
            text = format_summaries([summaries[rid]["summary"] for rid in batch])
            step = "generate" if labels is None else "update"
            res = taxonomy_step(step, {"use_case": spec.use_case, "summaries": text}, spec, lm, steps_cache, key,
                                current=labels)
            steps.append({**res, "step": f"{step} {i + 1}", "n_summaries": len(batch)})
            calls += res["calls"]
            if res["labels"] is None:
                if step == "generate":
                    raise TaxonomyError(step, res["problems"], res["calls"])
                notes.append(f"update {i + 1} kept the taxonomy unchanged: {res['error']}")
                continue
            labels = res["labels"]
        res = taxonomy_step("review", {"use_case": spec.use_case}, spec, lm, steps_cache, key, current=labels)
        steps.append({**res, "step": "review"})
        calls += res["calls"]
        if res["labels"] is None:
            notes.append(f"the review kept the taxonomy unchanged: {res['error']}")
        else:
            labels = res["labels"]
        if update:
            before = steps_cache.get_many(written_version, [("latest", "")]).get("latest")
            labels, kept = carry_edits(before and before["labels"], current, labels)
            notes += kept

        answers, n = assign(records, labels, lm, store, key, show_progress)
        calls += n
        names = [x["name"] for x in labels]
        counts = {name: 0 for name in names + [NONE_OF_THESE]}
        for rid in sample:
            if answers[rid]["answer"] in counts:
                counts[answers[rid]["answer"]] += 1
        invalid = len(sample) - sum(counts.values())
        examples = {}
        for name in names:
            hits = [rid for rid in sample if answers[rid]["answer"] == name]
            hits.sort(key=lambda rid: -(answers[rid]["probs"] or {}).get(name, 0.0))
            examples[name] = hits[:spec.examples_per_label]

        header = (f"# Proposed by `labelloop bootstrap` from {len(sample)} sampled records. Edit freely: names, descriptions,\n"
                  f"# added or deleted labels are kept by `labelloop bootstrap --update`. Examples are record ids.\n")
        new_text = taxonomy_yaml(labels, examples, header)
        result = BootstrapResult(out, report_path, labels, (len(sample) - counts[NONE_OF_THESE] - invalid) / len(sample),
                                 calls, sample, counts, examples, steps, notes=notes)
        if update:
            result.diff = taxonomy_diff(current, labels, old_text, new_text, out)
        # the markers first: a crash before the file is written then leaves nothing that blocks a plain rerun
        steps_cache.put_many(written_version, [("latest", "", {"labels": labels})])
        steps_cache.put_many(seen_version, [(rid, texts[rid], {"round": rounds}) for rid in sample])
        write_text(report_path, render_report(spec, result, len(df), update, summaries_failed, invalid))
        write_text(out, new_text)
    finally:
        store.close()
        steps_cache.close()
    return result

