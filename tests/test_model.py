"""The model artifact: manifest, memory-mapped loading, damage detection (the build's determinism:
test_fabfile.py, which rebuilds a damaged model byte for byte in another process)."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from app import model
from app.embeddings import WordModel
from app.model import ModelError


def test_manifest_lists_every_file_with_sha256_and_size(demo_model):
    manifest = json.loads((demo_model / "manifest.json").read_text())
    files = sorted(p.name for p in demo_model.iterdir() if p.name != "manifest.json")
    assert sorted(manifest["files"]) == files
    for name, entry in manifest["files"].items():
        assert entry["sha256"] == model.sha256_file(demo_model / name)
        assert entry["bytes"] == (demo_model / name).stat().st_size
    assert manifest["name"] == "demo"
    assert manifest["dimensions"] == 100
    assert manifest["vocabulary_size"] > 2000
    assert manifest["created_from"]["corpus"][0]["file"].endswith("lee_background.cor")
    assert manifest["clusters"]["k"] in model.K_RANGE


def test_loaded_vectors_and_norms_are_read_only_memmaps(demo_model):
    artifact = model.load(demo_model)
    assert isinstance(artifact.vectors.vectors, np.memmap)
    assert isinstance(artifact.vectors.norms, np.memmap)
    assert artifact.vectors.vectors.mode == "r"
    assert isinstance(artifact.doc_vectors, np.memmap)


def test_queries_never_build_a_normalised_copy_of_all_vectors(demo_model, monkeypatch):
    artifact = model.load(demo_model)
    kv = artifact.vectors

    def forbidden(*args, **kwargs):
        raise AssertionError("get_normed_vectors() copies N x d floats per call")

    monkeypatch.setattr(type(kv), "get_normed_vectors", forbidden)
    words = WordModel(artifact)
    words.warm_up()
    words.similar(["fire", "police"], ["cricket"])
    words.analogy("man", "king", "woman")
    words.similarity([("fire", "blaze")])
    words.text_similarity("fire near sydney", "police in the city")
    words.cluster("Taliban fighters in Afghanistan")
    assert isinstance(kv.vectors, np.memmap) and isinstance(kv.norms, np.memmap)


def test_load_refuses_vectors_that_are_not_memory_mapped(tmp_path, demo_model):
    from gensim.models import KeyedVectors

    broken = tmp_path / "pickled"
    broken.mkdir()
    for name in os.listdir(demo_model):
        (broken / name).write_bytes((demo_model / name).read_bytes())
    kv = KeyedVectors.load(str(demo_model / model.VECTORS))
    for path in broken.glob("vectors.kv*"):
        path.unlink()
    kv.save(str(broken / model.VECTORS), separately=[])  # everything pickled into one file
    manifest = json.loads((broken / "manifest.json").read_text())
    manifest["files"] = {n: {"sha256": model.sha256_file(broken / n), "bytes": (broken / n).stat().st_size}
                         for n in os.listdir(broken) if n != "manifest.json"}
    (broken / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="not memory-mapped"):
        model.load(broken)


def copy_model(src, dst):
    dst.mkdir()
    for name in os.listdir(src):
        (dst / name).write_bytes((src / name).read_bytes())
    return dst


def test_missing_model_says_how_to_build_one(tmp_path):
    with pytest.raises(ModelError, match=r"manifest.json is missing \(build one with: python -m app.model build"):
        model.load(tmp_path / "nothing")


def test_truncated_file_is_reported_with_its_name(tmp_path, demo_model):
    copy = copy_model(demo_model, tmp_path / "copy")
    vectors = copy / "vectors.kv.vectors.npy"
    vectors.write_bytes(vectors.read_bytes()[:-100])
    with pytest.raises(ModelError, match="vectors.kv.vectors.npy has .* bytes, the manifest says"):
        model.load(copy)


def test_verify_demo_rejects_a_model_from_an_older_recipe(tmp_path, demo_model):
    copy = copy_model(demo_model, tmp_path / "copy")
    assert model.main(["verify", "--demo", str(copy)]) == 0
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["created_from"]["recipe"]["recipe"] = model.DEMO_RECIPE - 1
    (copy / "manifest.json").write_text(json.dumps(manifest))
    assert model.main(["verify", str(copy)]) == 0
    assert model.main(["verify", "--demo", str(copy)]) == 1


def test_verify_finds_a_changed_byte(tmp_path, demo_model):
    copy = copy_model(demo_model, tmp_path / "copy")
    data = bytearray((copy / "documents.npy").read_bytes())
    data[-1] ^= 0xFF
    (copy / "documents.npy").write_bytes(bytes(data))
    assert model.main(["verify", str(copy)]) == 1
    assert model.main(["verify", str(demo_model)]) == 0


def test_synthetic_model_has_the_requested_size(tmp_path):
    manifest = model.build(tmp_path / "syn", "syn", None, synthetic=(500, 16))
    assert (manifest["vocabulary_size"], manifest["dimensions"]) == (500, 16)
    artifact = model.load(tmp_path / "syn")
    assert artifact.vectors.vectors.shape == (500, 16)
    assert WordModel(artifact).similar(["word0000001"], topn=3)[0]


@pytest.mark.parametrize("text", ["100000", "0x300", "1x300", "axb", "100000x"])
def test_synthetic_size_must_be_rows_x_dim(text):
    with pytest.raises(SystemExit):
        model.main(["build", "--out", "/nonexistent", "--synthetic", text])
