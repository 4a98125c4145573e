"""The `propose-lfs` flow: the LLM writes labeling functions once per project, not once per record.

Per label, the LLM sees the taxonomy, some gold dev texts of that label and some of the others, and
proposes keyword rules (any of / all of / none of) and regular expressions (``programs.lf_proposal``;
each regex checked for catastrophic backtracking before it runs); in the first round it also writes a
few new example texts of the label, which become a ``similar`` rule (records whose sentence embedding
is close to one of them; the threshold chosen on the gold dev records). Every candidate is scored on the
gold dev records (accuracy, coverage) and on a seeded sample of the unlabeled records (coverage,
overlap, conflict with the kept rules of other labels, redundancy with those of its own label);
candidates below the thresholds are dropped and near-duplicates merged into the better one. Each
further round shows the LLM the dev texts of a label that the kept rules still miss or get wrong,
and the texts of other labels they wrongly match; the rounds stop when the kept set gets no more
dev records right, when no label has misses, or when the call budget is spent.

Every proposal is kept in the project's step cache, keyed by its inputs, the model and the prompt
version: a rerun (or a run resumed after a crash) pays only for proposals it has not stored, and
the budget counts stored proposals at what they cost, so a rerun makes the same choices. The kept
rules are written as ordinary ``keywords`` / ``regex`` / ``similar`` labelers to a YAML file that the config
includes (``labelers: [{include: generated_lfs.yaml}]``), each with its dev accuracy and coverage as
a comment, beside a Markdown report of every candidate and why it was kept or dropped. The test
split is never read. ``propose_lfs`` is a plain function; ``labelloop.flows.orchestration.propose_lfs_flow``
runs it as a Prefect flow.
"""

from __future__ import annotations

import json
import logging
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from labelloop.flows.config import ProjectConfig, ProposeLFsSpec
from labelloop.flows.io import write_text
from labelloop.flows.store import StepCache, lm_key, progress_bar, step_key, stored_or_asked
from labelloop.labelers.heuristics import make_rule
from labelloop.programs.errors import ConfigError, StateError
from labelloop.programs.lf_proposal import ExampleWriter, RuleProposer, examples_version, prompt_version, rule_key

logger = logging.getLogger("labelloop")
EXAMPLE_CHARS = 300  # each example text shown to the LLM is cut to this many characters
REDUNDANT = 0.95  # a candidate whose matches are this much covered by kept rules of its label adds nothing
THRESHOLDS = tuple(round(0.3 + 0.05 * i, 2) for i in range(12))  # a similar rule's cosine threshold: 0.30 to 0.85


@dataclass
class Candidate:
    """One proposed rule for one label, with where it came from and how it scored."""

    label: str
    rule: dict  # {"words": [...]} or {"pattern": ...}, with "all_of" and "none_of"; or {"similar_to": [...], "threshold"}
    round: int
    dev: np.ndarray  # matches on the gold dev records
    pool: np.ndarray  # matches on the sampled unlabeled records
    dev_correct: int = 0
    status: str = ""  # "kept", or why it was dropped
    name: str = ""

    @property
    def kind(self) -> str:
        """The labeler type the rule is written as: ``keywords``, ``regex`` or ``similar``."""
        return "regex" if "pattern" in self.rule else "similar" if "similar_to" in self.rule else "keywords"

    @property
    def dev_matched(self) -> int:
        return int(self.dev.sum())

    @property
    def smoothed_accuracy(self) -> float:
        """Dev accuracy with one right and one wrong match added: 1 of 1 is 0.67, 4 of 4 is 0.83, 0 of 0 is 0.5."""
        return (self.dev_correct + 1) / (self.dev_matched + 2)

    def describe(self) -> str:
        """The rule in a few words, for prompts and reports.

        >>> rule = {"words": ["free", "win"], "all_of": ["iphone"], "none_of": []}
        >>> Candidate("spam", rule, 1, np.zeros(1), np.zeros(1)).describe()
        'any of [free, win] and all of [iphone]'
        """
        if self.kind == "similar":
            return f"similar to {len(self.rule['similar_to'])} example texts (cosine >= {self.rule['threshold']})"
        if self.kind == "regex":
            text = f"regex {self.rule['pattern']}"
        else:
            text = f"any of [{', '.join(self.rule['words'])}]" + (" (any form)" if self.rule.get("forms") else "")
        if self.rule.get("all_of"):
            text += f" and all of [{', '.join(self.rule['all_of'])}]"
        if self.rule.get("none_of"):
            text += f" and none of [{', '.join(self.rule['none_of'])}]"
        return text


