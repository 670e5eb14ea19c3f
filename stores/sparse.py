"""A BM25-style sparse lexical encoder: hashed terms, term-frequency weights; IDF is Qdrant's.

Terms are lower-cased, NFKC-normalised runs of letters and digits, without English stop
words, lightly stemmed (plurals, -ing, -ed, -ly, a final -e). Each term's index is a hash of
its text (blake2b, 31 bits), so the same word has the same index in every process and in every
collection, whatever was ingested before: no vocabulary to build or keep. A document's value
for a term is BM25's saturated term frequency; a query's is 1. Qdrant multiplies by the
inverse document frequency of its collection (`Modifier.IDF`) at search time.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import Counter

from qdrant_client import models

# Bump when terms or weights change: collections built by another version are stale.
SPARSE_VERSION = "bm25-hash-v1"
K1 = 1.2
B = 0.75
# Typical terms per chunk of ~220 word pieces after stop words go; BM25's "average length".
AVERAGE_TERMS = 110.0
_TERM = re.compile(r"[^\W_]+")
_LONGEST_TERM = 40
_STOP_WORDS = """a about above after again against all am an and any are as at be because been
    before
    being below between both but by can could did do does doing down during each few for from
    further had has have having he her here hers herself him himself his how i if in into is it
    its itself just me more most my myself no nor not now of off on once only or other our ours
    ourselves out over own same she should so some such than that the their theirs them
    themselves then there these they this those through to too under until up very was we were
    what when where which while who whom why will with would you your yours yourself
    yourselves"""
STOP_WORDS = frozenset(_STOP_WORDS.split())


def stem(term: str) -> str:
    """A light suffix stripper: enough for `keys`/`key`, `rotating`/`rotated`/`rotate`."""
    if len(term) > 4 and term.endswith("ies"):
        return term[:-3] + "y"
    if len(term) > 4 and term.endswith(("sses", "xes", "ches", "shes", "zes")):
        term = term[:-2]
    elif len(term) > 3 and term.endswith("s") and not term.endswith(("ss", "us", "is")):
        term = term[:-1]
    for suffix, shortest in (("ing", 6), ("ed", 5), ("ly", 6)):
        if len(term) >= shortest and term.endswith(suffix):
            term = term[: -len(suffix)]
            break
    if len(term) >= 5 and term.endswith("e"):
        term = term[:-1]
    return term


def terms(text: str) -> list[str]:
    """The index terms of `text`, in order, repeats kept."""
    normal = unicodedata.normalize("NFKC", text).lower()
    out = []
    for match in _TERM.finditer(normal):
        word = match.group()
        if word in STOP_WORDS or len(word) > _LONGEST_TERM:
            continue
        out.append(stem(word))
    return out


def term_index(term: str) -> int:
    """The sparse-vector index of a term: stable across processes and collections."""
    digest = hashlib.blake2b(term.encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big") & 0x7FFFFFFF


def _vector(weights: dict[int, float]) -> models.SparseVector:
    indices = sorted(weights)
    return models.SparseVector(indices=indices, values=[weights[i] for i in indices])


def document_vector(text: str) -> models.SparseVector:
    """The sparse vector stored with a chunk: BM25 term-frequency weights."""
    counts = Counter(terms(text))
    length = sum(counts.values())
    norm = K1 * (1 - B + B * length / AVERAGE_TERMS)
    weights: dict[int, float] = {}
    for term, tf in counts.items():
        index = term_index(term)
        weights[index] = weights.get(index, 0.0) + tf * (K1 + 1) / (tf + norm)
    return _vector(weights)


def query_vector(text: str) -> models.SparseVector:
    """The sparse vector of a query: 1 per distinct term (Qdrant adds the IDF)."""
    return _vector({term_index(term): 1.0 for term in set(terms(text))})
