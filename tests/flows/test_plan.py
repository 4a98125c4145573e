import pytest

from labelloop.flows.plan import estimate_cost, plan_calls
from labelloop.flows.project import load_project


def test_cost_uses_bundled_price_list():
    cost = estimate_cost("openai/gpt-4o-mini", calls=100, prompt_tokens=100_000)
    assert cost == pytest.approx(100_000 * 1.5e-07 + 100 * 8 * 6e-07)
    assert estimate_cost("local", 100, 100_000) is None
    assert estimate_cost("openai/no-such-model-xyz", 100, 100_000) is None


def test_plan_counts_every_record_of_every_split_per_llm_labeler(example_project):
    rows = plan_calls(load_project(example_project))
    assert [r["labeler"] for r in rows] == ["zero_shot", "asks_about_money"]
    assert all(r["llm_calls"] == r["records"] == 280 and r["stored"] == 0 for r in rows)
    assert all(r["prompt_tokens"] > 280 * 20 for r in rows)


def test_content_free_calibration_adds_three_calls(example_project):
    import yaml

    raw = yaml.safe_load(example_project.read_text())
    raw["labelers"][0]["calibration"] = "content_free"
    example_project.write_text(yaml.safe_dump(raw))
    rows = plan_calls(load_project(example_project))
    assert [r["llm_calls"] for r in rows] == [283, 280]