@dataclass
class ProposeResult:
    output: Path
    report: Path
    kept: list[Candidate]
    candidates: list[Candidate]
    llm_calls: int  # what every proposal used cost, stored ones included
    calls_this_run: int
    rounds: list[dict] = field(default_factory=list)
    stop_reason: str = ""
    dev_records: int = 0
    pool_records: int = 0


def matches(rule: dict, texts: list[str]) -> np.ndarray:
    compiled = make_rule(words=rule.get("words"), pattern=rule.get("pattern"), all_of=rule.get("all_of", []),
                         none_of=rule.get("none_of", []), forms=rule.get("forms", False))
    return np.fromiter((compiled.matches(t) for t in texts), dtype=bool, count=len(texts))


def similar_candidate(label: str, texts: list[str], gold: list[str], dev_embedded, pool_embedded, round_: int) -> Candidate:
    """A ``similar`` rule from the LLM's example texts of ``label``, its threshold chosen on the gold dev records: the
    one in ``THRESHOLDS`` where the records it matches hold the most right minus wrong (ties: the higher threshold).

    The texts are the LLM's own, never dev texts, so the dev records judge the rule as they judge a keyword rule.
    """
    from labelloop.labelers.heuristics import max_similarity, reaches  # matched as the similar labeler votes

    dev, pool = max_similarity(dev_embedded, texts), max_similarity(pool_embedded, texts)
    mine = np.array([g == label for g in gold], dtype=bool)
    threshold = max(THRESHOLDS, key=lambda t: (int(reaches(dev, t)[mine].sum()) - int(reaches(dev, t)[~mine].sum()), t))
    c = Candidate(label, {"similar_to": list(texts), "threshold": threshold}, round_, reaches(dev, threshold),
                  reaches(pool, threshold))
    c.dev_correct = int(c.dev[mine].sum())
    return c


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    union = int((a | b).sum())
    return int((a & b).sum()) / union if union else 1.0


def select(candidates: list[Candidate], spec: ProposeLFsSpec, pool_size: int) -> list[Candidate]:
    """Keep candidates greedily, best smoothed dev accuracy first; mark each with ``kept`` or why it was dropped."""
    order = sorted(candidates, key=lambda c: (-c.smoothed_accuracy, -c.dev_correct, -int(c.pool.sum()), c.round,
                                              c.label, rule_key(c.rule)))
    kept: list[Candidate] = []
    for c in order:
        c.status = _why_dropped(c, kept, spec, pool_size) or "kept"
        if c.status == "kept":
            kept.append(c)
    return kept


