"""Count what a run will cost before making any LLM call."""

from __future__ import annotations

from flows.label_dataset import content_free_items, labeler_version
from flows.project import Project
from flows.store import VoteStore
from labelers.irr import IRRLabeler
from labelers.llm import build_program
from programs.choice import CompactJSONAdapter
from programs.irr import InferLabels, RankLabels, chunk_text
from programs.lm import is_local


def _prompt_chars(program, text: str) -> int:
    """Characters of the exact messages the JSON adapter would send for this text."""
    predict = program.predict
    inputs = {**program.fixed_inputs, "text": text}
    messages = CompactJSONAdapter().format(predict.signature, demos=[], inputs=inputs)
    return sum(len(m["content"]) for m in messages)


def _irr_prompts(labeler: IRRLabeler, names: list[str], text: str) -> tuple[int, int]:
    """(LLM calls, prompt characters) of Infer-Retrieve-Rank on one text: Infer per chunk, one Rank
    (its candidates approximated by the first ``rank_n`` labels)."""
    adapter, chunks = CompactJSONAdapter(), chunk_text(text, labeler.chunk_words)
    chars = sum(len(m["content"]) for c in chunks for m in adapter.format(InferLabels, demos=[], inputs={"text": c}))
    rank = adapter.format(RankLabels, demos=[], inputs={"text": chunks[0], "options": names[: labeler.rank_n]})
    return len(chunks) + 1, chars + sum(len(m["content"]) for m in rank)


ANSWER_TOKENS = 8  # a closed-choice JSON answer such as {"answer": "yes"}


def _price(model: str) -> tuple[float, float] | None:
    """(input, output) USD per token from LiteLLM's bundled cost map, or None for local or unknown models."""
    if is_local(model):
        return None
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
    """Per LLM labeler: answers already stored, LLM calls still needed, and estimated prompt tokens.

    Tokens are estimated at 4 characters each over the exact prompts; with the embedded model the
    shared prefix is cached, so the tokens actually processed are fewer.
    """
    store = VoteStore(project.config.store)
    rows = []
    try:
        for labeler in project.llm_labelers:
            items = content_free_items(labeler) + [
                it for df in project.splits.values() for it in zip(df["id"], df["text"])]
            stored = store.get_many(labeler_version(project, labeler), items)
            todo = [text for rid, text in items if rid not in stored]
            if isinstance(labeler, IRRLabeler):
                per_text = [_irr_prompts(labeler, list(project.taxonomy.names), text) for text in todo]
                calls, chars = sum(c for c, _ in per_text), sum(n for _, n in per_text)
            else:
                program = build_program(labeler)
                calls, chars = len(todo), sum(_prompt_chars(program, text) for text in todo)
            rows.append({"labeler": labeler.name, "records": len(items), "stored": len(stored),
                         "llm_calls": calls, "prompt_tokens": chars // 4})
    finally:
        store.close()
    return rows
