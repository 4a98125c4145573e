"""Count what a run will cost before making any LLM call."""

from __future__ import annotations

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
    """
    from labelloop.flows.label_dataset import labeler_items

    ctx, rows, limit = project.context(), [], project.config.max_attempts
    with VoteStore(project.config.store) as store:
        for labeler in project.llm_labelers:
            items, version = labeler_items(project, labeler), labeler.version(ctx)
            stored = store.get_many(version, items)
            missing = [(rid, text) for rid, text in items if rid not in stored]
            failures = store.failures(version, missing)
            gave_up = {rid for rid, (n, _) in failures.items() if n >= limit}
            calls, chars = labeler.prompt_cost(list(dict.fromkeys(text for rid, text in missing if rid not in gave_up)), ctx)
            rows.append({"labeler": labeler.name, "records": len(items), "stored": len(stored), "failed": len(gave_up),
                         "retrying": len(failures) - len(gave_up), "llm_calls": calls, "prompt_tokens": chars // 4})
    return rows