def _why_dropped(c: Candidate, kept: list[Candidate], spec: ProposeLFsSpec, pool_size: int) -> str | None:
    if len(kept) >= spec.max_lfs:
        return f"over max_lfs ({spec.max_lfs})"
    if c.dev_matched < spec.min_dev_matches:
        return (f"matches {c.dev_matched} gold dev record(s), below min_dev_matches {spec.min_dev_matches}, so its "
                "accuracy is unknown")
    if c.dev_matched and c.smoothed_accuracy < spec.min_accuracy:
        return (f"dev accuracy {c.dev_correct} of {c.dev_matched} (smoothed {c.smoothed_accuracy:.2f}) is below "
                f"min_accuracy {spec.min_accuracy}")
    n_pool = int(c.pool.sum())
    if pool_size and n_pool / pool_size < spec.min_coverage:
        return f"matches {n_pool} of {pool_size} unlabeled records, below min_coverage {spec.min_coverage}"
    both = np.concatenate([c.dev, c.pool])
    # of its label and kind: a similar rule (meaning) does not make the keyword rules (words) redundant, nor they it
    same = [k for k in kept if k.label == c.label and (k.kind == "similar") == (c.kind == "similar")]
    for k in same:
        overlap = jaccard(both, np.concatenate([k.dev, k.pool]))
        if overlap >= spec.duplicate_overlap:
            return f"merged into {k.describe()} (a near-duplicate: {overlap:.0%} of their matches are shared)"
    if same:
        covered = np.logical_or.reduce([np.concatenate([k.dev, k.pool]) for k in same])
        redundancy = int((both & covered).sum()) / max(1, int(both.sum()))
        if redundancy >= REDUNDANT:
            return f"redundant: kept rules of {c.label} already match {redundancy:.0%} of its matches"
    others = [k.pool for k in kept if k.label != c.label]
    if others and n_pool:
        conflict = int((c.pool & np.logical_or.reduce(others)).sum()) / n_pool
        if conflict > spec.max_conflict:
            return f"conflicts: kept rules of other labels match {conflict:.0%} of its unlabeled matches"
    return None


def dev_outcome(kept: list[Candidate], gold: list[str]) -> list[str | None]:
    """Per dev record: the label most kept rules vote (None when none votes or the top labels tie)."""
    out = []
    for i in range(len(gold)):
        votes: dict[str, int] = {}
        for c in kept:
            if c.dev[i]:
                votes[c.label] = votes.get(c.label, 0) + 1
        ranked = sorted(votes.values(), reverse=True)
        out.append(None if not ranked or (len(ranked) > 1 and ranked[0] == ranked[1])
                   else max(votes, key=votes.get))
    return out


def _examples(texts: list[str]) -> str:
    if not texts:
        return "none"
    lines = []
    for i, text in enumerate(texts, 1):
        text = " ".join(text.split())
        lines.append(f"{i}. {text if len(text) <= EXAMPLE_CHARS else text[:EXAMPLE_CHARS] + '...'}")
    return "\n".join(lines)


def _rng(seed: int, *parts) -> random.Random:
    return random.Random(step_key(seed, *parts))


def proposal_inputs(label: str, round_: int, taxonomy_text: str, dev_texts: list[str], gold: list[str],
                    outcome: list[str | None], kept: list[Candidate], n: int, seed: int, sample: int = 0) -> dict | None:
    """What the LLM is shown for ``label`` in a round; None when the kept rules already get all its dev records right."""
    mine = [i for i, g in enumerate(gold) if g == label]
    if round_ > 1:
        mine = [i for i in mine if outcome[i] != label]  # missed or wrong
        if not mine:
            return None
    rng = _rng(seed, label, round_, sample) if sample else _rng(seed, label, round_)
    rng.shuffle(mine)
    wrongly = [i for i, g in enumerate(gold) if g != label and any(c.dev[i] for c in kept if c.label == label)]
    rest = [i for i, g in enumerate(gold) if g != label and i not in wrongly]
    rng.shuffle(wrongly)
    rng.shuffle(rest)
    rules = [c.describe() for c in kept if c.label == label]
    return {"labels": taxonomy_text, "label": label,
            "examples": _examples([dev_texts[i] for i in mine[:n]]),
            "counter_examples": _examples([dev_texts[i] for i in (wrongly + rest)[:n]]),
            "rules_so_far": "\n".join(f"- {r}" for r in rules) or "none"}


