import hashlib
import sys

import pytest

from labelloop.programs import lm as lm_mod
from labelloop.programs.lm import EmbeddedModel, ModelNotAvailable, embedded_model_path, make_lm


def _fake_model(tmp_path, monkeypatch, chunks: list[bytes], sha: str | None = None):
    site = tmp_path / "site"
    for i, chunk in enumerate(chunks, 1):
        pkg = site / f"fakechunk_part{i}" / "data"
        pkg.mkdir(parents=True)
        (pkg.parent / "__init__.py").write_text("")
        (pkg / "part01.bin").write_bytes(chunk)
    monkeypatch.syspath_prepend(str(site))
    for name in list(sys.modules):
        if name.startswith("fakechunk_part"):
            del sys.modules[name]
    model = EmbeddedModel("fake-model", "fakechunk_part", len(chunks), "0.0.1",
                          sha or hashlib.sha256(b"".join(chunks)).hexdigest(), "model")
    monkeypatch.setitem(lm_mod.EMBEDDED_MODELS, "fake", model)
    return model


def test_chunks_are_assembled_once_and_checked(tmp_path, monkeypatch):
    _fake_model(tmp_path, monkeypatch, [b"GGUF-a", b"-b", b"-c"])
    path = embedded_model_path("fake", cache_dir=tmp_path / "cache")
    assert path.read_bytes() == b"GGUF-a-b-c"
    assert embedded_model_path("fake", cache_dir=tmp_path / "cache") == path


def test_checksum_mismatch_is_refused_and_leaves_nothing(tmp_path, monkeypatch):
    _fake_model(tmp_path, monkeypatch, [b"GGUF", b"x"], sha="0" * 64)
    with pytest.raises(ModelNotAvailable, match="expected 0000"):
        embedded_model_path("fake", cache_dir=tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


def test_missing_chunk_packages_say_what_to_install(tmp_path, monkeypatch):
    model = EmbeddedModel("absent", "no_such_chunk_pkg_", 3, "1.0", "0" * 64, "model")
    monkeypatch.setitem(lm_mod.EMBEDDED_MODELS, "absent", model)
    with pytest.raises(ModelNotAvailable, match=r"3 of 3 chunk packages are missing.*labelloop\[model\]"):
        embedded_model_path("absent", cache_dir=tmp_path)


def test_gguf_path_that_does_not_exist(tmp_path):
    with pytest.raises(ModelNotAvailable, match="does not exist"):
        make_lm(str(tmp_path / "nope.gguf"))


def test_model_strings_become_dspy_lms():
    lm = make_lm("openai/my-model", api_base="http://127.0.0.1:9/v1")
    assert lm.model == "openai/my-model"


def test_thread_picker_leaves_the_cores_other_processes_keep_busy():
    from labelloop.programs.lm import ThreadPicker

    # 2 cores at 100 ticks a second; each reading: (machine busy ticks, all ticks), and this process's CPU seconds
    readings = iter([((0, 0), 0.0),
                     ((200, 200), 2.0),     # 1 s: both cores busy, all of it ours -> 2 threads
                     ((400, 400), 3.0),     # 1 s: both busy, one core ours -> another process holds one
                     ((500, 600), 4.0),     # 1 s: one core busy, ours -> the other core is free again
                     ((1100, 1200), 5.0)])  # 3 s: all busy, ours for 1 s -> others keep 2 cores: still 1 thread
    state = {}

    def read():
        state["now"] = next(readings)
        return state["now"][0]

    picker = ThreadPicker(2, read=read, own=lambda: state["now"][1], ticks=100, cpus=2)
    assert [picker() for _ in range(5)] == [2, 2, 1, 2, 1]


def test_thread_picker_without_proc_stat_uses_every_core():
    from labelloop.programs.lm import ThreadPicker

    picker = ThreadPicker(4, read=lambda: None, own=lambda: 0.0, ticks=100)
    assert picker() == 4 and picker() == 4


@pytest.mark.parametrize("schema", [
    {"type": "object", "properties": {"a": {"enum": ["x"]}, "b": {"enum": ["y"]}}, "required": ["a", "b"]},
    {"type": "object", "properties": {"label": {"type": "string"}}, "required": ["label"]},
    {"type": "object", "properties": {"label": {"type": "string", "enum": ['say "hi"', "no"]}}, "required": ["label"]},
    {"type": "object", "properties": {"label": {"type": "string", "enum": ["", "no"]}}, "required": ["label"]},
    {"type": "object", "properties": {"label": {"type": "string", "enum": ["x", "y"]}}, "required": []},
    {"type": "array", "items": {"enum": ["x", "y"]}},
])
def test_only_a_single_field_with_plain_options_is_a_closed_choice(schema):
    assert lm_mod.closed_choice(schema) is None


def test_closed_choice_reads_the_schema_of_a_closed_signature():
    import pydantic

    from labelloop.programs.signatures import classify_signature

    fields = {"label": (classify_signature(["ham", "spam"], ["", ""]).output_fields["label"].annotation, ...)}
    schema = pydantic.create_model("DSPyProgramOutputs", **fields).model_json_schema()
    assert lm_mod.closed_choice(schema) == ("label", ["ham", "spam"])


def test_an_assembled_model_changed_on_disk_is_checked_again_and_rebuilt(tmp_path, monkeypatch):
    import os

    _fake_model(tmp_path, monkeypatch, [b"GGUF-a", b"-b"])
    path = embedded_model_path("fake", cache_dir=tmp_path / "cache")
    hashed = []
    real = lm_mod.file_sha256
    monkeypatch.setattr(lm_mod, "file_sha256", lambda p: hashed.append(p) or real(p))
    assert embedded_model_path("fake", cache_dir=tmp_path / "cache") == path and hashed == []  # digest remembered
    path.write_bytes(b"EVIL-a-b")
    os.utime(path, ns=(1, 1))
    assert embedded_model_path("fake", cache_dir=tmp_path / "cache").read_bytes() == b"GGUF-a-b"
    assert hashed  # the changed file was hashed, found wrong, and assembled again


def test_a_gguf_file_is_known_by_its_content_not_its_path(tmp_path, monkeypatch):
    import os

    monkeypatch.setenv("LABELLOOP_MODEL_CACHE", str(tmp_path / "cache"))
    model = tmp_path / "m.gguf"
    model.write_bytes(b"weights one")
    first = lm_mod.model_identity(str(model))
    assert first.startswith("m.gguf@") and lm_mod.model_identity(str(model)) == first
    model.write_bytes(b"weights two")  # another file at the same path
    os.utime(model, ns=(2, 2))
    assert lm_mod.model_identity(str(model)) != first
    moved = tmp_path / "elsewhere" / "m.gguf"
    moved.parent.mkdir()
    moved.write_bytes(b"weights one")
    assert lm_mod.model_identity(str(moved)) == first  # the same weights moved: the same model


def test_a_relative_gguf_path_resolves_against_the_config_folder(tmp_path):
    from labelloop.flows.config import parse_config

    cfg = parse_config({"name": "x", "data": "d.jsonl", "taxonomy": [{"name": "a"}, {"name": "b"}],
                        "lm": {"model": "models/m.gguf"}, "labelers": [{"type": "zero_shot"}]}, base_dir=tmp_path)
    assert cfg.lm.model == str(tmp_path / "models" / "m.gguf")
