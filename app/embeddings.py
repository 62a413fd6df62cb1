"""Queries over a loaded model: similar words, similarity, analogies, clusters.

Everything reads the memory-mapped vectors in place. Nothing here may build an N x d array
(``KeyedVectors.get_normed_vectors()`` does, on every call): that would cost every worker a
private copy of the model. Per query we allocate at most one score per word (N floats).
"""
from __future__ import annotations

import re

import numpy as np

from app.model import Artifact


TOKEN = re.compile(r"[^\W_]+")


class UnknownWords(Exception):
    """Words that are not in the vocabulary (answered with 404)."""

    def __init__(self, words: list[str]):
        self.words = words
        super().__init__(f"not in the vocabulary: {', '.join(words)}")


class NoKnownWords(Exception):
    """A text has no word in the vocabulary, so it has no vector (answered with 404, like an unknown word)."""

    def __init__(self, field: str, oov: list[str]):
        self.field = field
        self.oov = oov
        unknown = f" (unknown: {', '.join(oov[:10])})" if oov else ""
        super().__init__(f"{field} has no word in the vocabulary{unknown}")


def tokenize(text: str) -> list[str]:
    """Query text to lowercase tokens: runs of letters and digits. Broader than the demo's training
    tokenizer (letters only), so models whose words carry digits can be queried too; the
    vocabulary decides which tokens are known."""
    return TOKEN.findall(text.lower())


def normalize_word(word: str) -> str:
    """The vocabulary is lowercase; queries are matched the same way."""
    return word.strip().lower()


def unique(items):
    return list(dict.fromkeys(items))


class WordModel:
    """The query API over one loaded artifact."""

    def __init__(self, artifact: Artifact):
        self.artifact = artifact
        self.kv = artifact.vectors
        manifest = artifact.manifest
        self.info = {
            "name": manifest["name"],
            "version": manifest["version"],
            "sha256": manifest["sha256"],
            "vocabulary_size": manifest["vocabulary_size"],
            "dimensions": manifest["dimensions"],
            "clusters": manifest["clusters"]["k"],
        }

    def __contains__(self, word: str) -> bool:
        return word in self.kv.key_to_index

    def split_known(self, words: list[str]) -> tuple[list[str], list[str]]:
        words = unique(normalize_word(w) for w in words)
        return [w for w in words if w in self], [w for w in words if w not in self]

    def similar(self, positive: list[str], negative: list[str] = (), topn: int = 10) -> tuple[list[dict], list[str]]:
        """Words nearest to sum(positive) - sum(negative). Unknown words are skipped and listed;
        if no positive word is known, raises UnknownWords."""
        known_pos, oov_pos = self.split_known(positive)
        known_neg, oov_neg = self.split_known(negative)
        if not known_pos:
            raise UnknownWords(oov_pos)
        pairs = self.kv.most_similar(positive=known_pos, negative=known_neg, topn=topn)
        return [{"word": w, "score": round(float(s), 6)} for w, s in pairs], oov_pos + oov_neg

    def analogy(self, a: str, b: str, c: str, topn: int = 10) -> list[dict]:
        """a is to b as c is to ...: the words nearest to b - a + c."""
        words = [normalize_word(w) for w in (a, b, c)]
        oov = unique(w for w in words if w not in self)
        if oov:
            raise UnknownWords(oov)
        results, _ = self.similar([words[1], words[2]], [words[0]], topn)
        return results

    def similarity(self, pairs: list[tuple[str, str]]) -> tuple[list[dict], list[str]]:
        """Cosine similarity of each pair; a pair with an unknown word scores None."""
        results, oov = [], []
        for a, b in pairs:
            wa, wb = normalize_word(a), normalize_word(b)
            missing = [w for w in (wa, wb) if w not in self]
            oov.extend(missing)
            score = None if missing else round(float(self.kv.similarity(wa, wb)), 6)
            results.append({"a": a, "b": b, "score": score})
        return results, unique(oov)

    def text_vector(self, text: str, field: str) -> tuple[np.ndarray, list[str]]:
        """Unit-length mean of the text's known word vectors, and the text's unknown words."""
        tokens = tokenize(text)
        known = [t for t in tokens if t in self]  # repeated words weigh more, as in the corpus
        oov = unique(t for t in tokens if t not in self)
        if not known:
            raise NoKnownWords(field, oov)
        mean = np.mean([self.kv.get_vector(t, norm=True) for t in known], axis=0)
        return mean / (np.linalg.norm(mean) or 1.0), oov

    def text_similarity(self, a: str, b: str) -> dict:
        (va, oov_a), (vb, oov_b) = self.text_vector(a, "a"), self.text_vector(b, "b")
        return {"score": round(float(np.dot(va, vb)), 6), "oov": {"a": oov_a, "b": oov_b}}

    def cluster(self, text: str, field: str = "text", nearest: int = 3) -> dict:
        """The cluster a text falls in, its distance to the centroid, and the nearest corpus documents."""
        vector, oov = self.text_vector(text, field)
        return {**self.cluster_vector(vector, nearest), "oov": oov}

    def cluster_vector(self, vector: np.ndarray, nearest: int = 3) -> dict:
        centroid_scores = self.artifact.centroids @ vector
        cluster = int(np.argmax(centroid_scores))
        doc_scores = self.artifact.doc_vectors @ vector
        best = np.argsort(-doc_scores, kind="stable")[:nearest]
        documents = self.artifact.documents
        return {
            "cluster": cluster,
            "distance": round(float(1.0 - centroid_scores[cluster]), 6),  # cosine distance
            "nearest": [{"id": int(i), "title": documents[i]["title"], "snippet": documents[i]["snippet"],
                         "cluster": documents[i]["cluster"], "score": round(float(doc_scores[i]), 6)}
                        for i in best],
        }

    def warm_up(self) -> None:
        """One real query of each kind, so the first user request does not pay for lazy set-up."""
        first = self.kv.index_to_key[0]
        self.similar([first], topn=1)
        self.cluster_vector(self.kv.get_vector(first, norm=True))