def propose_lfs(project, *, lm=None, overwrite: bool = False, show_progress: bool = True) -> ProposeResult:
    """Propose, score and select labeling functions, and write them with a report.

    Args:
        project: the loaded project (``flows.project.load_project``); its config's ``propose_lfs:`` block (or the
            defaults) sets the rounds, budget and thresholds. Its "train" records are the unlabeled ones, its "dev"
            records the gold ones; the test split is not read.
        lm: the DSPy LM that answers; built from the config's ``lm:`` when None (and only if a proposal is not stored).
        overwrite: replace an existing output file (it may hold your edits; without this it is left alone).
        show_progress: a progress bar over each round's proposals.
    """
    cfg, splits = project.config, project.splits
    if cfg.task != "multiclass":
        raise ConfigError("propose-lfs writes labeling functions for multiclass projects; this one is "
                          f"task: {cfg.task}")
    spec = cfg.propose_lfs
    out = Path(spec.output)
    report_path = out.with_name(f"{out.stem}_report.md")
    if out.exists() and not overwrite:
        raise StateError(f"{out} already exists and may hold your edits, so propose-lfs leaves it alone; rerun with "
                         "--overwrite to write it again from the stored proposals (no LLM call for those), or move it")
    dev = splits.get("dev")
    if dev is None or not len(dev):
        raise ConfigError("propose-lfs scores every proposed rule on gold dev records: give them as `gold:` in the config "
                          "(a few dozen labelled records; the test split is never used)")
    names = list(project.taxonomy.names)
    seed = cfg.seed if spec.seed is None else spec.seed
    dev_texts, gold = list(dev["text"]), [str(x) for x in dev["label"]]
    dev_ids = set(dev["id"])
    pool_texts = [t for rid, t in zip(splits["train"]["id"], splits["train"]["text"]) if rid not in dev_ids]
    if len(pool_texts) > spec.sample_size:
        pool_texts = random.Random(seed).sample(pool_texts, spec.sample_size)
    budget = spec.max_calls or (spec.rounds + 1) * len(names) * spec.samples
    taxonomy_text = "\n".join(f"- {n}: {d}" if d else f"- {n}" for n, d in zip(names, project.taxonomy.descriptions))
    built = {}

    def get_lm():
        if lm is not None:
            return lm
        if "lm" not in built:
            built["lm"] = cfg.lm.make(**({"n_ctx": 4096} if cfg.lm.local else {}))
        return built["lm"]

    cache = StepCache(cfg.store)
    version = step_key("propose-lfs", prompt_version(), spec.max_attempts, lm_key(cfg.lm))
    program = RuleProposer(spec.max_attempts)
    writer = ExampleWriter(spec.max_attempts)
    writer_version = step_key("propose-lfs-examples", examples_version(), spec.max_attempts, lm_key(cfg.lm))
    embedded: dict[str, np.ndarray] = {}

    def embeddings() -> tuple[np.ndarray, np.ndarray]:
        """The dev and unlabeled texts' sentence embeddings, once (for the similar rules)."""
        if not embedded:
            from labelloop.programs.embeddings import embed

            logger.info("propose-lfs: embedding %d gold dev and %d unlabeled records for the similar rules",
                        len(dev_texts), len(pool_texts))
            embedded["dev"], embedded["pool"] = embed(dev_texts), embed(pool_texts)
        return embedded["dev"], embedded["pool"]
    candidates: list[Candidate] = []
    seen: set[tuple[str, str]] = set()
    kept: list[Candidate] = []
    rounds: list[dict] = []
    spent = this_run = 0
    stop = f"all {spec.rounds} rounds done"
    best = -1
    outcome = dev_outcome(kept, gold)  # then the kept set's, from the end of each round
    try:
        for round_ in range(1, spec.rounds + 1):
            asks = [(label, proposal_inputs(label, round_, taxonomy_text, dev_texts, gold, outcome, kept, spec.examples,
                                            seed, sample)) for label in names for sample in range(spec.samples)]
            asks = [(label, inputs) for label, inputs in asks if inputs is not None]
            if not asks:
                stop = "the kept rules get every gold dev record right"
                break
            summary = {"round": round_, "labels_asked": [], "calls": 0, "new_calls": 0, "candidates": 0}
            # the first round also asks, once per label, for example texts: one similar rule each
            firsts: dict[str, dict] = {}
            for label, inputs in asks:
                firsts.setdefault(label, inputs)
            writes = list(firsts.items()) if round_ == 1 and spec.similar else []
            with progress_bar(show_progress) as progress:
                bar = progress.add_task(f"propose-lfs round {round_}", total=len(writes) + len(asks))
                for kind, (label, inputs) in [("similar", a) for a in writes] + [("rules", a) for a in asks]:
                    if spent >= budget:
                        break
                    if kind == "similar":
                        inputs = {k: v for k, v in inputs.items() if k in ("labels", "label", "examples")}
                        answer, calls, new = _ask(writer, inputs, f"{label} examples", get_lm, cache, writer_version)
                    else:
                        answer, calls, new = _ask(program, inputs, f"{label} round {round_}", get_lm, cache, version)
                    spent, this_run = spent + calls, this_run + new
                    if label not in summary["labels_asked"]:
                        summary["labels_asked"].append(label)
                    summary["calls"] += calls
                    summary["new_calls"] += new
                    progress.advance(bar)
                    if kind == "similar":
                        if answer["texts"]:
                            candidates.append(similar_candidate(label, answer["texts"], gold, *embeddings(), round_))
                            summary["candidates"] += 1
                        continue
                    for rule in answer["rules"]:
                        rule = {**rule, "forms": spec.word_forms and "pattern" not in rule}
                        if (label, rule_key(rule)) in seen:
                            continue
                        seen.add((label, rule_key(rule)))
                        c = Candidate(label, rule, round_, matches(rule, dev_texts), matches(rule, pool_texts))
                        c.dev_correct = int(sum(1 for i in np.flatnonzero(c.dev) if gold[i] == label))
                        candidates.append(c)
                        summary["candidates"] += 1
            kept = select(candidates, spec, len(pool_texts))
            outcome = dev_outcome(kept, gold)
            right = sum(1 for o, g in zip(outcome, gold) if o == g)
            covered = sum(1 for o in outcome if o is not None)
            summary |= {"kept": len(kept), "dev_coverage": covered / len(gold),
                        "dev_accuracy": right / covered if covered else 0.0, "dev_right": right}
            rounds.append(summary)
            logger.info("propose-lfs round %d: %d candidates, %d kept, dev coverage %.2f, accuracy %.2f", round_,
                        len(candidates), len(kept), summary["dev_coverage"], summary["dev_accuracy"])
            if spent >= budget:
                stop = f"the call budget ({budget}) is spent"
                break
            if right <= best:
                stop = f"round {round_} got no more gold dev records right"
                break
            best = right
    finally:
        cache.close()
    _name(kept, cfg)
    result = ProposeResult(out, report_path, kept, candidates, spent, this_run, rounds, stop, len(gold), len(pool_texts))
    write_text(report_path, render_report(cfg, result, budget))
    write_text(out, lfs_yaml(cfg, result))
    return result


