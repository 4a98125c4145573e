"""The `similar` labeler: votes its label where a record's MiniLM sentence embedding is close to an example text."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import yaml

from labelloop.flows.config import ConfigError, load_config
from labelloop.flows.label_dataset import apply_heuristics
from labelloop.flows.project import load_project
from labelloop.labelers import heuristics
from labelloop.labelers.base import LABELER_TYPES
from labelloop.labelers.heuristics import SimilarityLF, SimilarLF, make_keyword_lf, max_similarity
from labelloop.labelers.labels import ABSTAIN
from labelloop.programs import embeddings
from tests.conftest import heuristic_config

MONEY = ["I want my money back for this order", "Please refund the payment"]
PARCEL = ["My parcel has not been delivered yet", "Where is my package?"]
# similarities to MONEY (MiniLM): the paraphrase about 0.64, the unrelated question about 0.02
PARAPHRASE, UNRELATED = "Can I get a refund for what I paid?", "What are your opening hours?"
SIMILAR = {"type": "similar", "name": "sim_money", "label": "billing", "examples": MONEY, "threshold": 0.45}


def _records():
    return pd.DataFrame({"id": ["a", "b"], "text": ["refund please", "where is my parcel"]})


def _project(*labelers, **kwargs):
    return load_project({**heuristic_config(), "labelers": list(labelers)}, data=_records(), **kwargs)


def test_a_similar_spec_votes_on_a_paraphrase_and_abstains_on_an_unrelated_text(tmp_path):
    assert LABELER_TYPES["similar"] is SimilarLF
    (lf,) = _project(SIMILAR, base_dir=tmp_path).heuristic_lfs
    assert isinstance(lf, SimilarityLF) and lf.label == 0 and lf.examples == tuple(MONEY)  # billing is label 0
    sims = max_similarity(embeddings.embed([PARAPHRASE, UNRELATED, MONEY[1]]), MONEY)
    assert sims.shape == (3,) and sims[0] > 0.55 and sims[1] < 0.2 and sims[2] == pytest.approx(1.0, abs=1e-5)
    assert lf(SimpleNamespace(text=PARAPHRASE)) == 0
    assert lf(SimpleNamespace(text=UNRELATED)) == ABSTAIN
    # an example itself reaches even the highest threshold, despite float32 rounding
    exact = SimilarityLF("exact", 2, tuple(MONEY), 1.0)
    assert exact(SimpleNamespace(text=MONEY[0])) == 2 and exact(SimpleNamespace(text=PARAPHRASE)) == ABSTAIN


def test_max_similarity_handles_no_records_and_refuses_no_examples():
    assert max_similarity(embeddings.embed([]), MONEY).shape == (0,)
    with pytest.raises(ValueError, match="at least one example"):
        max_similarity(embeddings.embed(["x"]), [])


@pytest.fixture
def counted_embed(monkeypatch):
    """Every call of ``labelloop.programs.embeddings.embed``, as the list of texts it was given."""
    calls, real = [], embeddings.embed

    def counting(texts, *args, **kwargs):
        calls.append(list(texts))
        return real(texts, *args, **kwargs)

    monkeypatch.setattr(embeddings, "embed", counting)
    heuristics._example_embeddings.cache_clear()  # so the examples' embedding is seen once too
    yield calls
    heuristics._example_embeddings.cache_clear()


def test_apply_heuristics_keeps_the_order_and_embeds_every_record_once(counted_embed):
    money = SimilarityLF("sim_money", 0, tuple(MONEY), 0.45)
    parcel = SimilarityLF("sim_parcel", 1, tuple(PARCEL), 0.45)
    keyword = make_keyword_lf("kw_hours", ["hours"], 2)
    lfs = [money, keyword, parcel]
    texts = [PARAPHRASE, UNRELATED, "The package still hasn't arrived", "refund my parcel", "hello"]
    votes = apply_heuristics(lfs, texts)
    assert counted_embed.count(texts) == 1  # the records: once for both similar labelers
    assert sorted(map(tuple, counted_embed)) == sorted([tuple(texts), tuple(MONEY), tuple(PARCEL)])
    per_record = [[lf(SimpleNamespace(text=t)) for lf in lfs] for t in texts]
    assert votes.shape == (5, 3) and votes.tolist() == per_record
    assert votes[:, 0].tolist()[:2] == [0, ABSTAIN] and votes[:, 1].tolist()[:2] == [ABSTAIN, 2]
    assert votes[2].tolist() == [ABSTAIN, ABSTAIN, 1]  # each labeler votes its own column
    counted_embed.clear()
    assert apply_heuristics(lfs, texts).tolist() == per_record
    assert counted_embed == [texts]  # the examples' embeddings are cached
    counted_embed.clear()
    assert apply_heuristics(lfs, []).shape == (0, 3) and counted_embed == []
    assert apply_heuristics([keyword], texts)[:, 0].tolist() == [ABSTAIN, 2, ABSTAIN, ABSTAIN, ABSTAIN]
    assert counted_embed == []  # no similar labeler: nothing is embedded


@pytest.mark.parametrize("change, message", [
    ({"examples": []}, r"labelers\.0\.examples: List should have at least 1 item"),
    ({"examples": ["refund", "  "]}, r"labelers\.0\.examples: Value error, example 1 is blank"),
    ({"examples": ["x" * 1001]}, r"example 0 has 1,001 characters; at most 1,000"),
    ({"examples": ["x"] * 51}, r"labelers\.0\.examples: List should have at most 50 items"),
    ({"threshold": 0}, r"labelers\.0\.threshold: Input should be greater than 0"),
    ({"threshold": 1.5}, r"labelers\.0\.threshold: Input should be less than or equal to 1"),
    ({"threshold": None}, r"labelers\.0\.threshold"),
    ({"examples": ["refund\x00"]}, r"labelers\.0\.examples\.0: holds a NUL character"),
    ({"label": "money"}, r"labeler 'sim_money': label 'money' is not in the taxonomy"),
])
def test_bad_similar_labelers_are_refused_with_the_reason(tmp_path, change, message):
    with pytest.raises(ConfigError, match=message):
        _project({**SIMILAR, **change}, base_dir=tmp_path)


def test_a_similar_spec_refuses_a_bad_threshold_on_its_own():
    from pydantic import ValidationError

    assert SimilarLF.model_validate(SIMILAR).threshold == 0.45
    with pytest.raises(ValidationError, match="threshold"):
        SimilarLF.model_validate({**SIMILAR, "threshold": float("nan")})


def test_an_included_file_may_hold_similar_labelers(example_project):
    folder = example_project.parent
    entry = {**SIMILAR, "origin": "propose-lfs round 1"}
    (folder / "generated_lfs.yaml").write_text(yaml.safe_dump([entry, {"type": "keywords", "name": "kw_x",
                                                                        "label": "shipping", "words": ["parcel"]}]))
    raw = yaml.safe_load(example_project.read_text())
    raw.update(labelers=[{"include": "generated_lfs.yaml"}], label_model="majority")
    example_project.write_text(yaml.safe_dump(raw))
    cfg = load_config(example_project)
    assert [(s.type, s.name, s.origin) for s in cfg.labelers] == [("similar", "sim_money", "propose-lfs round 1"),
                                                                  ("keywords", "kw_x", None)]
    project = load_project(example_project)
    assert [type(lf).__name__ for lf in project.heuristic_lfs] == ["SimilarityLF", "LabelingFunction"]
    # a run's LF summary names where the similar labeler came from, and it voted on some records
    from labelloop.flows.run_project import run_project

    run_dir = run_project(project, train=False, show_progress=False)
    summary = pd.read_csv(run_dir / "lf_summary.csv").set_index("labeler")
    assert summary.loc["sim_money", "origin"] == "propose-lfs round 1"
    assert 0 < summary.loc["sim_money", "coverage"] < 1
    # a bad similar entry in an included file is refused, naming the file and the entry
    (folder / "generated_lfs.yaml").write_text(yaml.safe_dump([{**SIMILAR, "examples": [" "]}]))
    with pytest.raises(ConfigError, match=r"generated_lfs\.yaml: entry 0 \('sim_money'\) is not a valid labeler"):
        load_config(example_project)
    (folder / "generated_lfs.yaml").write_text(yaml.safe_dump([{"type": "python", "module": "lfs.py"}]))
    with pytest.raises(ConfigError, match="only keywords, regex and similar labelers"):
        load_config(example_project)


def test_similar_votes_are_numpy_ints_of_the_label():
    lf = SimilarityLF("sim_money", 3, tuple(MONEY), 0.45)
    votes = lf.vote_embedded(embeddings.embed([PARAPHRASE, UNRELATED]))
    assert votes.dtype.kind == "i" and votes.tolist() == [3, ABSTAIN]
    assert np.array_equal(lf.vote_embedded(np.zeros((0, 384), dtype=np.float32)), np.zeros(0, dtype=int))
