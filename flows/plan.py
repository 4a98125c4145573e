"""Count what a run will cost before making any LLM call."""

from __future__ import annotations

import math

from labelloop.flows.project import Project
from labelloop.flows.store import VoteStore
from labelloop.programs.lm import is_local, use_bundled_cost_map

ANSWER_TOKENS = 8  # a closed-choice JSON answer such as {"answer": "yes"}


def _price(model: str) -> tuple[float, float] | None:
    """(input, output) USD per token from LiteLLM's bundled cost map, or None for local or unknown models."""
    if is_local(model):
        return None
    use_bundled_cost_map()
    import litellm

    for key in (model, model.split("/", 1)[-1]):
        info = litellm.model_cost.get(key)
        if info and info.get("input_cost_per_token") is not None:
            return info["input_cost_per_token"], info.get("output_cost_per_token") or 0.0
    return None


def estimate_cost(model: str, calls: int, prompt_tokens: int) -> float | None:
    """Estimated USD for a hosted model; None when it runs locally (free) or its price is unknown."""
    price = _price(model)
    return None if price is None else prompt_tokens * price[0] + calls * ANSWER_TOKENS * price[1]


def plan_calls(project: Project) -> list[dict]:
    """Per LLM labeler: answers already stored, records given up on, LLM calls still needed, estimated prompt tokens.

    A record whose asks failed ``max_attempts`` times is not asked again (``failed``; it abstains).
    Tokens are estimated at 4 characters each over the exact prompts; with the embedded model the
    shared prefix is cached, so the tokens actually processed are fewer.

    With an ``llm_budget`` each row also says what of that is on the train split, where the budget
    decides how much is asked: ``train_missing`` answers (``train_calls`` calls, ``train_tokens``);
    ``plan_budget`` gives the most a run asks.
    """
    from labelloop.flows.label_dataset import labeler_items, unbudgeted_items

    ctx, rows, limit = project.context(), [], project.config.max_attempts
    budget = project.config.llm_budget is not None
    train = list(zip(project.splits["train"]["id"], project.splits["train"]["text"]))
    with VoteStore(project.config.store) as store:
        for labeler in project.llm_labelers:
            items, version = labeler_items(project, labeler), labeler.version(ctx)
            stored = store.get_many(version, items)
            missing = [(rid, text) for rid, text in items if rid not in stored]
            failures = store.failures(version, missing)
            gave_up = {rid for rid, (n, _) in failures.items() if n >= limit}
            asked = list(dict.fromkeys(text for rid, text in missing if rid not in gave_up))
            calls, chars = labeler.prompt_cost(asked, ctx)
            row = {"labeler": labeler.name, "records": len(items), "stored": len(stored), "failed": len(gave_up),
                   "retrying": len(failures) - len(gave_up), "llm_calls": calls, "prompt_tokens": chars // 4}
            if budget:  # the train split's share: texts a gold split or extra item asks anyway cost nothing there
                always = {text for _, text in unbudgeted_items(project, labeler)}
                todo = [(rid, text) for rid, text in train if rid not in stored and rid not in gave_up and text not in always]
                train_calls, train_chars = labeler.prompt_cost(list(dict.fromkeys(text for _, text in todo)), ctx)
                row |= {"train_missing": len(todo), "train_calls": train_calls, "train_tokens": train_chars // 4}
            rows.append(row)
    return rows


def plan_budget(project: Project, rows: list[dict] | None = None) -> dict | None:
    """With an ``llm_budget``: the budget and the most a run asks; None without one.

    ``train_answers_at_most`` is min(budget, train answers missing): stored answers are free. The
    gold splits and extra items (``gold_calls``) are asked in full whatever the budget. A closed-choice
    answer is one call; ``llm_calls_at_most`` counts an Infer-Retrieve-Rank answer at its labeler's
    mean calls per missing answer.
    """
    spec = project.config.llm_budget
    if spec is None:
        return None
    rows = plan_calls(project) if rows is None else rows
    pairs = len(project.splits["train"]) * len(project.llm_labelers)
    limit, missing = spec.limit(pairs), sum(r["train_missing"] for r in rows)
    gold = sum(r["llm_calls"] - r["train_calls"] for r in rows)
    at_most = min(limit, missing)
    train_calls = sum(r["train_calls"] for r in rows)
    train_tokens = sum(r["train_tokens"] for r in rows)
    if missing > limit:  # the budget asks part of what is missing
        train_calls = min(train_calls, math.ceil(train_calls * at_most / missing))
        train_tokens = math.ceil(train_tokens * at_most / missing)
    gold_tokens = sum(r["prompt_tokens"] - r["train_tokens"] for r in rows)
    return {"max_answers": limit, "fraction": spec.fraction, "max_calls": spec.max_calls, "rounds": spec.rounds,
            "random_share": spec.random_share, "train_pairs": pairs, "train_missing": missing,
            "train_answers_at_most": at_most, "gold_calls": gold, "llm_calls_at_most": gold + train_calls,
            "prompt_tokens_at_most": gold_tokens + train_tokens}
