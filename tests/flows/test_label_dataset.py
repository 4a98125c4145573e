from labelloop.flows.label_dataset import asker
from labelloop.flows.store import VoteStore, stored_or_asked
from labelloop.labelers.labels import Taxonomy
from labelloop.labelers.llm import zero_shot_labeler
from tests.fakes import rule_lm

TAX = Taxonomy(("billing", "shipping"), ("money", "parcels"))


def test_concurrent_answers_are_stored_once(tmp_path):
    store = VoteStore(tmp_path / "votes.sqlite")
    lm = rule_lm()
    labeler = zero_shot_labeler(TAX)
    items = [(f"r{i}", f"my parcel number {i}" if i % 2 else f"refund number {i}") for i in range(40)]
    ask = asker(labeler.program(), lambda: lm)
    got = stored_or_asked(store, "v1", items, ask, name=labeler.name, max_concurrency=4, show_progress=False)
    answers = got.answers
    assert (got.calls, got.failed) == (40, {})
    assert [answers[f"r{i}"]["answer"] for i in range(4)] == ["billing", "shipping", "billing", "shipping"]
    again = stored_or_asked(store, "v1", items, ask, name=labeler.name, max_concurrency=4, show_progress=False)
    assert again.calls == 0 and again.answers == answers and lm.engine.calls == 40
    # a changed text is a new question; an unchanged one is not
    items[0] = ("r0", "my parcel is lost")
    changed = stored_or_asked(store, "v1", items, ask, name=labeler.name, show_progress=False)
    assert changed.calls == 1 and changed.answers["r0"]["answer"] == "shipping"
    assert store.count() == 41


def test_answers_move_to_a_new_version_without_loss(tmp_path):
    with VoteStore(tmp_path / "votes.sqlite") as store:
        store.put_many("old", [("r1", "a", {"answer": "x"}), ("r2", "b", {"answer": "y"})])
        store.put_many("new", [("r2", "b", {"answer": "kept"})])
        assert store.move("old", "new") == 1  # r2 already has an answer under the new version: it stays
        assert store.get_many("new", [("r1", "a"), ("r2", "b")]) == {"r1": {"answer": "x"}, "r2": {"answer": "kept"}}
        assert store.get_many("old", [("r1", "a")]) == {} and store.count() == 2