def _ask(program, inputs: dict, what: str, get_lm, cache: StepCache, version: str) -> tuple[dict, int, int]:
    """A proposal (``RuleProposer``) or example texts (``ExampleWriter``) from the step cache, or from the LM
    (``get_lm()``). Returns (answer, what it cost, new calls)."""
    import dspy

    def ask(_text: str) -> tuple[dict, int]:
        with dspy.context(lm=get_lm()):
            answer = program(**inputs)
        answer = answer.to_dict() if hasattr(answer, "to_dict") else answer
        return answer, answer["calls"]

    item = [(what, json.dumps(inputs, sort_keys=True))]  # the inputs tell samples apart
    got = stored_or_asked(cache, version, item, ask, name=f"propose {what}", show_progress=False, tolerate_errors=False)
    answer = got.answers[item[0][0]]
    return answer, int(answer.get("calls", 0)), got.calls


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:24] or "rule"


def _name(kept: list[Candidate], cfg: ProjectConfig) -> None:
    taken = {getattr(spec, "name", None) for spec in cfg.labelers if getattr(spec, "origin", None) is None}
    for c in kept:
        stem = f"gen_{_slug(c.label)}_" + ({"regex": "re", "similar": "similar"}.get(c.kind) or _slug(c.rule["words"][0]))
        name, i = stem, 1
        while name in taken:
            i += 1
            name = f"{stem}_{i}"
        taken.add(name)
        c.name = name


