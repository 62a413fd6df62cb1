"""Model artifacts: build the demo model, write its manifest, load it memory-mapped.

An artifact is a directory:

    manifest.json            name, version, sizes and sha256 of every file, how it was made
    vectors.kv               gensim KeyedVectors (vocabulary; pickled)
    vectors.kv.vectors.npy   the N x d vectors, stored separately so they memory-map
    vectors.kv.norms.npy     their L2 norms, precomputed so no worker computes its own
    centroids.npy            k-means centroids (k x d, unit length)
    documents.npy            corpus document vectors (n x d, unit length)
    documents.json           title, snippet and cluster of every corpus document

Build it with ``python -m app.model build --out DIR`` (``--synthetic 100000x300`` for a random
model of that size), check it with ``python -m app.model verify DIR``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MANIFEST = "manifest.json"
VECTORS = "vectors.kv"
CENTROIDS = "centroids.npy"
DOC_VECTORS = "documents.npy"
DOCUMENTS = "documents.json"
FORMAT = 1

# The demo corpora ship inside gensim's wheel. Lee's news corpus gives the documents and the
# vocabulary. head500.noblanks.cor (Wikipedia, Porter-stemmed: "philosophi", "anarch") adds
# training context only: its stems are dropped from the served vocabulary, since no user types
# them. Measured on wordsim353 over the same pairs: Spearman 0.229 with Lee alone, 0.266 with both.
DEMO_CORPUS = "lee_background.cor"
CONTEXT_CORPUS = "head500.noblanks.cor"
SEED = 42
# Bump when the demo's training changes in a way its parameters do not show, so that
# `verify --demo` (and so `fab build-model`) rebuilds models made by the old code.
DEMO_RECIPE = 2
WORD2VEC_PARAMS = {"vector_size": 100, "window": 5, "min_count": 3, "sg": 0, "epochs": 40}
K_RANGE = range(4, 13)  # candidate cluster counts; the best silhouette wins
SYNTHETIC_DOCUMENTS = 300


class ModelError(Exception):
    """A model artifact is missing, damaged or not usable; the message says how to fix it."""


@dataclass(frozen=True)
class Artifact:
    """A loaded model: vocabulary and vectors (memory-mapped), clusters and corpus documents."""

    path: Path
    manifest: dict
    vectors: object  # gensim KeyedVectors
    centroids: np.ndarray
    doc_vectors: np.ndarray
    documents: list


def corpus_tokens(text: str) -> list[str]:
    """Split corpus text into lowercase alphabetic tokens of 2..15 letters (gensim's simple_preprocess)."""
    from gensim.utils import simple_preprocess

    return simple_preprocess(text)


def stable_hash(text: str) -> int:
    """Word2Vec seeds each word's initial vector from hash(word); Python's hash() is salted
    per process, so training would differ between runs. crc32 is the same everywhere."""
    return zlib.crc32(text.encode("utf-8"))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --- building -------------------------------------------------------------------------------


def unit_rows(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return (matrix / np.where(norms == 0, 1, norms)).astype(np.float32)


def kmeans(points: np.ndarray, k: int, seed: int, iterations: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd's k-means with k-means++ seeding; deterministic for a given seed."""
    rng = np.random.default_rng(seed)
    centroids = [points[rng.integers(len(points))]]
    for _ in range(1, k):
        d2 = np.min([((points - c) ** 2).sum(axis=1) for c in centroids], axis=0)
        # All points already coincide with a centroid: any pick is as good as another.
        p = d2 / d2.sum() if d2.sum() > 0 else None
        centroids.append(points[rng.choice(len(points), p=p)])
    centroids = np.array(centroids)
    labels = np.full(len(points), -1)
    for _ in range(iterations):
        distances = ((points[:, None, :] - centroids[None, :, :]) ** 2).sum(axis=2)
        new_labels = distances.argmin(axis=1)
        if np.array_equal(new_labels, labels):
            break
        labels = new_labels
        for j in range(k):
            members = points[labels == j]
            if len(members):
                centroids[j] = members.mean(axis=0)
    return unit_rows(centroids), labels


def silhouette(points: np.ndarray, labels: np.ndarray) -> float:
    """Mean silhouette coefficient with cosine distance (points are unit vectors)."""
    distance = 1.0 - points @ points.T
    if len(set(labels.tolist())) < 2:
        return 0.0
    scores = []
    for i, label in enumerate(labels):
        same = labels == label
        if same.sum() <= 1:
            scores.append(0.0)
            continue
        a = distance[i, same].sum() / (same.sum() - 1)
        b = min(distance[i, labels == other].mean() for other in set(labels.tolist()) - {label})
        scores.append((b - a) / max(a, b))
    return float(np.mean(scores))


def choose_clusters(doc_vectors: np.ndarray, seed: int) -> tuple[int, float, np.ndarray, np.ndarray]:
    """Try each k in K_RANGE and keep the one with the best silhouette."""
    best = None
    for k in K_RANGE:
        if k >= len(doc_vectors):
            break
        centroids, labels = kmeans(doc_vectors, k, seed)
        score = silhouette(doc_vectors, labels)
        if best is None or score > best[1]:
            best = (k, score, centroids, labels)
    return best


def document_vectors(kv, token_lists: list[list[str]]) -> np.ndarray:
    """Mean of each document's unit word vectors, normalised to unit length."""
    rows = []
    for tokens in token_lists:
        known = [kv.get_vector(t, norm=True) for t in tokens if t in kv.key_to_index]
        rows.append(np.mean(known, axis=0) if known else np.zeros(kv.vector_size, dtype=np.float32))
    return unit_rows(np.array(rows))


def describe_document(text: str) -> dict:
    words = text.split()
    title = " ".join(words[:8]) + (" …" if len(words) > 8 else "")
    snippet = " ".join(words[:40]) + (" …" if len(words) > 40 else "")
    return {"title": title, "snippet": snippet}


def read_corpus(name: str) -> tuple[Path, list[str]]:
    from gensim.test.utils import datapath

    path = Path(datapath(name))
    return path, [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def demo_recipe(seed: int = SEED) -> dict:
    """Everything that decides the demo model's bytes besides the corpora (whose sha256 are recorded)."""
    import gensim

    return {"recipe": DEMO_RECIPE, "format": FORMAT, "gensim": gensim.__version__, "params": WORD2VEC_PARAMS,
            "seed": seed, "corpora": [DEMO_CORPUS, CONTEXT_CORPUS]}


def train_demo(seed: int):
    """Train Word2Vec on the corpora in gensim's wheel; returns (KeyedVectors, texts, tokens, provenance)."""
    from gensim.models import KeyedVectors, Word2Vec

    corpus, texts = read_corpus(DEMO_CORPUS)
    context, context_texts = read_corpus(CONTEXT_CORPUS)
    sentences = [corpus_tokens(t) for t in texts]
    context_sentences = [corpus_tokens(t) for t in context_texts]
    # One worker thread and a stable hash: the same corpora give byte-identical vectors.
    model = Word2Vec(sentences + context_sentences, workers=1, seed=seed, hashfxn=stable_hash, **WORD2VEC_PARAMS)
    counts = Counter(token for tokens in sentences for token in tokens)
    served = [w for w in model.wv.index_to_key if counts[w] >= WORD2VEC_PARAMS["min_count"]]
    kv = KeyedVectors(model.wv.vector_size, dtype=np.float32)
    kv.add_vectors(served, model.wv[served])
    provenance = {
        "kind": "word2vec",
        "recipe": demo_recipe(seed),
        "corpus": [{"file": f"gensim/test/test_data/{path.name}", "sha256": sha256_file(path),
                    "documents": len(token_lists), "tokens": sum(map(len, token_lists)), "role": role}
                   for path, token_lists, role in ((corpus, sentences, "documents and vocabulary"),
                                                   (context, context_sentences, "training context"))],
    }
    return kv, texts, sentences, provenance


def make_synthetic(rows: int, dim: int, seed: int):
    """Random vectors of the given size, for benchmarks; documents are random word lists."""
    from gensim.models import KeyedVectors

    rng = np.random.default_rng(seed)
    keys = [f"word{i:07d}" for i in range(rows)]
    vectors = np.empty((rows, dim), dtype=np.float32)
    for start in range(0, rows, 50_000):  # in chunks: no N x d float64 temporary
        stop = min(rows, start + 50_000)
        vectors[start:stop] = rng.standard_normal((stop - start, dim), dtype=np.float32)
    kv = KeyedVectors(dim, dtype=np.float32)
    kv.add_vectors(keys, vectors)
    token_lists = [[keys[i] for i in rng.integers(0, rows, 30)] for _ in range(SYNTHETIC_DOCUMENTS)]
    provenance = {"kind": "synthetic", "rows": rows, "dimensions": dim, "seed": seed}
    return kv, [" ".join(tokens) for tokens in token_lists], token_lists, provenance


def build(out: Path, name: str, version: str | None, synthetic: tuple[int, int] | None = None,
          seed: int = SEED) -> dict:
    """Build an artifact into `out` (created if missing; existing artifact files are replaced)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if synthetic:
        kv, texts, token_lists, provenance = make_synthetic(*synthetic, seed=seed)
    else:
        kv, texts, token_lists, provenance = train_demo(seed)

    kv.fill_norms(force=True)
    kv.lifecycle_events = None  # gensim would record the path and a timestamp in the pickle
    kv.save(str(out / VECTORS), separately=["vectors", "norms"])

    doc_vectors = document_vectors(kv, token_lists)
    k, score, centroids, labels = choose_clusters(doc_vectors, seed)
    np.save(out / CENTROIDS, centroids)
    np.save(out / DOC_VECTORS, doc_vectors)
    documents = [{**describe_document(t), "cluster": int(label)} for t, label in zip(texts, labels)]
    (out / DOCUMENTS).write_text(json.dumps(documents, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")

    files = {}
    for path in sorted(out.iterdir()):
        if path.name != MANIFEST and path.is_file():
            files[path.name] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    content_digest = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()
    manifest = {
        "format": FORMAT,
        "name": name,
        "version": version or content_digest[:12],
        "sha256": content_digest,
        "vocabulary_size": len(kv.index_to_key),
        "dimensions": int(kv.vector_size),
        "clusters": {"k": k, "silhouette": round(score, 4), "documents": len(texts)},
        "created_from": provenance,
        "files": files,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return manifest


# --- loading --------------------------------------------------------------------------------


def read_manifest(path: Path) -> dict:
    manifest_path = Path(path) / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"no model at {path}: {MANIFEST} is missing "
                         f"(build one with: python -m app.model build --out {path})") from None
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read {manifest_path}: {exc}") from None
    if manifest.get("format") != FORMAT:
        raise ModelError(f"{manifest_path} has format {manifest.get('format')!r}; this app reads format "
                         f"{FORMAT}: rebuild the model with this version of app.model")
    return manifest


def check_files(path: Path, manifest: dict, hashes: bool) -> None:
    """Every file in the manifest is present with its size (and, if asked, its sha256)."""
    for name, expected in manifest["files"].items():
        file = Path(path) / name
        if not file.is_file():
            raise ModelError(f"model at {path} is incomplete: {name} is missing")
        if file.stat().st_size != expected["bytes"]:
            raise ModelError(f"model at {path} is damaged: {name} has {file.stat().st_size} bytes, "
                             f"the manifest says {expected['bytes']} (copy it again)")
        if hashes and sha256_file(file) != expected["sha256"]:
            raise ModelError(f"model at {path} is damaged: {name} does not match its sha256 (copy it again)")


def load(path: str | Path) -> Artifact:
    """Load an artifact with its vectors memory-mapped read-only (pages shared between processes)."""
    from gensim.models import KeyedVectors

    path = Path(path)
    manifest = read_manifest(path)
    check_files(path, manifest, hashes=False)
    try:
        kv = KeyedVectors.load(str(path / VECTORS), mmap="r")
        centroids = np.load(path / CENTROIDS, mmap_mode="r")
        doc_vectors = np.load(path / DOC_VECTORS, mmap_mode="r")
        documents = json.loads((path / DOCUMENTS).read_text(encoding="utf-8"))
    except (OSError, ValueError, EOFError) as exc:
        raise ModelError(f"cannot load model at {path}: {exc}") from None
    # gensim pickles arrays it did not store separately, and mmap='r' then silently loads a
    # private copy into every process: refuse that instead of using N x d bytes per worker.
    for name, array in (("vectors", kv.vectors), ("norms", kv.norms)):
        if not isinstance(array, np.memmap):
            raise ModelError(f"model at {path}: {name} are not memory-mapped (save the KeyedVectors "
                             f"with separately=['vectors', 'norms'], as app.model build does)")
    return Artifact(path, manifest, kv, centroids, doc_vectors, documents)


# --- command line ---------------------------------------------------------------------------


def parse_size(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not match or int(match[1]) < 2 or int(match[2]) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not ROWSxDIM with ROWS >= 2, DIM >= 1 (e.g. 100000x300)")
    return int(match[1]), int(match[2])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.model", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    build_cmd = commands.add_parser("build", help="build a model artifact into a directory")
    build_cmd.add_argument("--out", required=True, type=Path, help="directory to write the artifact to")
    build_cmd.add_argument("--synthetic", type=parse_size, metavar="ROWSxDIM",
                           help="write a random model of this size (for benchmarks) instead of training")
    build_cmd.add_argument("--name", help="model name (default: demo, or synthetic-ROWSxDIM)")
    build_cmd.add_argument("--version", help="model version (default: first 12 hex digits of its sha256)")
    build_cmd.add_argument("--seed", type=int, default=SEED, help=f"random seed (default {SEED})")
    verify_cmd = commands.add_parser("verify", help="check an artifact's files against its manifest")
    verify_cmd.add_argument("path", type=Path)
    verify_cmd.add_argument("--demo", action="store_true",
                            help="also check that it is the demo model this code builds (not an older recipe)")
    args = parser.parse_args(argv)

    if args.command == "build":
        name = args.name or (f"synthetic-{args.synthetic[0]}x{args.synthetic[1]}" if args.synthetic else "demo")
        manifest = build(args.out, name, args.version, args.synthetic, args.seed)
        print(f"built {manifest['name']} {manifest['version']} in {args.out}: "
              f"{manifest['vocabulary_size']} words x {manifest['dimensions']} dimensions, "
              f"{manifest['clusters']['k']} clusters")
        return 0
    try:
        manifest = read_manifest(args.path)
        check_files(args.path, manifest, hashes=True)
        load(args.path)
        if args.demo and manifest["created_from"].get("recipe") != demo_recipe():
            raise ModelError(f"model at {args.path} was not built by this version's demo recipe: rebuild it")
    except ModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"ok: {manifest['name']} {manifest['version']} ({len(manifest['files'])} files match the manifest)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