def _scores(c: Candidate, n_dev: int, n_pool: int) -> str:
    accuracy = f"{c.dev_correct / c.dev_matched:.2f}" if c.dev_matched else "unknown"
    return (f"dev accuracy {accuracy} ({c.dev_correct} of {c.dev_matched} matched), "
            f"dev coverage {c.dev_matched / n_dev:.3f}, unlabeled coverage {int(c.pool.sum()) / max(1, n_pool):.3f}")


def lfs_yaml(cfg: ProjectConfig, result: ProposeResult) -> str:
    """The kept rules as a YAML list of ``keywords`` / ``regex`` / ``similar`` labelers, each with its scores as a
    comment."""
    lines = [f"# Labeling functions written by `labelloop propose-lfs` for {cfg.name}: {len(result.kept)} kept of "
             f"{len(result.candidates)} proposed,",
             f"# {result.llm_calls} LLM calls, scored on {result.dev_records} gold dev records and {result.pool_records} "
             "unlabeled records.",
             "# Read, edit or delete them; include this file from the config's labelers:",
             f"#   labelers: [..., {{include: {result.output.name}}}]", ""]
    for c in sorted(result.kept, key=lambda c: (c.label, c.name)):
        entry = {"type": c.kind, "name": c.name, "label": c.label}
        entry |= ({"pattern": c.rule["pattern"]} if c.kind == "regex" else {"words": c.rule["words"]}
                  if c.kind == "keywords" else {"examples": c.rule["similar_to"], "threshold": c.rule["threshold"]})
        entry |= {k: c.rule[k] for k in ("all_of", "none_of", "forms") if c.rule.get(k)}
        entry["origin"] = f"propose-lfs round {c.round}"
        lines.append(f"# {c.label}: {_scores(c, result.dev_records, result.pool_records)}")
        lines.append(yaml.safe_dump([entry], sort_keys=False, allow_unicode=True, default_flow_style=None,
                                    width=120).rstrip())
    if not result.kept:
        lines.append("[]  # no proposed rule passed the thresholds; see the report")
    return "\n".join(lines) + "\n"


def render_report(cfg: ProjectConfig, result: ProposeResult, budget: int) -> str:
    spec = cfg.propose_lfs
    lines = [f"# propose-lfs report: {cfg.name}", "",
             f"- kept: **{len(result.kept)}** of {len(result.candidates)} distinct proposed rules, written to "
             f"`{result.output.name}`",
             f"- LLM calls: {result.llm_calls} (budget {budget}); this run: {result.calls_this_run}, the rest from the "
             "store",
             f"- scored on {result.dev_records} gold dev records and {result.pool_records} unlabeled records "
             f"(thresholds: smoothed dev accuracy >= {spec.min_accuracy}, unlabeled coverage >= {spec.min_coverage}, "
             f"conflict <= {spec.max_conflict}, near-duplicate at {spec.duplicate_overlap:.0%} shared matches)",
             f"- stopped: {result.stop_reason}", "", "## Rounds", "",
             "| round | labels asked | LLM calls | new calls | new candidates | kept | dev coverage | dev accuracy |",
             "|---|---|---|---|---|---|---|---|"]
    for r in result.rounds:
        lines.append(f"| {r['round']} | {', '.join(r['labels_asked'])} | {r['calls']} | {r['new_calls']} | "
                     f"{r['candidates']} | {r['kept']} | {r['dev_coverage']:.2f} | {r['dev_accuracy']:.2f} |")
    lines += ["", "## Candidates", "", "| label | rule | round | dev matched | dev right | unlabeled matched | status |",
              "|---|---|---|---|---|---|---|"]
    for c in sorted(result.candidates, key=lambda c: (c.label, c.status != "kept", c.round, c.describe())):
        status = f"kept as `{c.name}`" if c.status == "kept" else c.status
        rule = c.describe().replace("|", "\\|")
        lines.append(f"| {c.label} | `{rule}` | {c.round} | {c.dev_matched} | {c.dev_correct} | {int(c.pool.sum())} | "
                     f"{status.replace('|', chr(92) + '|')} |")
    return "\n".join(lines) + "\n"
